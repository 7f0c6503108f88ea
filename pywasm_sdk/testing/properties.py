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

Top-level names are Envoy 1.40's: ``request``, ``response``, ``connection``, ``upstream``,
``source``, ``destination``, ``metadata``, ``filter_state``, ``upstream_filter_state``, ``xds``
(which holds ``node``, ``cluster_name``, ``route_name``... ; older Envoys had those at the top)
and the wasm context's ``plugin_name``, ``plugin_root_id``, ``plugin_vm_id``, ``connection_id``.

What the host derives per stream: ``source``/``destination`` (``address``, ``port``),
``connection`` (``id``, ``mtls``, ``requested_server_name``), ``connection_id``, ``request``
(``path``, ``url_path``, ``host``, ``scheme``, ``method``, ``headers``, ``referer``, ``useragent``,
``id``, ``query``, ``protocol``, ``time``, ``size``; the header-derived ones only while the
request headers are reachable, as in Envoy), ``response`` (``code``, ``code_details``, ``headers``,
``trailers``, ``grpc_status``, ``size``), ``filter_state``, ``xds.filter_chain_name`` (and
``xds.route_name``, empty, for HTTP streams); for every
context ``plugin_*`` and ``xds.node``. Everything else (``upstream``, ``xds.cluster_name``,
``xds.route_name``, ``metadata``...) comes from the ``properties`` the test gives the host or the
stream, which also override derived values.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._abi import Status
from ..wire import to_bytes, to_str
from ._proto import Message
from ._state import HeaderMapState, HttpState, StreamCommon, serialize_pairs

__all__ = ["ENVOY_ATTRIBUTES", "MISSING", "encode_value", "lookup", "merge", "stream_attribute"]

#: "no such value" (None is a value a test may give)
MISSING: Any = object()

#: first path segments Envoy 1.40 resolves itself: the CEL stream activation
#: (source/extensions/filters/common/expr/evaluator.cc ACTIVATION_TOKENS) and the wasm context's
#: own (context.cc PROPERTY_TOKENS); any other name is filter state "wasm.<name>"
ENVOY_ATTRIBUTES = frozenset({
    "request", "response", "connection", "upstream", "source", "destination", "metadata",
    "filter_state", "upstream_filter_state", "xds",
    "plugin_name", "plugin_root_id", "plugin_vm_id", "connection_id",
})


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
        return serialize_pairs([(encode_value(k), encode_value(v)) for k, v in value.items()])
    if isinstance(value, Sequence):
        return serialize_pairs([(encode_value(v), b"") for v in value])
    raise TypeError(f"a property cannot hold {type(value).__name__}")


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


# -- what the host derives from a stream ----------------------------------------------------------

def stream_attribute(stream: StreamCommon, name: str) -> Any:
    """The attribute ``name`` Envoy derives from a stream's info, or MISSING."""
    if name in ("source", "destination"):
        peer = stream.source if name == "source" else stream.destination
        return {"address": peer.address, "port": peer.port}
    if name == "connection_id":
        return stream.connection_id
    if name == "connection":
        return {"id": stream.connection_id, "mtls": False, "requested_server_name": ""}
    if name == "filter_state":
        return {key: to_bytes(value) for key, value in stream.filter_state.items()}
    if name == "xds":
        # a routed HTTP stream has a route (unnamed: ""); its cluster comes from the test
        return {"filter_chain_name": "", "route_name": ""} if isinstance(stream, HttpState) \
            else {"filter_chain_name": ""}
    if isinstance(stream, HttpState) and name == "request":
        return _request(stream)
    if isinstance(stream, HttpState) and name == "response":
        return _response(stream)
    return MISSING


def _headers(header_map: HeaderMapState) -> dict[str, str]:
    """Envoy's HeadersWrapper: a repeated header reads as its values joined with ","."""
    out: dict[str, str] = {}
    for key, _ in header_map.pairs:
        name = to_str(key)
        if name not in out:
            out[name] = ",".join(to_str(v) for v in header_map.get_all(key))
    return out


def _request(stream: HttpState) -> dict[str, Any]:
    """``request.*``: stream info always; header-derived values only while Envoy holds the headers
    (or in the access-log phase), as its RequestWrapper does."""
    attrs: dict[str, Any] = {"time": stream.start_ns, "protocol": stream.protocol,
                             "size": len(stream.request.body_so_far())}
    request = stream.request
    headers = request.headers if (request.headers_live or stream.access_log_phase) else None
    if headers is None:
        return attrs
    for attr, key in (("host", b":authority"), ("scheme", b":scheme"), ("method", b":method"),
                      ("referer", b"referer"), ("useragent", b"user-agent"), ("id", b"x-request-id")):
        value = headers.get(key)
        if value is not None:
            attrs[attr] = to_str(value)
    path = headers.get(b":path")
    if path is not None:
        text = to_str(path)
        attrs["path"] = text
        attrs["url_path"], _, attrs["query"] = text.partition("?")
    attrs["headers"] = _headers(headers)
    return attrs


def _response(stream: HttpState) -> dict[str, Any]:
    """``response.*``: code and details from stream info; headers/trailers while reachable."""
    response = stream.response
    attrs: dict[str, Any] = {}
    if response.headers is not None:
        status = response.headers.get(b":status")
        if status is not None and status.isdigit():
            attrs["code"] = int(status)
        attrs["size"] = len(response.body_so_far())
    if stream.response_code_details:
        attrs["code_details"] = stream.response_code_details
    readable = stream.access_log_phase
    if (response.headers_live or readable) and response.headers is not None:
        attrs["headers"] = _headers(response.headers)
    if (response.trailers_live or readable) and response.trailers is not None:
        attrs["trailers"] = _headers(response.trailers)
    for source in (response.trailers, response.headers):
        grpc = source.get(b"grpc-status") if source is not None else None
        if grpc is not None and grpc.isdigit():
            attrs["grpc_status"] = int(grpc)
            break
    return attrs
