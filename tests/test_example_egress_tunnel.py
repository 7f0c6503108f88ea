"""examples/egress_tunnel under the mock host, natively and as the built .wasm (they must agree):
which filter state each connection gets. The real-Envoy side, with CONNECT proxies on loopback,
is tests/test_e2e_egress_tunnel.py."""

from __future__ import annotations

import json

import pytest

from pywasm_sdk.testing import LogLevel

from .conftest import EXAMPLES

EXAMPLE = EXAMPLES / "egress_tunnel"
CLUSTER, NO_TUNNEL = "envoy.tcp_proxy.cluster", "envoy.tcp_proxy.disable_tunneling"

ROUTES = {"routes": [
    {"destination": "10.1.0.0/16", "port": [443, 8443], "tunnel": "proxy-a"},
    {"source": "10.244.3.0/24", "tunnel": "proxy-b"},
    {"destination": "10.1.2.3", "direct": "legacy"},
    {"destination": "2001:db8::/32", "tunnel": "proxy-v6"},
], "default": {"direct": True}}


def connect(host, source: str, destination: str) -> dict:
    conn = host.tcp_connection(source=source, destination=destination)
    conn.connect()
    return dict(conn.filter_state)


@pytest.mark.parametrize("source, destination, state, says", [
    ("10.244.1.5:40000", "10.1.9.9:443", {CLUSTER: "proxy-a"}, "tunnel via proxy-a"),
    ("10.244.1.5:40000", "10.1.9.9:8443", {CLUSTER: "proxy-a"}, "tunnel via proxy-a"),
    ("10.244.3.7:40000", "10.1.9.9:80", {CLUSTER: "proxy-b"}, "tunnel via proxy-b"),    # by source
    ("10.244.1.5:40000", "10.1.2.3:80", {CLUSTER: "legacy", NO_TUNNEL: "true"}, "direct to legacy"),
    ("10.244.1.5:40000", "10.1.2.3:443", {CLUSTER: "proxy-a"}, "tunnel via proxy-a"),   # first match wins
    ("10.244.1.5:40000", "192.0.2.1:443", {NO_TUNNEL: "true"}, "direct"),               # the default
    ("[2001:db8::5]:40000", "[2001:db8::1]:443", {CLUSTER: "proxy-v6"}, "tunnel via proxy-v6"),
], ids=["destination", "destination-port", "source", "direct-cluster", "order", "default", "ipv6"])
def test_each_connection_gets_its_route(mock_host, host_mode, source, destination, state, says):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=json.dumps(ROUTES))
    assert host.logs.find("egress_tunnel: 4 route(s), otherwise direct", level=LogLevel.INFO)
    assert connect(host, source, destination) == state
    assert host.logs.find(f"{source} -> {destination}: {says}", level=LogLevel.INFO)


def test_the_default_can_be_a_tunnel(mock_host, host_mode):
    routes = {"routes": [{"destination": "10.0.0.0/8", "direct": True}], "default": {"tunnel": "proxy-a"}}
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=json.dumps(routes))
    assert connect(host, "10.244.1.5:40000", "93.184.216.34:443") == {CLUSTER: "proxy-a"}
    assert connect(host, "10.244.1.5:40000", "10.9.9.9:443") == {NO_TUNNEL: "true"}


def test_an_address_it_cannot_read_gets_the_default(mock_host, host_mode):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=json.dumps(ROUTES))
    conn = host.tcp_connection(source="10.244.3.7:40000", destination="10.1.9.9:443",
                               properties={"destination": {"address": "envoy://internal/"}})
    conn.connect()
    assert dict(conn.filter_state) == {CLUSTER: "proxy-b"}  # the source still matches
    conn = host.tcp_connection(source="10.244.1.5:40000", destination="10.1.9.9:443",
                               properties={"destination": {"address": "envoy://internal/"}})
    conn.connect()
    assert dict(conn.filter_state) == {NO_TUNNEL: "true"}


def test_the_bytes_are_left_alone(mock_host, host_mode):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=json.dumps(ROUTES))
    conn = host.tcp_connection(source="10.244.1.5:40000", destination="10.1.9.9:443")
    conn.connect()
    conn.send_downstream(b"\x16\x03\x01 client hello")
    conn.send_upstream(b"\x16\x03\x03 server hello")
    assert conn.to_upstream == b"\x16\x03\x01 client hello"
    assert conn.to_downstream == b"\x16\x03\x03 server hello"


BAD = [
    ("", "no configuration: expected"),
    ("routes", "the configuration is not JSON"),
    ('{"routes": {}}', "routes: expected a list of routes, got {}"),
    ('{"routes": [], "fallback": {}}', "fallback: unknown field (known: routes, default)"),
    ('{"routes": [7]}', "routes[0]: expected an object, got 7"),
    ('{"routes": [{"tunnel": "p"}]}', 'routes[0]: matches everything; give "destination", "port" or "source"'),
    ('{"routes": [{"destination": "10.0.0.1"}]}', 'routes[0]: give either "tunnel": "<proxy cluster>" or "direct": true'),
    ('{"routes": [{"destination": "10.0.0.1", "tunnel": "p", "direct": true}]}', "routes[0]: give either"),
    ('{"routes": [{"destination": "10.0.0.300", "tunnel": "p"}]}',
     "routes[0].destination: '10.0.0.300' does not appear to be an IPv4 or IPv6 network"),
    ('{"routes": [{"destination": "10.0.0.1/8", "tunnel": "p"}]}', "routes[0].destination: 10.0.0.1/8 has host bits set"),
    ('{"routes": [{"source": 10, "tunnel": "p"}]}', "routes[0].source: expected an address or network as a string, got 10"),
    ('{"routes": [{"port": 70000, "tunnel": "p"}]}', "routes[0].port: expected a port (1-65535) or a list of ports, got 70000"),
    ('{"routes": [{"port": [], "tunnel": "p"}]}', "routes[0].port: expected a port"),
    ('{"routes": [{"port": 443, "tunnel": ""}]}', 'routes[0].tunnel: expected a cluster name, got ""'),
    ('{"routes": [{"port": 443, "direct": false}]}', "routes[0].direct: expected true or a cluster name, got false"),
    ('{"routes": [{"port": 443, "via": "p"}]}', "routes[0].via: unknown field"),
    ('{"routes": [], "default": "direct"}', 'default: expected {"tunnel": "<proxy cluster>"} or {"direct": true}'),
    ('{"routes": [], "default": {}}', 'default: give either "tunnel"'),
]


@pytest.mark.parametrize("raw, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_wrong_configuration_is_rejected_naming_the_field(mock_host, raw, message):
    host = mock_host(EXAMPLE, plugin_config=raw)
    assert not host.configured
    assert host.logs.find(f"configuration rejected: {message}", level=LogLevel.ERROR), host.logs.text()


def test_a_wrong_configuration_is_rejected_in_wasm_too(mock_host):
    host = mock_host(EXAMPLE, mode="wasm", plugin_config='{"routes": [{"port": 0, "tunnel": "p"}]}')
    assert not host.configured
    assert host.logs.find("configuration rejected: routes[0].port: expected a port (1-65535)")
