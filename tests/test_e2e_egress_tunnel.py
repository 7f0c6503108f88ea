"""examples/egress_tunnel in the real Envoy, served the way its README says: ``pywasm run
examples/egress_tunnel --envoy-config examples/egress_tunnel/envoy.yaml`` with the services of
``examples/egress_tunnel/services.py``, on free ports.

The CONNECT proxies are real servers on loopback: a tunnelled connection shows up at the chosen
proxy as ``CONNECT <destination>``, a direct one at no proxy, and the bytes arrive intact both
ways. The failures: a proxy that is down, a proxy that refuses the destination (403), a
destination the proxy cannot reach (502), a route naming a cluster Envoy does not have.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

import pytest
import yaml

from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling.run import run

from .conftest import EXAMPLES
from .test_examples_helpers import example_services, local_envoy_config, services_script, wasm_plugin_configs

pytestmark = pytest.mark.envoy

EXAMPLE = EXAMPLES / "egress_tunnel"
#: destinations added for the failure cases, on the listener's port like the example's three
PROXY_DOWN, REFUSED, UNREACHABLE, NO_CLUSTER = "127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"


class Served:
    """What the fixture runs: the services, ``pywasm run`` in a thread, and what it printed."""

    def __init__(self, services, port: int, admin_port: int) -> None:
        self.services, self.port, self.admin_port = services, port, admin_port
        self.proxies = services.proxies
        self.output: list[str] = []
        self.stop = threading.Event()
        self.status: int | None = None

    def wait_for_output(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.output):
                if match := re.search(pattern, line):
                    return match
            if time.monotonic() > deadline:
                raise AssertionError(f"pywasm run never printed {pattern!r}; it printed:\n" + "\n".join(self.output))
            time.sleep(0.05)


def example_config(wasm, port: int, admin_port: int, ports: dict[str, int]) -> dict:
    """The example's envoy.yaml on the test's ports (``ports``: the clusters')."""
    config = local_envoy_config("egress_tunnel", wasm, listeners={"egress": port}, admin_port=admin_port,
                                clusters={name: ("127.0.0.1", p) for name, p in ports.items()})
    plugin = wasm_plugin_configs(config)[0]
    routes = json.loads(plugin["configuration"]["value"])
    for route in routes["routes"]:
        if route.get("port") == 10000:  # the listener's port in the file
            route["port"] = port
    plugin["configuration"] = E.any_value(json.dumps(routes))
    return config


@pytest.fixture(scope="module")
def served(pywasm_build, tmp_path_factory):
    wasm = pywasm_build(EXAMPLE)  # the build `pywasm run` below finds in the cache
    port, admin_port = E.free_port(), E.free_port()
    ports = {"direct": E.free_port(), "proxy-a": E.free_port(), "proxy-b": E.free_port()}
    config = example_config(wasm, port, admin_port, ports)
    plugin = wasm_plugin_configs(config)[0]
    routes = json.loads(plugin["configuration"]["value"])
    routes["routes"] += [{"destination": PROXY_DOWN, "tunnel": "proxy-down"},
                         {"destination": REFUSED, "tunnel": "proxy-a"},
                         {"destination": UNREACHABLE, "tunnel": "proxy-a"},
                         {"destination": NO_CLUSTER, "tunnel": "no-such-cluster"}]
    plugin["configuration"] = E.any_value(json.dumps(routes))
    listener = config["static_resources"]["listeners"][0]
    listener["additional_addresses"] += [{"address": {"socket_address": {"address": ip, "port_value": port}}}
                                         for ip in (PROXY_DOWN, REFUSED, UNREACHABLE, NO_CLUSTER)]
    config["static_resources"]["clusters"].append(
        {"name": "proxy-down", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": "proxy-down", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": E.free_port()}}}}]}]}})
    path = tmp_path_factory.mktemp("egress_tunnel") / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    services = example_services("egress_tunnel").Services(
        listen_port=port, direct_port=ports["direct"],
        proxy_ports={"proxy-a": ports["proxy-a"], "proxy-b": ports["proxy-b"]}).start()
    services.proxies["proxy-a"].routes[f"{UNREACHABLE}:{port}"] = ("127.0.0.1", E.free_port())
    state = Served(services, port, admin_port)

    def serve() -> None:
        state.status = run(str(EXAMPLE), envoy_config=path, out=state.output.append, stop=state.stop)

    thread = threading.Thread(target=serve, name="pywasm-run")
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("plugin log") for line in state.output):
            assert thread.is_alive(), f"pywasm run ended with status {state.status}:\n" + "\n".join(state.output)
            assert time.monotonic() < deadline, "pywasm run did not start Envoy within 240 s"
            time.sleep(0.1)
        yield state
    finally:
        state.stop.set()
        thread.join(60)
        services.stop()
    assert state.status == 0


def exchange(served: Served, source: str, destination: str, payload: bytes) -> bytes:
    """Connect from ``source`` to ``destination``:port, send ``payload``, read until the echo of
    all of it came back (or the connection closed); return everything received."""
    with socket.create_connection((destination, served.port), timeout=10, source_address=(source, 0)) as conn:
        conn.sendall(payload)
        received = bytearray()
        while not received.endswith(payload):
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return bytes(received)


def tunnels(served: Served) -> dict[str, int]:
    return {name: len(proxy.tunnels) for name, proxy in served.proxies.items()}


