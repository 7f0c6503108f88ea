"""Properties (``proxy_get_property``): Envoy's attribute tree, and how values are encoded.

Envoy walks a NUL-joined path (``context.cc`` ``getProperty``): the first segment names a
top-level attribute, later segments index maps by key, messages by field name and lists by
decimal index; anything else is NOT_FOUND. A top-level name Envoy does not know is looked up as
filter state ``wasm.<name>`` (what ``proxy_set_property`` wrote). Values are encoded as Envoy's
``serializeValue`` does:

    str, bytes          the bytes (str as UTF-8)
    int                 8 bytes little-endian (int64/uint64; timestamps are int64 nanoseconds)
    float               8 bytes little-endian IEEE double
    bool                1 byte
    message             the serialized protobuf (:class:`._proto.Message`)
    mapping, list       the pairs format (a list has its items as keys and empty values)

What the host derives per stream: ``source``/``destination`` (``address``, ``port``),
``connection`` (``id``, ``mtls``, ``requested_server_name``), ``connection_id``, ``request``
(``path``, ``url_path``, ``host``, ``scheme``, ``method``, ``headers``, ``referer``, ``useragent``,
``id``, ``query``, ``protocol``, ``time``, ``size``; the header-derived ones only while the
request headers are reachable, as in Envoy), ``response`` (``code``, ``code_details``, ``headers``,
``trailers``, ``grpc_status``, ``size``), ``filter_state``, and per VM ``plugin_name``,
``plugin_root_id``, ``plugin_vm_id``, ``node``. Everything else (``upstream``, ``xds``,
``cluster_name``, ``route_name``, ``metadata``, ``listener_direction``...) comes from the
``properties`` the test gives the host or the stream, which also override derived values.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._abi import Status
from ..wire import encode_pairs, to_bytes, to_str
from ._proto import Message

__all__ = ["encode_value", "lookup", "merge"]

MISSING: Any = object()


def encode_value(value: Any) -> bytes:
    """A property value in Envoy's encoding (see the module docstring)."""
    if isinstance(value, Message):
        return value.serialized
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return to_bytes(value)
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return value.to_bytes(8, "little", signed=value < 0)
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, Mapping):
        return _pairs([(encode_value(k), encode_value(v)) for k, v in value.items()])
    if isinstance(value, Sequence):
        return _pairs([(encode_value(v), b"") for v in value])
    raise TypeError(f"a property cannot hold {type(value).__name__}")


def _pairs(pairs: list[tuple[bytes, bytes]]) -> bytes:
    # Envoy serializes whatever the map holds; the SDK-side limits do not apply here.
    try:
        return encode_pairs(pairs)
    except ValueError:
        return _encode_unlimited(pairs)


def _encode_unlimited(pairs: list[tuple[bytes, bytes]]) -> bytes:
    sizes = [len(pairs).to_bytes(4, "little")]
    data = []
    for key, value in pairs:
        sizes.append(struct.pack("<II", len(key), len(value)))
        data += (key, b"\0", value, b"\0")
    return b"".join(sizes) + b"".join(data)


def merge(derived: Any, override: Any) -> Any:
    """``override`` on top of ``derived``: mappings merge key by key, anything else replaces."""
    if override is MISSING:
        return derived
    if isinstance(derived, Mapping) and isinstance(override, Mapping):
        out = dict(derived)
        for key, value in override.items():
            out[key] = merge(out.get(key, MISSING), value)
        return out
    return override


def lookup(path: bytes, top: Callable[[str], Any]) -> tuple[Status, bytes]:
    """Walk ``path`` (NUL-joined segments) from ``top(first segment)``; (status, encoded value).

    ``top`` answers a top-level attribute or MISSING. As in Envoy, a trailing NUL adds no segment
    and an empty path is SERIALIZATION_FAILURE (Envoy serializes an empty value).
    """
    if not path:
        return Status.SERIALIZATION_FAILURE, b""
    segments = path.split(b"\0")
    if segments[-1] == b"" and len(segments) > 1:
        segments.pop()
    value = top(to_str(segments[0]))
    if value is MISSING or value is None:
        return Status.NOT_FOUND, b""
    for raw in segments[1:]:
        segment = to_str(raw)
        if isinstance(value, Message):
            value = value.fields.get(segment, MISSING)
        elif isinstance(value, Mapping):
            value = value.get(segment, MISSING)
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
            try:
                index = int(segment)
            except ValueError:
                return Status.NOT_FOUND, b""
            value = value[index] if 0 <= index < len(value) else MISSING
        else:
            return Status.NOT_FOUND, b""
        if value is MISSING or value is None:
            return Status.NOT_FOUND, b""
    try:
        return Status.OK, encode_value(value)
    except TypeError:
        return Status.SERIALIZATION_FAILURE, b""
