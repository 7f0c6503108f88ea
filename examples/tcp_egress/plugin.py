"""Re-route outbound TCP connections to egress routers by their source address.

The Istio "wasmerang" scenario: a network filter placed before ``tcp_proxy`` reads the source
address of each new connection and sets Envoy's ``envoy.tcp_proxy.cluster`` filter state, so
``tcp_proxy`` connects to the chosen cluster instead of its configured one.

- No configuration: an even last octet goes to ``egress-router1``, an odd one to
  ``egress-router2``.
- ``{"egress_clusters": ["c0", "c1", ...]}``: the connection goes to ``clusters[last_octet % n]``.

IPv4 sources and IPv4-mapped IPv6 sources (``[::ffff:192.168.1.100]:8080``) are routed; any
other address is left to ``tcp_proxy``'s own cluster, with a warning.
"""

import ipaddress
import json

from pywasm_sdk import (ConfigurationError, RootContext, StreamContext, log, properties, register,
                        set_envoy_filter_state)

DEFAULT_CLUSTERS: tuple[str, ...] = ("egress-router1", "egress-router2")


def parse_config(raw: bytes) -> tuple[str, ...]:
    """The egress clusters, in order; ConfigurationError says what is wrong with the JSON."""
    if not raw.strip():
        return DEFAULT_CLUSTERS
    try:
        config = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"the configuration is not JSON: {exc}") from None
    except RecursionError:
        raise ConfigurationError("the configuration's JSON is nested too deeply") from None
    clusters = config.get("egress_clusters") if isinstance(config, dict) else None
    if (not isinstance(clusters, list) or not clusters
            or not all(isinstance(c, str) and c for c in clusters)):
        raise ConfigurationError('expected {"egress_clusters": ["cluster", ...]} with at least one name')
    return tuple(clusters)


def last_octet(address: str) -> int | None:
    """The last octet of an IPv4 (or IPv4-mapped IPv6) "host:port" address, else None."""
    if address.startswith("["):
        host = address[1:address.find("]")]
    else:
        host, _, port = address.rpartition(":")
        if not host or ":" in host or not port.isdigit():
            host = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is None:
            return None
        return int(mapped) & 0xFF
    return int(ip) & 0xFF


class EgressRouting(StreamContext):
    root: "EgressRouter"

    def on_new_connection(self) -> None:
        source = properties.source_address()
        octet = last_octet(source) if source else None
        if octet is None:
            log.warning("source %s is not an IPv4 address: not re-routed", source)
            return
        clusters = self.root.clusters
        cluster = clusters[octet % len(clusters)]
        set_envoy_filter_state("envoy.tcp_proxy.cluster", cluster)
        log.info("source %s -> %s", source, cluster)


class EgressRouter(RootContext):
    stream_context = EgressRouting
    clusters = DEFAULT_CLUSTERS

    def on_configure(self, plugin_config: bytes) -> bool:
        self.clusters = parse_config(plugin_config)
        log.info("tcp_egress: routing to %s", ", ".join(self.clusters))
        return True


register(EgressRouter)
