"""examples/tcp_egress in the real Envoy: connections from different loopback sources reach
the cluster their address selects."""

from __future__ import annotations

import json
import socket

import pytest

from pywasm_sdk.tooling import envoy as E

from .conftest import EXAMPLES

pytestmark = pytest.mark.envoy


def connect_from(source_ip: str, port: int) -> bytes:
    """Open a TCP connection bound to source_ip, say hello, return what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source_ip, 0)) as conn:
        conn.sendall(b"ping\n")
        received = b""
        while b"ping" not in received:
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
        return received


@pytest.fixture
def routers():
    servers = {name: E.TcpServer(banner=f"{name}\n".encode()).start()
               for name in ("egress-router1", "egress-router2", "c0", "c1", "c2", "passthrough")}
    yield servers
    for server in servers.values():
        server.stop()


def start_envoy(wasm, config: str, routers):
    port = E.free_port()
    bootstrap = E.tcp_bootstrap(wasm_path=wasm, plugin_config=config, listener_port=port,
                                admin_port=E.free_port(),
                                clusters={name: s.address for name, s in routers.items()},
                                default_cluster="passthrough")
    return E.Envoy(bootstrap), port


@pytest.mark.parametrize("config,expected", [
    ("", {"127.0.0.2": "egress-router1", "127.0.0.3": "egress-router2", "127.0.0.10": "egress-router1"}),
    (json.dumps({"egress_clusters": ["c0", "c1", "c2"]}),
     {"127.0.0.3": "c0", "127.0.0.4": "c1", "127.0.0.5": "c2", "127.0.0.6": "c0"}),
], ids=["default", "configured"])
def test_connections_are_routed_by_source_address(pywasm_build, routers, config, expected):
    wasm = pywasm_build(EXAMPLES / "tcp_egress")
    envoy, port = start_envoy(wasm, config, routers)
    with envoy:
        for source, cluster in expected.items():
            reply = connect_from(source, port)
            assert reply.startswith(f"{cluster}\n".encode()), (source, reply)
            assert b"ping" in reply  # the data went through tcp_proxy and was echoed
            envoy.wait_for_log(rf"source {source}:\d+ -> {cluster}")
        served = {name: [p[0] for p in s.peers] for name, s in routers.items() if s.peers}
        assert set(served) == set(expected.values())


def test_bad_configuration_is_rejected(pywasm_build, routers):
    envoy, _ = start_envoy(pywasm_build(EXAMPLES / "tcp_egress"), '{"egress_clusters": []}', routers)
    with pytest.raises(E.EnvoyError):
        envoy.start()
    assert "configuration rejected: expected {\"egress_clusters\"" in envoy.log_text()


@pytest.mark.parametrize("config", ["", json.dumps({"egress_clusters": ["c0", "c1", "c2"]})],
                         ids=["default", "configured"])
def test_routing_decisions_agree_native_wasm_and_envoy(pywasm_build, routers, config):
    """One scenario three ways: the plugin's Python natively, its .wasm under the mock host, and
    the same .wasm in Envoy choose the same cluster for each source address."""
    from pywasm_sdk.testing import MockHost

    sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.7"]
    wasm = pywasm_build(EXAMPLES / "tcp_egress")
    decided = {}
    for name, make in (("native", lambda: MockHost.from_plugin(EXAMPLES / "tcp_egress", plugin_config=config)),
                       ("wasm", lambda: MockHost.from_wasm(wasm, plugin_config=config))):
        with make() as host:
            decisions = []
            for source in sources:
                conn = host.tcp_connection(source=f"{source}:40000", destination="127.0.0.1:443")
                conn.connect()
                decisions.append(conn.filter_state.get("envoy.tcp_proxy.cluster"))
            decided[name] = decisions
    envoy, port = start_envoy(wasm, config, routers)
    with envoy:
        decided["envoy"] = [connect_from(source, port).split(b"\n", 1)[0].decode() for source in sources]
    assert decided["native"] == decided["wasm"] == decided["envoy"], decided
