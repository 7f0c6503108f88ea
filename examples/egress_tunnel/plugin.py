"""Send outbound TCP connections through an external HTTP CONNECT proxy, chosen per connection.

A network filter placed before ``tcp_proxy``, whose ``tunneling_config`` makes it open each
upstream connection as an HTTP ``CONNECT <destination>`` through its cluster. For each new
connection the plugin looks at the destination and the source and picks, by the first route
that matches:

- ``{"tunnel": "proxy-a"}``: the connection leaves through the proxy of cluster ``proxy-a``
  (Envoy's filter state ``envoy.tcp_proxy.cluster``), tunnelled over CONNECT;
- ``{"direct": true}``: not tunnelled (``envoy.tcp_proxy.disable_tunneling``), to
  ``tcp_proxy``'s own cluster; ``{"direct": "name"}`` to cluster ``name`` instead.

Configuration (JSON; Istio's ``pluginConfig``)::

    {"routes": [
        {"destination": "10.1.0.0/16", "port": 443, "tunnel": "proxy-a"},
        {"source": "10.244.3.0/24", "tunnel": "proxy-b"},
        {"destination": "10.0.0.0/8", "direct": true}],
     "default": {"direct": true}}

``destination`` and ``source`` are an address or a network, ``port`` a destination port or a
list of them; a route needs at least one. Connections no route matches get ``default``
(``{"direct": true}`` when absent). A configuration that is not this shape is rejected with a
message naming the field.
"""

import ipaddress
import json
from typing import Any

from pywasm_sdk import (ConfigurationError, RootContext, StreamContext, log, properties, register,
                        set_envoy_filter_state)

CLUSTER_KEY = "envoy.tcp_proxy.cluster"
DISABLE_TUNNELING_KEY = "envoy.tcp_proxy.disable_tunneling"
_ROUTE_FIELDS = ("destination", "port", "source", "tunnel", "direct")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Egress:
    """Where a connection goes: through ``cluster``'s proxy (tunnel) or straight out (direct,
    to ``cluster`` or, when it is empty, to tcp_proxy's own)."""

    __slots__ = ("tunnel", "cluster")

    def __init__(self, tunnel: bool, cluster: str) -> None:
        self.tunnel, self.cluster = tunnel, cluster

    def __str__(self) -> str:
        if self.tunnel:
            return f"tunnel via {self.cluster}"
        return f"direct to {self.cluster}" if self.cluster else "direct"


class Route:
    __slots__ = ("destinations", "ports", "sources", "action")

    def __init__(self, destinations: Network | None, ports: frozenset[int] | None, sources: Network | None,
                 action: Egress) -> None:
        self.destinations, self.ports, self.sources, self.action = destinations, ports, sources, action

    def matches(self, source: Address | None, destination: Address | None, port: int | None) -> bool:
        if self.destinations is not None and (destination is None or destination not in self.destinations):
            return False
        if self.ports is not None and port not in self.ports:
            return False
        return self.sources is None or (source is not None and source in self.sources)


def _network(where: str, value: Any) -> Network:
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}: expected an address or network as a string, got {json.dumps(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _ports(where: str, value: Any) -> frozenset[int]:
    ports = value if isinstance(value, list) else [value]
    if not ports or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports):
        raise ConfigurationError(f"{where}: expected a port (1-65535) or a list of ports, got {json.dumps(value)}")
    return frozenset(ports)


def _action(where: str, entry: dict[str, Any]) -> Egress:
    tunnel, direct = entry.get("tunnel"), entry.get("direct")
    if (tunnel is None) == (direct is None):
        raise ConfigurationError(f'{where}: give either "tunnel": "<proxy cluster>" or "direct": true')
    if tunnel is not None:
        if not isinstance(tunnel, str) or not tunnel:
            raise ConfigurationError(f"{where}.tunnel: expected a cluster name, got {json.dumps(tunnel)}")
        return Egress(True, tunnel)
    if direct is True:
        return Egress(False, "")
    if not isinstance(direct, str) or not direct:
        raise ConfigurationError(f"{where}.direct: expected true or a cluster name, got {json.dumps(direct)}")
    return Egress(False, direct)


def _route(where: str, entry: Any) -> Route:
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where}: expected an object, got {json.dumps(entry)}")
    unknown = sorted(set(entry) - set(_ROUTE_FIELDS))
    if unknown:
        raise ConfigurationError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(_ROUTE_FIELDS)})")
    if not any(name in entry for name in ("destination", "port", "source")):
        raise ConfigurationError(f'{where}: matches everything; give "destination", "port" or "source" '
                                 '(or use "default")')
    destinations = _network(f"{where}.destination", entry["destination"]) if "destination" in entry else None
    sources = _network(f"{where}.source", entry["source"]) if "source" in entry else None
    ports = _ports(f"{where}.port", entry["port"]) if "port" in entry else None
    return Route(destinations, ports, sources, _action(where, entry))


def parse_config(raw: bytes) -> tuple[list[Route], Egress]:
    """The routes and the default action; ConfigurationError names the field that is wrong."""
    if not raw.strip():
        raise ConfigurationError('no configuration: expected {"routes": [{"destination": ..., "tunnel": ...}]}')
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"the configuration is not JSON: {exc}") from None
    except RecursionError:
        raise ConfigurationError("the configuration's JSON is nested too deeply") from None
    if not isinstance(config, dict):
        raise ConfigurationError(f"the configuration must be a JSON object, not {type(config).__name__}")
    unknown = sorted(set(config) - {"routes", "default"})
    if unknown:
        raise ConfigurationError(f"{unknown[0]}: unknown field (known: routes, default)")
    routes = config.get("routes")
    if not isinstance(routes, list):
        raise ConfigurationError(f"routes: expected a list of routes, got {json.dumps(routes)}")
    parsed = [_route(f"routes[{i}]", entry) for i, entry in enumerate(routes)]
    default = config.get("default", {"direct": True})
    if not isinstance(default, dict) or set(default) - {"tunnel", "direct"}:
        raise ConfigurationError(f'default: expected {{"tunnel": "<proxy cluster>"}} or {{"direct": true}}, '
                                 f"got {json.dumps(default)}")
    return parsed, _action("default", default)


def split_address(address: str | None) -> tuple[Address | None, int | None]:
    """(ip, port) of an "ip:port" or "[ipv6]:port" address; (None, None) when unreadable."""
    if not address:
        return None, None
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
    else:
        host, _, port = address.rpartition(":")
    try:
        return ipaddress.ip_address(host), int(port)
    except ValueError:
        return None, None


class TunnelChoice(StreamContext):
    root: "EgressTunnel"

    def on_new_connection(self) -> None:
        source_text, destination_text = properties.source_address(), properties.destination_address()
        source, _ = split_address(source_text)
        destination, port = split_address(destination_text)
        action = self.root.choose(source, destination, port)
        if action.cluster:
            set_envoy_filter_state(CLUSTER_KEY, action.cluster)
        if not action.tunnel:
            set_envoy_filter_state(DISABLE_TUNNELING_KEY, "true")
        log.info("%s -> %s: %s", source_text, destination_text, action)


class EgressTunnel(RootContext):
    stream_context = TunnelChoice

    def on_configure(self, plugin_config: bytes) -> bool:
        self.routes, self.default = parse_config(plugin_config)
        log.info("egress_tunnel: %d route(s), otherwise %s", len(self.routes), self.default)
        return True

    def choose(self, source: Address | None, destination: Address | None, port: int | None) -> Egress:
        for route in self.routes:
            if route.matches(source, destination, port):
                return route.action
        return self.default


register(EgressTunnel)
