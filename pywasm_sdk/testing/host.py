"""The host's side of the ABI: every hostcall of abi/proxy_wasm.yaml, with Envoy's semantics.

Rule of this module: :class:`HostState` answers hostcalls and keeps state; it never calls into a
plugin. Each hostcall is a method named exactly as in the ABI, in the raw Python convention of
:mod:`pywasm_sdk.hostcalls` (ints, ``bytes`` for ``bytes`` parameters, ``str`` for ``string``
ones; the status, or ``(status, *outputs)`` with zero outputs when the status is not OK). The
native runner installs the object itself as the SDK's host; the wasm runner calls the methods
from the module's ``env.proxy_*`` imports. What Envoy does *after* a callback returns (send a
local reply, continue or reset a stream, delete a root after ``proxy_done``) is queued in
:attr:`HostState.after_call` as :class:`Deferred` records for the driver (:mod:`.mock`), and
``proxy_on_queue_ready`` notifications go to :attr:`HostState.posted`.

Sources of the semantics: proxy-wasm-cpp-host ``src/exports.cc``, ``src/context.cc``,
``src/shared_data.cc``, ``src/shared_queue.cc``; Envoy ``source/extensions/common/wasm/
context.cc`` and ``foreign.cc``. In brief:

- hostcalls act on the *effective* context (``proxy_set_effective_context``, reset at every
  callback), calls and timers on its root;
- a header map or body is reachable only while Envoy holds it (see :mod:`._state`): outside,
  getting a header value is BAD_ARGUMENT, all pairs are an empty map, writes BAD_ARGUMENT;
- ``get_header_map_value`` answers the FIRST value; ``remove`` of an absent header is OK;
  serialized pairs over 1 MiB / 1024 pairs, or malformed, are read as an empty map;
- ``set_buffer_bytes``: ``start == 0`` drops ``size`` bytes then prepends, ``start >= length``
  appends, anything else is BAD_ARGUMENT; configuration buffers are read-only, and
  PLUGIN_CONFIGURATION exists only during ``proxy_on_configure``;
- ``send_local_response`` is applied after the callback and forces the callback's answer to stop;
  ``continue_stream`` likewise, and UPSTREAM is UNIMPLEMENTED;
- HTTP calls need ``:path``, ``:method`` and ``:authority`` and a known cluster (BAD_ARGUMENT);
- metrics: ids carry their type in the low 2 bits; a counter only grows (BAD_ARGUMENT otherwise);
  ``get_metric`` of a histogram is BAD_ARGUMENT;
- ``set_property`` writes filter state ``wasm.<path>``; ``set_envoy_filter_state`` needs a key
  Envoy has an object factory for (NOT_FOUND otherwise).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from .._abi import (PAIRS_MAX_BYTES, PAIRS_MAX_COUNT, BufferType, LogLevel, MapType, MetricType,
                    Status, StreamType)
from ..wire import WireFormatError, decode_pairs, to_str
from . import _proto, foreign
from ._state import (ContextState, HeaderMapState, HttpState, Peer, RootState, StreamCommon, TcpState,
                     serialize_pairs)
from .calls import CallAnswerer, GrpcCall, GrpcStream, HttpCall
from .errors import HostMisuseError, MockHostError, UnsupportedByMockHost
from .foreign import KNOWN_FILTER_STATE_KEYS
from .properties import ENVOY_ATTRIBUTES, MISSING, lookup, merge, stream_attribute
from .records import LocalResponse, LogRecord, Logs, Metric, Metrics
from .shared import SharedData, SharedQueues, SharedStore

__all__ = ["Deferred", "HostConfig", "HostState", "KNOWN_FILTER_STATE_KEYS"]

_OK = Status.OK
_U64 = (1 << 64) - 1

_METRIC_TYPE_MASK = 0x3
_ID_INCREMENT = 0x4


@dataclass(frozen=True)
class HostConfig:
    """How the simulated proxy is configured for one plugin (Envoy's ``PluginConfig``).

    ``clusters`` are the upstream clusters that exist (HTTP and gRPC calls to any other are
    rejected as Envoy rejects them); ``properties`` are attributes the host cannot derive
    (``upstream``, ``xds``, ``cluster_name``...), as a nested mapping that overrides derived ones;
    ``node`` is the proxy's node (``id``, ``cluster``, ``metadata``); ``log_level`` is the level
    Envoy's ``wasm`` logger runs at (lines below it are dropped, as in Envoy).
    """

    plugin_config: bytes = b""
    vm_config: bytes = b""
    root_id: str = ""
    vm_id: str = ""
    plugin_name: str = "mock_plugin"
    env: Mapping[str, str] = field(default_factory=dict)
    log_level: LogLevel = LogLevel.TRACE
    clusters: frozenset[str] = frozenset()
    properties: Mapping[str, Any] = field(default_factory=dict)
    node: Mapping[str, Any] = field(default_factory=lambda: {"id": "mock-node", "cluster": "mock-cluster"})
    start_time_ns: int | None = None
    filter_state_keys: frozenset[str] = KNOWN_FILTER_STATE_KEYS
    foreign_functions: Mapping[str, Callable[[bytes], bytes]] = field(default_factory=dict)
    allow_on_headers_stop_iteration: bool = False


DeferredKind = Literal["local_response", "continue", "close", "delete_root"]


@dataclass(frozen=True)
class Deferred:
    """Something Envoy does after the current callback returns (``addAfterVmCallAction``): send a
    local response, continue or close a stream, delete a root after ``proxy_done``."""

    kind: DeferredKind
    context_id: int
    stream_type: int = 0
    response: LocalResponse | None = None


class _NoAnswerer:
    def _answer_http_call(self, *_: object) -> None:
        raise HostMisuseError("this HostState has no driver to deliver answers: use a MockHost")

    _answer_grpc = _answer_http_call


def host_pairs(blob: bytes) -> list[tuple[bytes, bytes]]:
    """Serialized pairs read the way the host reads them (``PairsUtil::toPairs``): anything
    oversized (over 1 MiB or 1024 pairs), malformed or with trailing bytes is an empty map."""
    if len(blob) < 4 or len(blob) > PAIRS_MAX_BYTES:
        return []
    if int.from_bytes(blob[:4], "little") > PAIRS_MAX_COUNT:
        return []
    try:
        pairs = decode_pairs(blob)
    except WireFormatError:
        return []
    used = 4 + sum(8 + len(k) + len(v) + 2 for k, v in pairs)
    return pairs if used == len(blob) else []


def _replace_all_empty_space(text: str) -> str:
    """Envoy's ``StringUtil::replaceAllEmptySpace`` for response code details."""
    return "".join("_" if c.isspace() else c for c in text)


class HostState:
    """One plugin's VM as Envoy sees it: its contexts, and the answer to every hostcall.

    Create it through :class:`~pywasm_sdk.testing.MockHost`; tests read it there (``host.logs``,
    ``host.metrics``...). The driver brackets each callback with :meth:`callback`; a hostcall
    outside a callback is a HostMisuseError. One HostState serves one VM; several may share a
    :class:`~.shared.SharedStore` (``shared=``) like VMs of one proxy process do.
    """

    def __init__(self, config: HostConfig | None = None, *, shared: SharedStore | None = None) -> None:
        self.config = config or HostConfig()
        self.logs = Logs()
        #: notes the host leaves when it answers an error that is probably a test-setup mistake
        self.notes: list[str] = []
        self.shared = shared if shared is not None else SharedStore()
        self.properties: dict[str, Any] = dict(self.config.properties)
        self.foreign_functions: dict[str, Callable[[bytes], bytes]] = dict(self.config.foreign_functions)
        self.contexts: dict[int, ContextState] = {}
        self.root: RootState | None = None
        self._next_context_id = 1
        self._next_connection_id = 1
        start = self.config.start_time_ns
        self.now_ns: int = time.time_ns() if start is None else start
        self._monotonic_base = time.monotonic_ns() - self.now_ns
        # the callback in progress (Envoy's current_context_ / effective_context_id_)
        self.current: int | None = None
        self.effective: int = 0
        self.callback_name: str = ""
        self.stop_iteration = False
        #: callbacks allowed while the host runs restricted code (_initialize, the allocator)
        self.allowed: frozenset[str] | None = None
        self.restricted_phase = ""
        #: PLUGIN_CONFIGURATION exists only while the root is created and configured (Envoy's
        #: temp_plugin_); VM_CONFIGURATION is always readable
        self.plugin_config_readable = False
        self.after_call: deque[Deferred] = deque()
        self.posted: deque[tuple[int, int]] = deque()
        #: called when something is posted (so an idle host can deliver it)
        self.wakeup: Callable[[], None] | None = None
        #: a MockHostError a hostcall raised during the current callback (re-raised by the driver)
        self.fatal: BaseException | None = None
        self.answerer: CallAnswerer = _NoAnswerer()
        self.http_calls: list[HttpCall] = []
        self.grpc_calls: list[GrpcCall] = []
        self.grpc_streams: list[GrpcStream] = []
        self._calls: dict[int, HttpCall | GrpcCall | GrpcStream] = {}
        self._next_callout = {0: 0, 1: 1, 2: 2}  # HttpCall, GrpcCall, GrpcStream (low 2 bits)
        self._metrics = self.shared.metrics  # Envoy's stats store is per process, like shared data
        self._metric_ids: dict[int, Metric] = {}
        self._next_metric = {t: int(t) for t in MetricType}

    # -- views for tests ------------------------------------------------------------------------

    @property
    def metrics(self) -> Metrics:
        return Metrics(self._metrics)

    @property
    def shared_data(self) -> SharedData:
        return SharedData(self.shared, self.config.vm_id)

    @property
    def shared_queues(self) -> SharedQueues:
        return SharedQueues(self.shared, self.config.vm_id)

    @property
    def monotonic_ns(self) -> int:
        return self.now_ns + self._monotonic_base

    # -- contexts (the driver's side) -----------------------------------------------------------

    def _new_id(self) -> int:
        context_id = self._next_context_id
        self._next_context_id += 1
        return context_id

    def new_root(self) -> RootState:
        """Create the root context of the plugin (the driver calls proxy_on_context_create)."""
        root = RootState(self._new_id(), 0)
        root.root_id = root.id
        self.contexts[root.id] = root
        self.root = root
        return root

    def new_http(self, source: str, destination: str, properties: Mapping[str, Any]) -> HttpState:
        assert self.root is not None
        state = HttpState(self._new_id(), self.root.id, source=Peer(source), destination=Peer(destination),
                          connection_id=self._connection_id(), properties=dict(properties),
                          start_ns=self.now_ns)
        self.contexts[state.id] = state
        return state

    def new_tcp(self, source: str, destination: str, properties: Mapping[str, Any]) -> TcpState:
        assert self.root is not None
        state = TcpState(self._new_id(), self.root.id, source=Peer(source), destination=Peer(destination),
                         connection_id=self._connection_id(), properties=dict(properties),
                         start_ns=self.now_ns)
        self.contexts[state.id] = state
        return state

    def _connection_id(self) -> int:
        cid = self._next_connection_id
        self._next_connection_id += 1
        return cid

    def forget(self, context_id: int) -> None:
        """The context was deleted (after proxy_on_delete)."""
        ctx = self.contexts.pop(context_id, None)
        if ctx is not None:
            ctx.deleted = True

    @contextmanager
    def callback(self, context_id: int, name: str) -> Iterator[None]:
        """Bracket one callback into the plugin: hostcalls act on ``context_id`` meanwhile."""
        saved = (self.current, self.effective, self.callback_name)
        self.current, self.effective, self.callback_name = context_id, 0, name
        try:
            yield
        finally:
            self.current, self.effective, self.callback_name = saved

    @contextmanager
    def restricted(self, phase: str, allowed: frozenset[str]) -> Iterator[None]:
        """Only ``allowed`` imports may be called meanwhile (Envoy's restricted callback; calling
        another traps the VM with "restricted_callback")."""
        saved = (self.allowed, self.restricted_phase)
        self.allowed, self.restricted_phase = allowed, phase
        try:
            yield
        finally:
            self.allowed, self.restricted_phase = saved

    def post_queue_ready(self, context_id: int, token: int) -> None:
        """A shared queue this VM owns got an item (called by the SharedStore)."""
        self.posted.append((context_id, token))
        if self.wakeup is not None:
            self.wakeup()

    # -- helpers --------------------------------------------------------------------------------

    def _fail(self, error: MockHostError) -> MockHostError:
        """Remember a host-level error so the driver re-raises it even if the plugin catches it."""
        if self.fatal is None:
            self.fatal = error
        return error

    def _ctx(self, call: str) -> ContextState:
        """The context a hostcall acts on (Envoy's contextOrEffectiveContext)."""
        if self.current is None:
            raise self._fail(HostMisuseError(
                f"{call} was called outside of any callback; Envoy only serves hostcalls while one "
                "of the plugin's callbacks runs (use MockHost to drive the plugin)"))
        if self.effective:
            ctx = self.contexts.get(self.effective)
            if ctx is not None:
                return ctx
        ctx = self.contexts.get(self.current)
        if ctx is None:
            raise self._fail(HostMisuseError(f"{call}: context {self.current} does not exist"))
        return ctx

    def _root_of(self, ctx: ContextState) -> RootState:
        root = self.contexts.get(ctx.root_id)
        if not isinstance(root, RootState):
            raise self._fail(HostMisuseError(f"context {ctx.id} has no live root context"))
        return root

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # -- logging and time -----------------------------------------------------------------------

    def proxy_log(self, level: int, message: str) -> int:
        if self.allowed is None:  # restricted phases (_initialize, the allocator) may log
            self._ctx("proxy_log")
        if level > LogLevel.CRITICAL:
            return Status.BAD_ARGUMENT
        self.record_log(LogLevel(level), message, "proxy_log")
        return _OK

    def record_log(self, level: LogLevel, message: str, source: str) -> None:
        """Keep a log line if Envoy's logger would print it at the configured level."""
        if level >= self.config.log_level:
            self.logs.append(LogRecord(level, message, self.current or 0, source))

    def proxy_get_log_level(self) -> tuple[int, int]:
        self._ctx("proxy_get_log_level")
        return _OK, int(self.config.log_level)

    def proxy_get_current_time_nanoseconds(self) -> tuple[int, int]:
        self._ctx("proxy_get_current_time_nanoseconds")
        return _OK, self.now_ns

    def proxy_set_tick_period_milliseconds(self, period: int) -> int:
        root = self._root_of(self._ctx("proxy_set_tick_period_milliseconds"))
        root.tick_period_ms = period
        root.next_tick_ns = self.now_ns + period * 1_000_000 if period else None
        return _OK

    # -- buffers --------------------------------------------------------------------------------

    def _buffer(self, call: str, buffer_type: int) -> tuple[bytes | bytearray | None, bool]:
        """(the buffer, whether it is mutable); (None, False) when Envoy has none (NOT_FOUND).

        Body and data buffers outside their callback are Envoy's empty buffer wrapper: readable
        as empty, not writable.
        """
        ctx = self._ctx(call)
        root = self._root_of(ctx)
        if buffer_type == BufferType.VM_CONFIGURATION:
            return self.config.vm_config, False
        if buffer_type == BufferType.PLUGIN_CONFIGURATION:
            return (self.config.plugin_config, False) if self.plugin_config_readable else (None, False)
        if buffer_type == BufferType.HTTP_CALL_RESPONSE_BODY:
            response = root.http_call_response
            return (response[1], False) if response is not None else (None, False)
        if buffer_type == BufferType.GRPC_RECEIVE_BUFFER:
            received = root.grpc_receive_buffer
            return (received, True) if received is not None else (b"", False)
        if buffer_type == BufferType.FOREIGN_FUNCTION_ARGUMENTS:
            return b"", False
        if isinstance(ctx, HttpState):
            direction = {BufferType.HTTP_REQUEST_BODY: ctx.request,
                         BufferType.HTTP_RESPONSE_BODY: ctx.response}.get(BufferType(buffer_type))
            if direction is not None and direction.body_live:
                return direction.body, True
        elif isinstance(ctx, TcpState):
            if buffer_type == BufferType.DOWNSTREAM_DATA and ctx.downstream_live:
                return ctx.downstream, True
            if buffer_type == BufferType.UPSTREAM_DATA and ctx.upstream_live:
                return ctx.upstream, True
        return b"", False

    def proxy_get_buffer_bytes(self, buffer_type: int, start: int, max_size: int) -> tuple[int, bytes]:
        if buffer_type > max(BufferType):
            return Status.BAD_ARGUMENT, b""
        data, _ = self._buffer("proxy_get_buffer_bytes", buffer_type)
        if data is None:
            return Status.NOT_FOUND, b""
        if start > len(data):
            return _OK, b""
        return _OK, bytes(data[start:start + max_size])

    def proxy_get_buffer_status(self, buffer_type: int) -> tuple[int, int, int]:
        if buffer_type > max(BufferType):
            return Status.BAD_ARGUMENT, 0, 0
        data, _ = self._buffer("proxy_get_buffer_status", buffer_type)
        if data is None:
            return Status.NOT_FOUND, 0, 0
        return _OK, len(data), 0

    def proxy_set_buffer_bytes(self, buffer_type: int, start: int, size: int, data: bytes) -> int:
        if buffer_type > max(BufferType):
            return Status.BAD_ARGUMENT
        buffer, mutable = self._buffer("proxy_set_buffer_bytes", buffer_type)
        if buffer is None:
            return Status.NOT_FOUND
        if not mutable:
            return Status.BAD_ARGUMENT
        assert isinstance(buffer, bytearray)
        if start == 0:
            del buffer[:size]
            buffer[0:0] = data
        elif start >= len(buffer):
            buffer += data
        else:
            return Status.BAD_ARGUMENT
        return _OK

    # -- header maps ----------------------------------------------------------------------------

    def _readable_map(self, call: str, map_type: int) -> tuple[HeaderMapState | None, bool]:
        """(the map Envoy's getConstMap gives, whether the stream is in its access-log phase)."""
        ctx = self._ctx(call)
        root = self._root_of(ctx)
        if map_type == MapType.GRPC_RECEIVE_INITIAL_METADATA:
            return root.grpc_initial_metadata, False
        if map_type == MapType.GRPC_RECEIVE_TRAILING_METADATA:
            return root.grpc_trailing_metadata, False
        if map_type == MapType.HTTP_CALL_RESPONSE_HEADERS:
            return (root.http_call_response[0] if root.http_call_response else None), False
        if map_type == MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return (root.http_call_response[2] if root.http_call_response else None), False
        if not isinstance(ctx, HttpState):
            return None, False
        if ctx.access_log_phase:
            return {MapType.HTTP_REQUEST_HEADERS: ctx.request.headers,
                    MapType.HTTP_REQUEST_TRAILERS: None,
                    MapType.HTTP_RESPONSE_HEADERS: ctx.response.headers,
                    MapType.HTTP_RESPONSE_TRAILERS: ctx.response.trailers}[MapType(map_type)], True
        return self._live_map(ctx, map_type, create=False), False

    def _writable_map(self, call: str, map_type: int) -> HeaderMapState | None:
        """The map Envoy's getMap gives (None -> BAD_ARGUMENT)."""
        ctx = self._ctx(call)
        if not isinstance(ctx, HttpState) or map_type > MapType.HTTP_RESPONSE_TRAILERS:
            return None
        return self._live_map(ctx, map_type, create=True)

    @staticmethod
    def _live_map(ctx: HttpState, map_type: int, *, create: bool) -> HeaderMapState | None:
        direction = ctx.request if map_type in (MapType.HTTP_REQUEST_HEADERS,
                                                MapType.HTTP_REQUEST_TRAILERS) else ctx.response
        if map_type in (MapType.HTTP_REQUEST_HEADERS, MapType.HTTP_RESPONSE_HEADERS):
            return direction.headers if direction.headers_live else None
        if direction.trailers_live:
            return direction.trailers
        if create and direction.body_live and ctx.end_of_stream:
            # Envoy adds trailers on demand in the last body callback (addDecodedTrailers)
            direction.trailers = HeaderMapState()
            direction.trailers_live = True
            return direction.trailers
        return None

    def proxy_get_header_map_pairs(self, map_type: int) -> tuple[int, bytes]:
        if map_type > max(MapType):
            return Status.BAD_ARGUMENT, b""
        header_map, _ = self._readable_map("proxy_get_header_map_pairs", map_type)
        return _OK, serialize_pairs(header_map.pairs) if header_map is not None else b""

    def proxy_set_header_map_pairs(self, map_type: int, pairs: bytes) -> int:
        if map_type > max(MapType):
            return Status.BAD_ARGUMENT
        header_map = self._writable_map("proxy_set_header_map_pairs", map_type)
        if header_map is None:
            return Status.BAD_ARGUMENT
        header_map.set_all(host_pairs(pairs))
        return _OK

    def proxy_get_header_map_value(self, map_type: int, key: bytes) -> tuple[int, bytes]:
        if map_type > max(MapType):
            return Status.BAD_ARGUMENT, b""
        header_map, log_phase = self._readable_map("proxy_get_header_map_value", map_type)
        if header_map is None:
            return (Status.NOT_FOUND if log_phase else Status.BAD_ARGUMENT), b""
        value = header_map.get(key)
        return (Status.NOT_FOUND, b"") if value is None else (_OK, value)

    def proxy_add_header_map_value(self, map_type: int, key: bytes, value: bytes) -> int:
        return self._edit_map("proxy_add_header_map_value", map_type, lambda m: m.add(key, value))

    def proxy_replace_header_map_value(self, map_type: int, key: bytes, value: bytes) -> int:
        return self._edit_map("proxy_replace_header_map_value", map_type, lambda m: m.replace(key, value))

    def proxy_remove_header_map_value(self, map_type: int, key: bytes) -> int:
        return self._edit_map("proxy_remove_header_map_value", map_type, lambda m: m.remove(key))

    def _edit_map(self, call: str, map_type: int, edit: Callable[[HeaderMapState], None]) -> int:
        if map_type > max(MapType):
            return Status.BAD_ARGUMENT
        header_map = self._writable_map(call, map_type)
        if header_map is None:
            return Status.BAD_ARGUMENT
        edit(header_map)
        return _OK

    def proxy_get_header_map_size(self, map_type: int) -> tuple[int, int]:
        if map_type > max(MapType):
            return Status.BAD_ARGUMENT, 0
        header_map = self._writable_map("proxy_get_header_map_size", map_type)
        if header_map is None:
            return Status.BAD_ARGUMENT, 0
        return _OK, header_map.byte_size()

    # -- streams --------------------------------------------------------------------------------

    def proxy_continue_stream(self, stream_type: int) -> int:
        if stream_type > max(StreamType):
            return Status.BAD_ARGUMENT
        ctx = self._ctx("proxy_continue_stream")
        if stream_type == StreamType.UPSTREAM:
            return Status.UNIMPLEMENTED
        if stream_type == StreamType.DOWNSTREAM:
            if isinstance(ctx, TcpState):
                self.after_call.append(Deferred("continue", ctx.id, stream_type))
            return _OK
        if isinstance(ctx, HttpState):
            self.after_call.append(Deferred("continue", ctx.id, stream_type))
            # Envoy drops its request pointers right away, whichever direction continues
            ctx.request.headers_live = ctx.request.trailers_live = ctx.request.body_live = False
        return _OK

    def proxy_close_stream(self, stream_type: int) -> int:
        if stream_type > max(StreamType):
            return Status.BAD_ARGUMENT
        ctx = self._ctx("proxy_close_stream")
        http = stream_type in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE)
        if (http and isinstance(ctx, HttpState)) or (not http and isinstance(ctx, TcpState)):
            self.after_call.append(Deferred("close", ctx.id, stream_type))
        return _OK

    def proxy_send_local_response(self, status_code: int, details: str, body: bytes, headers: bytes,
                                  grpc_status: int) -> int:
        ctx = self._ctx("proxy_send_local_response")
        if isinstance(ctx, HttpState):
            pairs = [(k.lower(), v) for k, v in host_pairs(headers)]
            response = LocalResponse(
                status=status_code, body=bytes(body),
                headers=[(to_str(k), to_str(v)) for k, v in pairs],
                grpc_status=grpc_status if 0 <= grpc_status <= 16 else None,
                details=_replace_all_empty_space(details), callback=self.callback_name)
            self.after_call.append(Deferred("local_response", ctx.id, response=response))
        self.stop_iteration = True
        return _OK

    # -- calls ----------------------------------------------------------------------------------

    def proxy_get_status(self) -> tuple[int, int, bytes]:
        root = self._root_of(self._ctx("proxy_get_status"))
        return _OK, root.status_code, bytes(root.status_message)

    def _callout_id(self, kind: int) -> int:
        self._next_callout[kind] = (self._next_callout[kind] + _ID_INCREMENT) & 0xFFFFFFFF
        return self._next_callout[kind]

    def _unknown_cluster(self, call: str, cluster: str) -> None:
        known = ", ".join(sorted(self.config.clusters)) or "none"
        self.note(f"{call}: cluster {cluster!r} does not exist, so Envoy rejects the call "
                  f"(configured clusters: {known}; pass clusters=[...] to the MockHost)")

    def proxy_http_call(self, upstream: str, headers: bytes, body: bytes, trailers: bytes,
                        timeout_ms: int) -> tuple[int, int]:
        ctx = self._ctx("proxy_http_call")
        root = self._root_of(ctx)
        if timeout_ms >= 1 << 31:  # Envoy takes an int: this is negative there
            return Status.BAD_ARGUMENT, 0
        if upstream not in self.config.clusters:
            self._unknown_cluster("proxy_http_call", upstream)
            return Status.BAD_ARGUMENT, 0
        request = HeaderMapState(host_pairs(headers))
        if request.get(b":path") is None or request.get(b":method") is None or request.get(b":authority") is None:
            self.note("proxy_http_call: Envoy requires the :path, :method and :authority headers")
            return Status.BAD_ARGUMENT, 0
        if body:
            request.replace(b"content-length", str(len(body)).encode())
        call = HttpCall(self._callout_id(0), upstream, request.pairs, bytes(body),
                        [(k.lower(), v) for k, v in host_pairs(trailers)], timeout_ms, ctx.id, root.id,
                        self.answerer)
        self.http_calls.append(call)
        self._calls[call.token] = call
        return _OK, call.token

    def _grpc_cluster(self, call: str, service: bytes) -> tuple[int, str]:
        """The cluster of a gRPC service argument: a serialized GrpcService, else a cluster name."""
        try:
            fields = {n: v for n, _, v in _proto.fields(service)}
        except _proto.ProtoError:
            fields = None
        if fields is not None:
            envoy_grpc, google_grpc = fields.get(1), fields.get(2)
            if isinstance(envoy_grpc, bytes):
                try:
                    name = _proto.parse_strings(envoy_grpc, {1: "cluster_name"}).get("cluster_name", "")
                except _proto.ProtoError:
                    name = ""
                if name and name not in self.config.clusters:
                    self._unknown_cluster(call, name)
                return (_OK, name) if name else (Status.BAD_ARGUMENT, "")
            if isinstance(google_grpc, bytes):
                return _OK, ""
            if not service:
                return Status.BAD_ARGUMENT, ""
        name = to_str(service)
        if name not in self.config.clusters:
            self._unknown_cluster(call, name)
            return Status.PARSE_FAILURE, ""
        return _OK, name

    def proxy_grpc_call(self, service: bytes, service_name: str, method: str, metadata: bytes,
                        message: bytes, timeout_ms: int) -> tuple[int, int]:
        ctx = self._ctx("proxy_grpc_call")
        root = self._root_of(ctx)
        status, cluster = self._grpc_cluster("proxy_grpc_call", service)
        if status != _OK:
            return status, 0
        call = GrpcCall(self._callout_id(1), cluster, bytes(service), service_name, method,
                        host_pairs(metadata), bytes(message), timeout_ms, ctx.id, root.id, self.answerer)
        self.grpc_calls.append(call)
        self._calls[call.token] = call
        return _OK, call.token

    def proxy_grpc_stream(self, service: bytes, service_name: str, method: str,
                          metadata: bytes) -> tuple[int, int]:
        ctx = self._ctx("proxy_grpc_stream")
        root = self._root_of(ctx)
        status, cluster = self._grpc_cluster("proxy_grpc_stream", service)
        if status != _OK:
            return status, 0
        stream = GrpcStream(self._callout_id(2), cluster, bytes(service), service_name, method,
                            host_pairs(metadata), ctx.id, root.id, self.answerer)
        self.grpc_streams.append(stream)
        self._calls[stream.token] = stream
        return _OK, stream.token

    def proxy_grpc_send(self, token: int, message: bytes, end_of_stream: int) -> int:
        self._ctx("proxy_grpc_send")
        if token & _METRIC_TYPE_MASK != 2:
            return Status.BAD_ARGUMENT
        stream = self._calls.get(token)
        if not isinstance(stream, GrpcStream):
            return Status.NOT_FOUND
        stream.sent.append(bytes(message))
        if end_of_stream:
            stream.local_closed = True
        return _OK

    def proxy_grpc_cancel(self, token: int) -> int:
        self._ctx("proxy_grpc_cancel")
        if token & _METRIC_TYPE_MASK not in (1, 2):
            return Status.BAD_ARGUMENT
        call = self._calls.pop(token, None)
        if not isinstance(call, (GrpcCall, GrpcStream)):
            return Status.NOT_FOUND
        call.state = "cancelled"
        return _OK

    def proxy_grpc_close(self, token: int) -> int:
        self._ctx("proxy_grpc_close")
        kind = token & _METRIC_TYPE_MASK
        call = self._calls.get(token)
        if kind == 1:
            if not isinstance(call, GrpcCall):
                return Status.NOT_FOUND
            call.state = "cancelled"
            del self._calls[token]
            return _OK
        if kind == 2:
            if not isinstance(call, GrpcStream):
                return Status.NOT_FOUND
            call.local_closed = True
            if call.remote_closed:
                del self._calls[token]
            return _OK
        return Status.BAD_ARGUMENT

    def live_call(self, token: int) -> HttpCall | GrpcCall | GrpcStream | None:
        """The call or stream with this token, if Envoy still tracks it (for the driver)."""
        return self._calls.get(token)

    def end_call(self, token: int) -> None:
        self._calls.pop(token, None)

    # -- shared data and queues -----------------------------------------------------------------

    # Keys, queue names and metric names arrive as bytes (Envoy compares them byte for byte); the
    # stores keep them as str decoded with surrogateescape, which keeps every byte string distinct
    # and lets tests use plain str names.

    def proxy_set_shared_data(self, key: bytes, value: bytes, cas: int) -> int:
        self._ctx("proxy_set_shared_data")
        return self.shared.set(self.config.vm_id, to_str(key), value, cas)

    def proxy_get_shared_data(self, key: bytes) -> tuple[int, bytes, int]:
        self._ctx("proxy_get_shared_data")
        found = self.shared.get(self.config.vm_id, to_str(key))
        return (Status.NOT_FOUND, b"", 0) if found is None else (_OK, found[0], found[1])

    def proxy_register_shared_queue(self, name: bytes) -> tuple[int, int]:
        ctx = self._ctx("proxy_register_shared_queue")
        return _OK, self.shared.register_queue(self.config.vm_id, to_str(name), self, ctx.root_id)

    def proxy_resolve_shared_queue(self, vm_id: bytes, name: bytes) -> tuple[int, int]:
        self._ctx("proxy_resolve_shared_queue")
        token = self.shared.resolve_queue(to_str(vm_id) or self.config.vm_id, to_str(name))
        return (_OK, token) if token else (Status.NOT_FOUND, 0)

    def proxy_enqueue_shared_queue(self, queue_id: int, value: bytes) -> int:
        self._ctx("proxy_enqueue_shared_queue")
        return self.shared.enqueue(queue_id, value)

    def proxy_dequeue_shared_queue(self, queue_id: int) -> tuple[int, bytes]:
        self._ctx("proxy_dequeue_shared_queue")
        return self.shared.dequeue(queue_id)

    # -- metrics --------------------------------------------------------------------------------

    def proxy_define_metric(self, metric_type: int, name: bytes) -> tuple[int, int]:
        self._ctx("proxy_define_metric")
        if metric_type > max(MetricType):
            return Status.BAD_ARGUMENT, 0
        kind, text = MetricType(metric_type), to_str(name)
        metric = self._metrics.setdefault((kind, text), Metric(text, kind))
        self._next_metric[kind] += _ID_INCREMENT
        metric_id = self._next_metric[kind] & 0xFFFFFFFF
        self._metric_ids[metric_id] = metric
        return _OK, metric_id

    def proxy_increment_metric(self, metric_id: int, offset: int) -> int:
        self._ctx("proxy_increment_metric")
        kind = metric_id & _METRIC_TYPE_MASK
        if kind not in (MetricType.COUNTER, MetricType.GAUGE):
            return Status.BAD_ARGUMENT
        metric = self._metric_ids.get(metric_id)
        if metric is None:
            return Status.NOT_FOUND
        if kind == MetricType.COUNTER and offset <= 0:
            return Status.BAD_ARGUMENT
        metric.value += offset
        return _OK

    def proxy_record_metric(self, metric_id: int, value: int) -> int:
        self._ctx("proxy_record_metric")
        metric = self._metric_ids.get(metric_id)
        if metric is None:
            return Status.NOT_FOUND
        if metric.type == MetricType.COUNTER:
            metric.value += value
        elif metric.type == MetricType.GAUGE:
            metric.value = value
        else:
            metric.samples.append(value)
        return _OK

    def proxy_get_metric(self, metric_id: int) -> tuple[int, int]:
        self._ctx("proxy_get_metric")
        if metric_id & _METRIC_TYPE_MASK not in (MetricType.COUNTER, MetricType.GAUGE):
            return Status.BAD_ARGUMENT, 0
        metric = self._metric_ids.get(metric_id)
        if metric is None:
            return Status.NOT_FOUND, 0
        return _OK, metric.value & _U64

    # -- properties -----------------------------------------------------------------------------

    def proxy_get_property(self, path: bytes) -> tuple[int, bytes]:
        ctx = self._ctx("proxy_get_property")
        return lookup(path, lambda name: self._property(ctx, name))

    def proxy_set_property(self, path: bytes, value: bytes) -> int:
        ctx = self._ctx("proxy_set_property")
        if not isinstance(ctx, StreamCommon):
            return Status.NOT_FOUND  # a root context has no stream info
        ctx.filter_state["wasm." + to_str(path)] = bytes(value)
        return _OK

    def _property(self, ctx: ContextState, name: str) -> Any:
        """The value of top-level attribute ``name`` for ``ctx``: derived, then overridden by the
        test's properties, else (for names Envoy does not know) filter state ``wasm.<name>``."""
        stream = ctx if isinstance(ctx, StreamCommon) else None
        config = self.config
        plugin_level = {"plugin_name": config.plugin_name, "plugin_root_id": config.root_id,
                        "plugin_vm_id": config.vm_id}
        if name in plugin_level:
            derived: Any = plugin_level[name]
        else:
            derived = stream_attribute(stream, name) if stream is not None else MISSING
        if name == "xds":  # the node is known to every context, roots included
            node = config.node
            derived = merge(derived if derived is not MISSING else {}, {"node": _proto.node_message(
                str(node.get("id", "")), str(node.get("cluster", "")), node.get("metadata") or {})})
        override = merge(self.properties.get(name, MISSING),
                         stream.properties.get(name, MISSING) if stream is not None else MISSING)
        value = merge(derived, override)
        if value is MISSING and name not in ENVOY_ATTRIBUTES and stream is not None:
            value = stream.filter_state.get("wasm." + name, MISSING)
        return value

    # -- contexts, done, foreign functions ------------------------------------------------------

    def proxy_set_effective_context(self, context_id: int) -> int:
        self._ctx("proxy_set_effective_context")
        if context_id not in self.contexts:
            return Status.BAD_ARGUMENT
        self.effective = context_id
        return _OK

    def proxy_done(self) -> int:
        ctx = self._ctx("proxy_done")
        root = self._root_of(ctx)
        if not root.pending_done:
            return Status.NOT_FOUND
        root.pending_done = False
        self.after_call.append(Deferred("delete_root", root.id))
        return _OK

    def proxy_call_foreign_function(self, name: str, arguments: bytes) -> tuple[int, bytes]:
        ctx = self._ctx("proxy_call_foreign_function")
        custom = self.foreign_functions.get(name)
        if custom is not None:
            return _OK, bytes(custom(bytes(arguments)))
        try:
            return foreign.call(name, arguments, ctx, filter_state_keys=self.config.filter_state_keys,
                                note=self.note)
        except foreign.NotEmulated:
            raise self._fail(UnsupportedByMockHost(
                f"the plugin called Envoy's foreign function {name!r}, which the mock host does not "
                f"emulate; provide it with MockHost(..., foreign_functions={{{name!r}: fn}}) where fn "
                "takes the argument bytes and returns the result bytes")) from None

    # -- SDK imports: implemented by the build inside the .wasm, served here for native plugins --

    def pywasm_environ(self) -> tuple[int, bytes]:
        """The VM's environment variables as "K=V\\0" entries: what the build's WASI bridge reads
        with ``environ_get`` inside the .wasm (abi/proxy_wasm.yaml ``sdk_imports``)."""
        self._ctx("pywasm_environ")
        return _OK, b"".join(f"{k}={v}".encode("utf-8", "surrogateescape") + b"\0"
                             for k, v in self.config.env.items())

    # -- the test's view of a root --------------------------------------------------------------

    def require_root(self) -> RootState:
        if self.root is None or self.root.deleted:
            raise HostMisuseError("the plugin has no root context (the VM was shut down)")
        return self.root
