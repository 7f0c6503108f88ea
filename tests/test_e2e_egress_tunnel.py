"""examples/egress_tunnel in the real Envoy, served the way its README says: ``pywasm run
examples/egress_tunnel --envoy-config examples/egress_tunnel/envoy.yaml`` with the helper
services of ``examples/egress_tunnel/helpers.py``, on free ports.

The CONNECT proxies are real servers on loopback: a tunnelled connection shows up at the chosen
proxy as ``CONNECT <destination>``, a direct one at no proxy, and the bytes arrive intact both
ways. The failures: a proxy that is down, a proxy that refuses the destination (403), a
destination the proxy cannot reach (502), a route naming a cluster Envoy does not have.
"""

from __future__ import annotations

import importlib.util
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
from .example_envoy import example_bootstrap, plugin_configs, plugin_json, set_plugin_json

pytestmark = pytest.mark.envoy

EXAMPLE = EXAMPLES / "egress_tunnel"
#: destinations added for the failure cases, on the listener's port like the example's three
PROXY_DOWN, REFUSED, UNREACHABLE, NO_CLUSTER = "127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"


def load_helpers():
    spec = importlib.util.spec_from_file_location("egress_tunnel_helpers", EXAMPLE / "helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Served:
    """What the fixture runs: the helpers, ``pywasm run`` in a thread, and what it printed."""

    def __init__(self, helpers, port: int, admin_port: int) -> None:
        self.helpers, self.port, self.admin_port = helpers, port, admin_port
        self.proxies = helpers.proxies
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


@pytest.fixture(scope="module")
def served(pywasm_build, tmp_path_factory):
    wasm = pywasm_build(EXAMPLE)  # the build `pywasm run` below finds in the cache
    config, ports = example_bootstrap(EXAMPLE / "envoy.yaml", wasm)
    port = ports[10000]
    plugin = plugin_configs(config)[0]
    routes = plugin_json(plugin)
    for route in routes["routes"]:
        if "port" in route:
            route["port"] = ports[route["port"]]
    routes["routes"] += [{"destination": PROXY_DOWN, "tunnel": "proxy-down"},
                         {"destination": REFUSED, "tunnel": "proxy-a"},
                         {"destination": UNREACHABLE, "tunnel": "proxy-a"},
                         {"destination": NO_CLUSTER, "tunnel": "no-such-cluster"}]
    set_plugin_json(plugin, routes)
    listener = config["static_resources"]["listeners"][0]
    listener["additional_addresses"] += [{"address": {"socket_address": {"address": ip, "port_value": port}}}
                                         for ip in (PROXY_DOWN, REFUSED, UNREACHABLE, NO_CLUSTER)]
    config["static_resources"]["clusters"].append(
        {"name": "proxy-down", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
            "cluster_name": "proxy-down", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": E.free_port()}}}}]}]}})
    path = tmp_path_factory.mktemp("egress_tunnel") / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    helpers = load_helpers().Helpers(listen_port=port, direct_port=ports[10020],
                                     proxy_ports={"proxy-a": ports[3128], "proxy-b": ports[3129]}).start()
    helpers.proxies["proxy-a"].routes[f"{UNREACHABLE}:{port}"] = ("127.0.0.1", E.free_port())
    state = Served(helpers, port, ports[9901])

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
        helpers.stop()
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
    before, direct_before = tunnels(served), len(served.helpers.direct.peers)
    received = exchange(served, "127.0.0.2", destination, b"secret\n")
    assert received == b""  # closed: nothing from anywhere
    assert len(served.helpers.direct.peers) == direct_before  # and nothing went out directly
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
    config, _ = example_bootstrap(EXAMPLE / "envoy.yaml", pywasm_build(EXAMPLE))
    set_plugin_json(plugin_configs(config)[0], {"routes": [{"destination": "127.0.0.300", "tunnel": "proxy-a"}]})
    with pytest.raises(E.EnvoyError) as failed:
        E.validate_config(config)  # compiles the module and runs on_configure, as a start would
    assert ("configuration rejected: routes[0].destination: '127.0.0.300' does not appear to be an "
            "IPv4 or IPv6 network") in str(failed.value)