@pytest.mark.parametrize("source, destination, proxy", [
    ("127.0.0.2", "127.0.0.10", "proxy-a"),     # by destination
    ("127.0.0.3", "127.0.0.12", "proxy-b"),     # by source
    ("127.0.0.2", "127.0.0.11", "proxy-b"),     # by destination and port
], ids=["destination", "source", "destination-port"])
def test_tunnelled_connections_arrive_as_connect_at_the_chosen_proxy(served, source, destination, proxy):
    payload = os.urandom(256 * 1024)  # bigger than any one read or write on the way
    before = tunnels(served)
    authority = f"{destination}:{served.port}"
    received = exchange(served, source, destination, payload)
    banner = f"hello from {authority}\n".encode()
    assert received == banner + payload  # what the destination sent, intact
    assert {name: n - before[name] for name, n in tunnels(served).items()} == \
        {name: int(name == proxy) for name in before}
    tunnel = served.proxies[proxy].tunnels[-1]
    assert tunnel.request_line == f"CONNECT {authority} HTTP/1.1" and tunnel.status == 200
    assert tunnel.headers["host"] == authority
    assert tunnel.closed.wait(10)
    assert bytes(tunnel.upstream) == payload  # what the client sent, intact
    assert bytes(tunnel.downstream) == banner + payload
    served.wait_for_output(rf"^  \[info\] {source}:\d+ -> {authority}: tunnel via {proxy}$")


def test_other_connections_go_direct_and_reach_no_proxy(served):
    before = tunnels(served)
    payload = os.urandom(64 * 1024)
    received = exchange(served, "127.0.0.2", "127.0.0.12", payload)
    assert received == b"hello from the direct route (no proxy)\n" + payload
    assert tunnels(served) == before
    served.wait_for_output(rf"^  \[info\] 127\.0\.0\.2:\d+ -> 127\.0\.0\.12:{served.port}: direct$")


@pytest.mark.parametrize("destination, proxy, status", [
    (PROXY_DOWN, None, None),            # nothing listens where proxy-down is
    (REFUSED, "proxy-a", 403),           # the proxy does not serve that destination
    (UNREACHABLE, "proxy-a", 502),       # the proxy cannot reach it
    (NO_CLUSTER, None, None),            # tcp_proxy has no such cluster
], ids=["proxy-down", "refused", "unreachable", "no-cluster"])
def test_a_tunnel_that_fails_closes_the_connection_without_data(served, destination, proxy, status):
    before, direct_before = tunnels(served), len(served.services.direct.peers)
    received = exchange(served, "127.0.0.2", destination, b"secret\n")
    assert received == b""  # closed: nothing from anywhere
    assert len(served.services.direct.peers) == direct_before  # and nothing went out directly
    after = tunnels(served)
    if proxy is None:
        assert after == before
    else:
        tunnel = served.proxies[proxy].tunnels[-1]
        assert tunnel.request_line == f"CONNECT {destination}:{served.port} HTTP/1.1"
        assert tunnel.status == status and not tunnel.upstream
    route = "tunnel via " + ("proxy-down" if destination == PROXY_DOWN else
                             "no-such-cluster" if destination == NO_CLUSTER else proxy)
    served.wait_for_output(rf"^  \[info\] 127\.0\.0\.2:\d+ -> {destination}:{served.port}: {route}$")


def test_envoy_counts_the_failed_upstream_connections(served):
    stats = E.parse_stats(E.http_request(served.admin_port, "/stats")[2].decode())
    assert stats["tcp.egress.downstream_cx_total"] >= 8
    assert stats.get("cluster.proxy-down.upstream_cx_connect_fail", 0) >= 1
    assert stats.get("tcp.egress.downstream_cx_no_route", 0) >= 1


def test_a_wrong_configuration_is_rejected_naming_the_field(pywasm_build):
    config = example_config(pywasm_build(EXAMPLE), E.free_port(), E.free_port(),
                            {"direct": E.free_port(), "proxy-a": E.free_port(), "proxy-b": E.free_port()})
    plugin = wasm_plugin_configs(config)[0]
    plugin["configuration"] = E.any_value(json.dumps({"routes": [{"destination": "127.0.0.300", "tunnel": "p"}]}))
    with pytest.raises(E.EnvoyError) as failed:
        E.validate_config(config)  # compiles the module and runs on_configure, as a start would
    assert ("configuration rejected: routes[0].destination: '127.0.0.300' does not appear to be an "
            "IPv4 or IPv6 network") in str(failed.value)


def test_services_script_serves_what_the_readme_says():
    port, direct = E.free_port(), E.free_port()
    proxy_a, proxy_b = E.free_port(), E.free_port()
    with services_script("egress_tunnel", "--listen-port", str(port), "--proxy-a-port", str(proxy_a),
                         "--proxy-b-port", str(proxy_b), "--direct-port", str(direct)) as line:
        assert f"CONNECT proxies proxy-a on 127.0.0.1:{proxy_a}, proxy-b on 127.0.0.1:{proxy_b}" in line
        with socket.create_connection(("127.0.0.1", proxy_b), timeout=10) as conn:
            conn.sendall(f"CONNECT 127.0.0.11:{port} HTTP/1.1\r\n\r\nping\n".encode())
            received = b""
            while not received.endswith(b"ping\n"):
                chunk = conn.recv(4096)
                assert chunk, received
                received += chunk
        assert received == f"HTTP/1.1 200 Connection established\r\n\r\nhello from 127.0.0.11:{port}\nping\n".encode()
        with socket.create_connection(("127.0.0.1", direct), timeout=10) as conn:
            assert conn.recv(4096) == b"hello from the direct route (no proxy)\n"
