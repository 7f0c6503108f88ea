"""The host's data about contexts: header maps, the two directions of an HTTP stream, TCP buffers.

Envoy keeps, per filter context, *pointers* to the header maps and buffers of the callback in
progress, and clears them when a callback answers Continue (``context.cc``: ``decodeHeaders`` sets
``request_headers_`` and nulls it on Continue; ``continueStream`` nulls the request ones). A
plugin can only reach a map while its pointer is set. This module keeps the data (what the
upstream or the client finally gets) apart from that reachability (``*_live`` flags), so the host
can answer hostcalls as Envoy does while tests still see the whole stream.

Nothing here runs a plugin; :mod:`.host` answers hostcalls from these objects and
:mod:`.streams` moves them through a stream's life.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from ..wire import encode_pairs, to_bytes

if TYPE_CHECKING:
    from .records import LocalResponse

Pairs = list[tuple[bytes, bytes]]

#: how tests pass headers: pairs or a mapping, names and values as str or bytes
HeaderInput = Union[Iterable[tuple[Union[str, bytes], Union[str, bytes]]],
                    Mapping[Union[str, bytes], Union[str, bytes]], None]


def serialize_pairs(pairs: Pairs) -> bytes:
    """Pairs in the wire format as the host writes them: no SDK-side size limits (Envoy sends
    whatever a map holds), and an empty map as zero bytes."""
    if not pairs:
        return b""
    try:
        return encode_pairs(pairs)
    except ValueError:  # beyond the limits the SDK enforces on what it sends
        head = [len(pairs).to_bytes(4, "little")] + [struct.pack("<II", len(k), len(v)) for k, v in pairs]
        return b"".join(head) + b"".join(k + b"\0" + v + b"\0" for k, v in pairs)


def normalize_pairs(pairs: HeaderInput) -> Pairs:
    """Headers as a test gives them -> (bytes, bytes) pairs (str as UTF-8, surrogates kept)."""
    if pairs is None:
        return []
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = []
    for item in items:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise TypeError(f"headers must be (name, value) pairs or a mapping, got {item!r}") from None
        out.append((to_bytes(key), to_bytes(value)))
    return out


class HeaderMapState:
    """A header map with Envoy's semantics: lower-cased names, pseudo-headers first, ordered.

    ``replace`` removes every value and appends one (Envoy's ``setCopy`` since
    ``http_set_copy_replace_all_headers``); ``get`` is the first value; ``remove`` of an absent
    name is fine.
    """

    __slots__ = ("pairs",)

    def __init__(self, pairs: Pairs = ()) -> None:  # type: ignore[assignment]
        self.pairs: Pairs = []
        for key, value in pairs:
            self.add(key, value)

    def __repr__(self) -> str:
        return f"HeaderMapState({self.pairs!r})"

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, key: bytes) -> bytes | None:
        key = key.lower()
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    def get_all(self, key: bytes) -> list[bytes]:
        key = key.lower()
        return [v for k, v in self.pairs if k == key]

    def add(self, key: bytes, value: bytes) -> None:
        key = key.lower()
        if key.startswith(b":"):
            # Envoy keeps pseudo-headers ahead of every regular header.
            at = next((i for i, (k, _) in enumerate(self.pairs) if not k.startswith(b":")),
                      len(self.pairs))
            self.pairs.insert(at, (key, value))
        else:
            self.pairs.append((key, value))

    def replace(self, key: bytes, value: bytes) -> None:
        self.remove(key)
        self.add(key, value)

    def remove(self, key: bytes) -> None:
        key = key.lower()
        self.pairs = [(k, v) for k, v in self.pairs if k != key]

    def set_all(self, pairs: Pairs) -> None:
        self.pairs = []
        for key, value in pairs:
            self.add(key, value)

    def byte_size(self) -> int:
        """Envoy's ``HeaderMap::byteSize()``: the bytes of every name and value."""
        return sum(len(k) + len(v) for k, v in self.pairs)

    def copy(self) -> HeaderMapState:
        clone = HeaderMapState()
        clone.pairs = list(self.pairs)
        return clone


