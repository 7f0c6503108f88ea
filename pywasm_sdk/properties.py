"""Properties: what the proxy knows about the request, the connection and the plugin.

A path is a tuple of segments, e.g. ``("source", "address")`` or ``("request", "headers",
"x-id")``. Envoy encodes values by type: strings as their bytes, integers as 8 little-endian
bytes, booleans as one byte, durations and timestamps as nanoseconds, maps and lists in the
pairs format (a list uses only the keys). The typed getters decode those; the helpers below
name the attributes plugins use most. Every getter returns None when the proxy has no such
property in the current callback (stream attributes exist only in that stream's callbacks).
"""

from __future__ import annotations

from . import hostcalls
from .wire import decode_pairs, encode_path, to_bytes, to_str

PropertyPath = str | bytes | tuple[str | bytes, ...] | list[str | bytes]


def get_property(path: PropertyPath) -> bytes | None:
    """The raw value of a property, or None."""
    return hostcalls.get_property(encode_path(path))


def get_property_str(path: PropertyPath) -> str | None:
    """A string property decoded as text (bytes that are not UTF-8 survive as surrogates)."""
    value = get_property(path)
    return None if value is None else to_str(value)


def get_property_int(path: PropertyPath) -> int | None:
    """An integer property (Envoy: 8 bytes, little-endian, signed)."""
    value = get_property(path)
    if value is None:
        return None
    if len(value) != 8:
        raise ValueError(f"property {path!r} is not an integer ({len(value)} bytes)")
    return int.from_bytes(value, "little", signed=True)


def get_property_bool(path: PropertyPath) -> bool | None:
    """A boolean property (one byte)."""
    value = get_property(path)
    return None if value is None else value not in (b"", b"\0")


def get_property_map(path: PropertyPath) -> dict[str, str] | None:
    """A map property, e.g. ``("request", "headers")``; repeated keys keep their last value."""
    value = get_property(path)
    return None if value is None else {to_str(k): to_str(v) for k, v in decode_pairs(value)}


def get_property_list(path: PropertyPath) -> list[str] | None:
    """A list property (its items are the keys of the pairs format)."""
    value = get_property(path)
    return None if value is None else [to_str(k) for k, _ in decode_pairs(value)]


def set_property(name: str | bytes | tuple[str | bytes], value: str | bytes) -> None:
    """Set a property for later filters and access logs (Envoy: filter state ``wasm.<name>``,
    readable back with ``get_property(name)``). One segment: Envoy stores it under one key."""
    path = encode_path(name)
    if b"\0" in path:
        raise ValueError(f"set_property takes one name, not a path of segments: {name!r}")
    hostcalls.set_property(path, to_bytes(value))


# -- the attributes plugins use most (Envoy's attribute names) -------------------------------

def source_address() -> str | None:
    """The downstream peer, "ip:port" (IPv6 as "[::ffff:10.0.0.1]:8080")."""
    return get_property_str(("source", "address"))


def source_port() -> int | None:
    return get_property_int(("source", "port"))


def destination_address() -> str | None:
    """The local address the connection arrived at, "ip:port"."""
    return get_property_str(("destination", "address"))


def destination_port() -> int | None:
    return get_property_int(("destination", "port"))


def request_path() -> str | None:
    return get_property_str(("request", "path"))


def request_method() -> str | None:
    return get_property_str(("request", "method"))


def request_headers() -> dict[str, str] | None:
    return get_property_map(("request", "headers"))


def connection_id() -> int | None:
    """Envoy's id of the downstream connection."""
    value = get_property(("connection", "id"))
    return None if value is None else int.from_bytes(value, "little")


def connection_mtls() -> bool | None:
    """Whether the downstream connection used mutual TLS."""
    return get_property_bool(("connection", "mtls"))


def upstream_address() -> str | None:
    """The upstream host the request or connection went to, "ip:port"."""
    return get_property_str(("upstream", "address"))


def plugin_name() -> str | None:
    return get_property_str(("plugin_name",))


def plugin_root_id() -> str | None:
    return get_property_str(("plugin_root_id",))


def plugin_vm_id() -> str | None:
    return get_property_str(("plugin_vm_id",))


def node_id() -> str | None:
    """The proxy's node id (Istio: the sidecar's id; Envoy 1.40: ``xds.node.id``)."""
    return get_property_str(("xds", "node", "id"))


def cluster_name() -> str | None:
    """The upstream cluster of the current route (Envoy 1.40: ``xds.cluster_name``)."""
    return get_property_str(("xds", "cluster_name"))


def route_name() -> str | None:
    """The name of the current route (Envoy 1.40: ``xds.route_name``)."""
    return get_property_str(("xds", "route_name"))
