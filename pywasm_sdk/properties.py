"""Properties: what the proxy knows about the request, the connection and the plugin.

A path is a tuple of segments, e.g. ``("source", "address")`` or ``("request", "path")``;
see docs/properties.md for the attributes Envoy offers and how their values are encoded.
"""

from __future__ import annotations

from . import hostcalls
from .wire import encode_path, to_bytes, to_str

PropertyPath = str | bytes | tuple[str | bytes, ...] | list[str | bytes]


def get_property(path: PropertyPath) -> bytes | None:
    """The raw value of a property, or None when the proxy has no such property now.

    Strings come back as their bytes, integers as 8 little-endian bytes, maps and lists in the
    pairs format. Valid in any callback; stream attributes only in that stream's callbacks.
    """
    return hostcalls.get_property(encode_path(path))


def get_property_str(path: PropertyPath) -> str | None:
    """A string property (e.g. ``("source", "address")``) decoded as text, or None."""
    value = get_property(path)
    return None if value is None else to_str(value)


def set_property(path: PropertyPath, value: str | bytes) -> None:
    """Set a property for later filters to read (Envoy stores it as filter state ``wasm.<path>``)."""
    hostcalls.set_property(encode_path(path), to_bytes(value))