@dataclass
class Direction:
    """One direction of an HTTP stream (the request, or the response) as it passes the filter.

    ``stopped`` is where the filter stopped the iteration and nobody continued it yet:
    ``"headers"`` (Envoy's StopAllIteration: later data is held back from the filter),
    ``"headers only"`` (StopIteration, with allow_on_headers_stop_iteration: later data still
    reaches the filter), ``"body"`` (StopIterationAndBuffer: later chunks accumulate in
    ``body``), ``"trailers"``.
    """

    headers: HeaderMapState | None = None
    trailers: HeaderMapState | None = None
    headers_live: bool = False
    trailers_live: bool = False
    #: what the filter sees in a body callback (one chunk, or everything buffered so far)
    body: bytearray = field(default_factory=bytearray)
    body_live: bool = False
    buffering: bool = False
    #: bytes that passed the filter (toward the upstream for the request, the client for the response)
    forwarded: bytearray = field(default_factory=bytearray)
    #: data that arrived while the filter had stopped at the headers, not yet given to it
    held: bytearray = field(default_factory=bytearray)
    held_end: bool = False
    held_trailers: HeaderMapState | None = None
    has_held: bool = False
    stopped: str | None = None
    #: the test sent headers / sent end_of_stream
    started: bool = False
    ended: bool = False
    #: headers passed the filter (for the response: sent to the client)
    headers_passed: bool = False

    def body_so_far(self) -> bytes:
        """Everything the filter passed on plus what it holds right now."""
        return bytes(self.forwarded) + bytes(self.body) + bytes(self.held)


@dataclass
class ContextState:
    """What every context has: its id, its root, and whether it is gone."""

    id: int
    root_id: int
    deleted: bool = False

    @property
    def is_root(self) -> bool:
        return self.id == self.root_id


@dataclass
class RootState(ContextState):
    """A root context: timers, and the results of calls while their callback runs."""

    tick_period_ms: int = 0
    next_tick_ns: int | None = None
    #: (headers, body, trailers) of the HTTP call whose response callback is running
    http_call_response: tuple[HeaderMapState, bytes, HeaderMapState | None] | None = None
    grpc_initial_metadata: HeaderMapState | None = None
    grpc_trailing_metadata: HeaderMapState | None = None
    grpc_receive_buffer: bytearray | None = None
    #: proxy_get_status: Envoy keeps the code until the next failure overwrites it
    status_code: int = 0
    status_message: bytes = b""
    #: on_done answered false at shutdown; waiting for proxy_done
    pending_done: bool = False


@dataclass
class Peer:
    """An address of a connection, "ip:port"."""

    address: str

    @property
    def port(self) -> int:
        host, sep, port = self.address.rpartition(":")
        return int(port) if sep and port.isdigit() else 0


@dataclass
class StreamCommon(ContextState):
    """What HTTP streams and TCP connections share: peers, filter state, property overrides."""

    source: Peer = field(default_factory=lambda: Peer("10.0.0.2:1234"))
    destination: Peer = field(default_factory=lambda: Peer("10.0.0.1:80"))
    connection_id: int = 0
    filter_state: dict[str, Any] = field(default_factory=dict)
    filter_state_spans: dict[str, int] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    #: proxy_on_context_create ran for it (Envoy's in_vm_context_created_)
    created: bool = False
    start_ns: int = 0


@dataclass
class HttpState(StreamCommon):
    """An HTTP stream: both directions plus what Envoy tracks around the filter."""

    request: Direction = field(default_factory=Direction)
    response: Direction = field(default_factory=Direction)
    #: Envoy's end_of_stream_: the end_stream flag of the latest decode/encode call
    end_of_stream: bool = False
    access_log_phase: bool = False
    local_response: LocalResponse | None = None
    #: the response came from the plugin (no upstream)
    local_reply_sent: bool = False
    reset: str | None = None
    route_cache_cleared: int = 0
    completed: bool = False
    protocol: str = "HTTP/1.1"
    response_code_details: str = ""


@dataclass
class TcpState(StreamCommon):
    """A TCP connection through a network filter."""

    downstream: bytearray = field(default_factory=bytearray)
    downstream_live: bool = False
    upstream: bytearray = field(default_factory=bytearray)
    upstream_live: bool = False
    to_upstream: bytearray = field(default_factory=bytearray)
    to_downstream: bytearray = field(default_factory=bytearray)
    downstream_stopped: bool = False
    upstream_stopped: bool = False
    connected: bool = False
    downstream_ended: bool = False
    upstream_ended: bool = False
    downstream_closed: bool = False
    upstream_closed: bool = False
    completed: bool = False
    close_reason: str | None = None
