"""Views of what an HTTP stream or TCP connection carries: header maps and buffers.

A view holds nothing but which map or buffer it shows and whose: every read and write is a
hostcall on its context. ``ctx.request_headers`` is a view bound to ``ctx`` (a new one at each
access); when ``ctx`` is not the context the host acts on at that moment (another stream's,
from a root callback or another stream's callback), the view makes it the effective context
first, so ``other.request_headers.add(...)`` acts on ``other``. Views are only
valid inside callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from . import _runtime, hostcalls
from ._abi import BufferType, MapType
from .wire import check_int, to_bytes, to_str

HeaderValue = str | bytes
# a Mapping is invariant in its keys: dict[str, str] must match without a cast
HeaderPairs = Iterable[tuple[HeaderValue, HeaderValue]] | Mapping[str, HeaderValue] | Mapping[bytes, HeaderValue]

#: hostcalls pass at most this many bytes; "everything from start" in a buffer read
_ALL = 0xFFFFFFFF


def pairs_to_bytes(pairs: HeaderPairs | None) -> list[tuple[bytes, bytes]]:
    """Normalise a mapping or an iterable of (name, value) to byte pairs (every value of a
    HeaderMap, not only the first)."""
    if pairs is None:
        return []
    if isinstance(pairs, HeaderMap):
        return pairs.pairs_bytes()
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return [(to_bytes(k), to_bytes(v)) for k, v in items]


def _focus(context_id: int) -> None:
    """Make the host act on ``context_id`` (0: whatever it acts on now). The views' methods
    call it only when ``context_id`` is not already the effective context: the test is written
    out in each of them, because in the proxy a Python call costs about as many wasm
    instructions as a whole hostcall (bench/README.md, costs.py)."""
    if context_id:
        _runtime.current.set_effective(context_id)


TYPE_CHECKING = False  # typing is not imported at run time: it would weigh on every plugin
if TYPE_CHECKING:
    _MappingOfStr = Mapping[str, str]
else:
    # Registered as a Mapping (below) rather than derived from it: a class whose metaclass is
    # ABCMeta is made through CPython's generic type call, about 1,400 wasm instructions more
    # per view, and a view is made at every access (see view_property).
    _MappingOfStr = object


class HeaderMap(_MappingOfStr):
    """The request or response headers (or trailers) of an HTTP stream.

    A read-only mapping of each header's *first* value (``m[name]``, ``get``, ``in``, ``len``,
    ``keys``, ``values``, ``items``, ``dict(m)``), plus the multi-value API (``get_all``,
    ``pairs``) and the edits Envoy offers (``add``, ``replace``, ``remove``, ``set_all``, and
    ``m[name] = value`` / ``del m[name]`` for replace and remove).

    Names are matched case-insensitively by the proxy (Envoy stores them lower-case). Values are
    ``str`` decoded from UTF-8; bytes that are not UTF-8 survive as surrogates and are written
    back unchanged. The ``*_bytes`` methods give the raw bytes.

    Valid in the callback of their phase (request headers in on_request_headers, response
    headers in on_response_headers; trailers in the trailers callbacks), for as long as the
    stream is paused there, and read-only in on_log. Envoy lets go of a map once its callback
    returns CONTINUE: reading request headers in on_response_headers raises BadArgument (get)
    or gives nothing (pairs). Keep what you need on ``self``.
    """

    __slots__ = ("map_type", "context_id")

    def __init__(self, map_type: MapType, context_id: int = 0) -> None:
        self.map_type = map_type
        #: the context whose map this is (0: the one the host acts on when it is used)
        self.context_id = context_id

    def __repr__(self) -> str:
        return f"HeaderMap({MapType(self.map_type).name}, context {self.context_id})"

    # -- the mapping of first values ------------------------------------------------------
    def get(self, name: HeaderValue, default: str | None = None) -> str | None:  # type: ignore[override]
        """The first value of a header, or ``default`` when it is absent."""
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        value = hostcalls.get_map_value(self.map_type, name)
        return default if value is None else to_str(value)

    def __getitem__(self, name: HeaderValue) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, (str, bytes)) and self.get_bytes(name) is not None

    def __iter__(self) -> Iterator[str]:
        """Each header name once, in order of first appearance."""
        return iter(self.keys())

    def __len__(self) -> int:
        """The number of distinct header names (a repeated header counts once)."""
        return len(self.keys())

    def __eq__(self, other: object) -> bool:
        """Equal to any mapping with the same first values (as a Mapping compares)."""
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by content: as Mapping

    def keys(self) -> list[str]:  # type: ignore[override]
        """Each header name once, in order of first appearance (one hostcall)."""
        return list(dict.fromkeys(k for k, _ in self.pairs()))

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        """(name, first value) for each header name, in order (one hostcall). For every value
        of repeated headers use :meth:`pairs`."""
        first: dict[str, str] = {}
        for k, v in self.pairs():
            first.setdefault(k, v)
        return list(first.items())

    def values(self) -> list[str]:  # type: ignore[override]
        """The first value of each header name, in order (one hostcall)."""
        return [v for _, v in self.items()]

    # -- every value ---------------------------------------------------------------------
    def get_bytes(self, name: HeaderValue) -> bytes | None:
        """The first value of a header as bytes, or None."""
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        return hostcalls.get_map_value(self.map_type, name)

    def get_all(self, name: HeaderValue) -> list[str]:
        """Every value of a repeated header, in order (the proxy's get returns only the first)."""
        key = to_bytes(name).lower()
        return [to_str(v) for k, v in self.pairs_bytes() if k.lower() == key]

    def pairs(self) -> list[tuple[str, str]]:
        """All (name, value) pairs in order, a repeated header as one pair per value."""
        return [(to_str(k), to_str(v)) for k, v in self.pairs_bytes()]

    def pairs_bytes(self) -> list[tuple[bytes, bytes]]:
        """All pairs as bytes."""
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        return hostcalls.get_map_pairs(self.map_type)

    # -- edits ---------------------------------------------------------------------------
    def add(self, name: HeaderValue, value: HeaderValue) -> None:
        """Add a value, keeping existing values of the same header."""
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        hostcalls.write_map_value(hostcalls.proxy_add_header_map_value, self.map_type, name, value)

    def replace(self, name: HeaderValue, value: HeaderValue) -> None:
        """Set a header to one value, replacing any existing values."""
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        hostcalls.write_map_value(hostcalls.proxy_replace_header_map_value, self.map_type, name, value)

    def remove(self, name: HeaderValue) -> None:
        """Remove every value of a header (no error when it is absent)."""
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        hostcalls.remove_map_value(self.map_type, name)

    def set_all(self, pairs: HeaderPairs) -> None:
        """Replace the whole map with these pairs (a mapping, an iterable of pairs, or another
        HeaderMap, every value of which is copied)."""
        data = pairs_to_bytes(pairs)
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        hostcalls.set_map_pairs(self.map_type, data)

    def __setitem__(self, name: HeaderValue, value: HeaderValue) -> None:
        self.replace(name, value)

    def __delitem__(self, name: HeaderValue) -> None:
        self.remove(name)


class Buffer:
    """A body of an HTTP stream, or the data of a TCP connection's current callback.

    The proxy hands a plugin what it has buffered so far: return ``Action.PAUSE`` from a body
    callback to make it buffer more, and read the whole body when ``end_of_stream`` is true.
    Envoy can only replace from the start, prepend or append; those are the edits offered.
    """

    __slots__ = ("buffer_type", "context_id")

    def __init__(self, buffer_type: BufferType, context_id: int = 0) -> None:
        self.buffer_type = buffer_type
        #: the context whose buffer this is (0: the one the host acts on when it is used)
        self.context_id = context_id

    def __repr__(self) -> str:
        return f"Buffer({BufferType(self.buffer_type).name}, context {self.context_id})"

    def __len__(self) -> int:
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        return hostcalls.get_buffer_size(self.buffer_type) or 0

    def read(self, start: int = 0, size: int | None = None) -> bytes:
        """Bytes from ``start`` (all of them, or at most ``size``); b"" when there is none."""
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        data = hostcalls.get_buffer(self.buffer_type, check_int(start, "read(start)", 0, _ALL),
                                    _ALL if size is None else check_int(size, "read(size)", 0, _ALL))
        return data or b""

    def text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        """The buffered bytes decoded as text."""
        return self.read().decode(encoding, errors)

    def replace(self, data: str | bytes) -> None:
        """Replace everything buffered so far with data."""
        raw = to_bytes(data)
        hostcalls.set_buffer(self.buffer_type, 0, len(self), raw)

    def prepend(self, data: str | bytes) -> None:
        """Insert data before what is buffered."""
        raw = to_bytes(data)
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        hostcalls.set_buffer(self.buffer_type, 0, 0, raw)

    def append(self, data: str | bytes) -> None:
        """Add data after what is buffered."""
        raw = to_bytes(data)
        if self.context_id != _runtime.current.effective:
            _focus(self.context_id)
        hostcalls.set_buffer(self.buffer_type, _ALL, 0, raw)


Mapping.register(HeaderMap)


def view_property(cls: type[HeaderMap] | type[Buffer], kind: MapType | BufferType) -> property:
    """A context's attribute giving a view of one of its maps or buffers: a new view at each
    access (two slots, cheap), bound to the context it was read from. A property rather than a
    descriptor of our own: CPython runs a property's getter without re-entering the interpreter
    loop, and a view kept in the instance would turn its attributes into a real dict; both
    measured in wasm instructions on every request that touches a map."""
    def view(ctx: object) -> object:
        return cls(kind, ctx.context_id)  # type: ignore[attr-defined, arg-type]
    return property(view)


REQUEST_HEADERS = view_property(HeaderMap, MapType.HTTP_REQUEST_HEADERS)
REQUEST_TRAILERS = view_property(HeaderMap, MapType.HTTP_REQUEST_TRAILERS)
RESPONSE_HEADERS = view_property(HeaderMap, MapType.HTTP_RESPONSE_HEADERS)
RESPONSE_TRAILERS = view_property(HeaderMap, MapType.HTTP_RESPONSE_TRAILERS)
REQUEST_BODY = view_property(Buffer, BufferType.HTTP_REQUEST_BODY)
RESPONSE_BODY = view_property(Buffer, BufferType.HTTP_RESPONSE_BODY)
DOWNSTREAM_DATA = view_property(Buffer, BufferType.DOWNSTREAM_DATA)
UPSTREAM_DATA = view_property(Buffer, BufferType.UPSTREAM_DATA)
