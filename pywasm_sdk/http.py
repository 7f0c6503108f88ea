"""Views of what an HTTP stream or TCP connection carries: header maps and buffers.

A view holds nothing but which map or buffer it shows; every read and write is a hostcall on
the context whose callback is running. That is why the views are shared class attributes of
the contexts (no allocation per request) and why they are only valid inside callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from . import hostcalls
from ._abi import BufferType, MapType
from .wire import to_bytes, to_str

HeaderValue = str | bytes
# a Mapping is invariant in its keys: dict[str, str] must match without a cast
HeaderPairs = Iterable[tuple[HeaderValue, HeaderValue]] | Mapping[str, HeaderValue] | Mapping[bytes, HeaderValue]

#: hostcalls pass at most this many bytes; "everything from start" in a buffer read
_ALL = 0xFFFFFFFF


def pairs_to_bytes(pairs: HeaderPairs | None) -> list[tuple[bytes, bytes]]:
    """Normalise a mapping or an iterable of (name, value) to byte pairs."""
    if pairs is None:
        return []
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return [(to_bytes(k), to_bytes(v)) for k, v in items]


class HeaderMap:
    """The request or response headers (or trailers) of the current HTTP stream.

    Names are matched case-insensitively by the proxy (Envoy stores them lower-case). Values are
    ``str`` decoded from UTF-8; bytes that are not UTF-8 survive as surrogates and are written
    back unchanged. The ``*_bytes`` methods give the raw bytes.

    Valid in the callback of their phase (request headers in on_request_headers, response
    headers in on_response_headers; trailers in the trailers callbacks), for as long as the
    stream is paused there, and read-only in on_log. Envoy lets go of a map once its callback
    returns CONTINUE: reading request headers in on_response_headers raises BadArgument (get)
    or gives nothing (items). Keep what you need on ``self``.
    """

    __slots__ = ("map_type",)

    def __init__(self, map_type: MapType) -> None:
        self.map_type = map_type

    def __repr__(self) -> str:
        return f"HeaderMap({MapType(self.map_type).name})"

    def get(self, name: HeaderValue, default: str | None = None) -> str | None:
        """The first value of a header, or ``default`` when it is absent."""
        value = hostcalls.get_map_value(self.map_type, to_bytes(name))
        return default if value is None else to_str(value)

    def get_bytes(self, name: HeaderValue) -> bytes | None:
        """The first value of a header as bytes, or None."""
        return hostcalls.get_map_value(self.map_type, to_bytes(name))

    def get_all(self, name: HeaderValue) -> list[str]:
        """Every value of a repeated header, in order (the proxy's get returns only the first)."""
        key = to_bytes(name).lower()
        return [to_str(v) for k, v in hostcalls.get_map_pairs(self.map_type) if k.lower() == key]

    def items(self) -> list[tuple[str, str]]:
        """All (name, value) pairs in order, repeated headers as separate pairs."""
        return [(to_str(k), to_str(v)) for k, v in hostcalls.get_map_pairs(self.map_type)]

    def items_bytes(self) -> list[tuple[bytes, bytes]]:
        """All pairs as bytes."""
        return hostcalls.get_map_pairs(self.map_type)

    def add(self, name: HeaderValue, value: HeaderValue) -> None:
        """Add a value, keeping existing values of the same header."""
        hostcalls.add_map_value(self.map_type, to_bytes(name), to_bytes(value))

    def replace(self, name: HeaderValue, value: HeaderValue) -> None:
        """Set a header to one value, replacing any existing values."""
        hostcalls.replace_map_value(self.map_type, to_bytes(name), to_bytes(value))

    def remove(self, name: HeaderValue) -> None:
        """Remove every value of a header (no error when it is absent)."""
        hostcalls.remove_map_value(self.map_type, to_bytes(name))

    def set_all(self, pairs: HeaderPairs) -> None:
        """Replace the whole map with these pairs (a mapping or an iterable of pairs)."""
        hostcalls.set_map_pairs(self.map_type, pairs_to_bytes(pairs))

    # Mapping-style conveniences, all in terms of the methods above.
    def __getitem__(self, name: HeaderValue) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: HeaderValue, value: HeaderValue) -> None:
        self.replace(name, value)

    def __delitem__(self, name: HeaderValue) -> None:
        self.remove(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, (str, bytes)) and self.get_bytes(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.items()])


class Buffer:
    """A body of the current HTTP stream, or the data of the current TCP callback.

    The proxy hands a plugin what it has buffered so far: return ``Action.PAUSE`` from a body
    callback to make it buffer more, and read the whole body when ``end_of_stream`` is true.
    Envoy can only replace from the start, prepend or append; those are the edits offered.
    """

    __slots__ = ("buffer_type",)

    def __init__(self, buffer_type: BufferType) -> None:
        self.buffer_type = buffer_type

    def __repr__(self) -> str:
        return f"Buffer({BufferType(self.buffer_type).name})"

    def __len__(self) -> int:
        return hostcalls.get_buffer_size(self.buffer_type) or 0

    def read(self, start: int = 0, size: int | None = None) -> bytes:
        """Bytes from ``start`` (all of them, or at most ``size``); b"" when there is none."""
        data = hostcalls.get_buffer(self.buffer_type, start, _ALL if size is None else size)
        return data or b""

    def text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        """The buffered bytes decoded as text."""
        return self.read().decode(encoding, errors)

    def replace(self, data: str | bytes) -> None:
        """Replace everything buffered so far with data."""
        hostcalls.set_buffer(self.buffer_type, 0, len(self), to_bytes(data))

    def prepend(self, data: str | bytes) -> None:
        """Insert data before what is buffered."""
        hostcalls.set_buffer(self.buffer_type, 0, 0, to_bytes(data))

    def append(self, data: str | bytes) -> None:
        """Add data after what is buffered."""
        hostcalls.set_buffer(self.buffer_type, _ALL, 0, to_bytes(data))


REQUEST_HEADERS = HeaderMap(MapType.HTTP_REQUEST_HEADERS)
REQUEST_TRAILERS = HeaderMap(MapType.HTTP_REQUEST_TRAILERS)
RESPONSE_HEADERS = HeaderMap(MapType.HTTP_RESPONSE_HEADERS)
RESPONSE_TRAILERS = HeaderMap(MapType.HTTP_RESPONSE_TRAILERS)
REQUEST_BODY = Buffer(BufferType.HTTP_REQUEST_BODY)
RESPONSE_BODY = Buffer(BufferType.HTTP_RESPONSE_BODY)
DOWNSTREAM_DATA = Buffer(BufferType.DOWNSTREAM_DATA)
UPSTREAM_DATA = Buffer(BufferType.UPSTREAM_DATA)
