"""An HTTP stream and a TCP connection through the plugin, driven by a test as Envoy drives them.

Rule of this module: each ``send_*`` method is one event of Envoy's filter chain, run the way
Envoy runs it (``source/extensions/common/wasm/context.cc`` and the filter manager):

- The plugin's context is created when the request headers arrive; callbacks the plugin does not
  export are skipped and count as Continue.
- PAUSE on headers stops everything after them (Envoy turns StopIteration into
  StopAllIterationAndWatermark): later body and trailers are held, not shown to the plugin, until
  it resumes the stream; then they arrive in one body callback. PAUSE on a body chunk buffers it:
  the next body callback sees everything buffered so far.
- After a callback answers Continue, Envoy forgets its header map / body, so the plugin cannot
  reach them from later callbacks (e.g. request headers in on_response_headers).
- A local response is sent after the callback that asked for it: through this plugin's own
  response callbacks when the response had not started, straight to the client when the
  upstream's response was being filtered, and as a stream reset when headers already left.

A step Envoy would never take (a body after end_of_stream, response headers after a local
response, anything after ``complete()``) raises :class:`~.errors.HostMisuseError` naming what
Envoy does instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._abi import Action, PeerType, StreamType
from ..wire import to_bytes, to_str
from ._state import Direction, HeaderInput, HeaderMapState, HttpState, TcpState, normalize_pairs
from .errors import HostMisuseError
from .records import LocalResponse

if TYPE_CHECKING:
    from .host import Deferred
    from .mock import MockHost

__all__ = ["HttpStream", "TcpConnection"]

#: Envoy's Grpc::Utility::httpToGrpcStatus
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}


def _action(raw: int | None) -> Action | int:
    if raw is None:
        return Action.CONTINUE
    try:
        return Action(raw)
    except ValueError:
        return raw


def _text(header_map: HeaderMapState | None) -> list[tuple[str, str]]:
    return [] if header_map is None else [(to_str(k), to_str(v)) for k, v in header_map.pairs]


def _percent_encode(data: bytes) -> bytes:
    """Envoy's grpc-message encoding: '%' and bytes outside printable ASCII become %XX."""
    return b"".join(bytes([c]) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in data)


class HttpStream:
    """One HTTP request/response through the plugin. Get it from ``host.http_stream()``.

    Send the request (headers, then optionally body chunks and trailers), then the upstream's
    response, each ``send_*`` returning what the plugin's callback answered (CONTINUE when the
    plugin does not implement it, PAUSE when the data is held because the plugin paused earlier).
    End with :meth:`complete` (on_log, on_done, on_delete). Read the outcome from
    ``request_headers``, ``request_body`` (what the upstream gets), ``response_headers``,
    ``response_body`` (what the client gets), ``local_response`` and ``filter_state``.
    """

    def __init__(self, host: MockHost, state: HttpState) -> None:
        self._host = host
        self._state = state

    def __repr__(self) -> str:
        return f"<HttpStream context {self._state.id}>"

    # -- what the test reads --------------------------------------------------------------------

    @property
    def context_id(self) -> int:
        return self._state.id

    @property
    def request_headers(self) -> list[tuple[str, str]]:
        """The request headers as they are now (what the upstream gets), names lower-case.
        Bytes that are not UTF-8 appear as surrogates (``request_headers_bytes`` has the raw)."""
        return _text(self._state.request.headers)

    @property
    def request_headers_bytes(self) -> list[tuple[bytes, bytes]]:
        headers = self._state.request.headers
        return [] if headers is None else list(headers.pairs)

    @property
    def request_trailers(self) -> list[tuple[str, str]]:
        return _text(self._state.request.trailers)

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The response headers the client gets (the upstream's, or the local response's)."""
        return _text(self._state.response.headers)

    @property
    def response_headers_bytes(self) -> list[tuple[bytes, bytes]]:
        headers = self._state.response.headers
        return [] if headers is None else list(headers.pairs)

    @property
    def response_trailers(self) -> list[tuple[str, str]]:
        return _text(self._state.response.trailers)

    def request_header(self, name: str) -> str | None:
        """The first value of a request header as it is now, or None."""
        headers = self._state.request.headers
        value = headers.get(to_bytes(name)) if headers is not None else None
        return None if value is None else to_str(value)

    def response_header(self, name: str) -> str | None:
        """The first value of a response header as it is now, or None."""
        headers = self._state.response.headers
        value = headers.get(to_bytes(name)) if headers is not None else None
        return None if value is None else to_str(value)

    @property
    def request_body(self) -> bytes:
        """The request body as the upstream gets it: what passed the plugin plus what it holds
        (once the stream is reset, only what passed: Envoy drops what it held)."""
        return self._body_seen(self._state.request)

    @property
    def response_body(self) -> bytes:
        """The response body as the client gets it (passed plus held; after a reset, only what
        passed before it)."""
        return self._body_seen(self._state.response)

    def _body_seen(self, direction: Direction) -> bytes:
        return bytes(direction.forwarded) if self._state.reset else direction.body_so_far()

    @property
    def local_response(self) -> LocalResponse | None:
        """The response the plugin sent itself, or None."""
        return self._state.local_response

    @property
    def filter_state(self) -> dict[str, Any]:
        """Filter state of the stream: ``set_property`` values under ``"wasm.<path>"`` (bytes),
        ``set_envoy_filter_state`` values under their key (str)."""
        return self._state.filter_state

    @property
    def properties(self) -> dict[str, Any]:
        """Properties the test provides for this stream only (mutable, override the host's)."""
        return self._state.properties

    @property
    def reset(self) -> str | None:
        """Why the stream was reset (``"wasm_close_stream"``...), or None."""
        return self._state.reset

    @property
    def request_paused(self) -> bool:
        """The plugin stopped the request (PAUSE) and has not resumed it."""
        return self._state.request.stopped is not None

    @property
    def response_paused(self) -> bool:
        return self._state.response.stopped is not None

    @property
    def route_cache_cleared(self) -> int:
        """How many times the plugin called the ``clear_route_cache`` foreign function."""
        return self._state.route_cache_cleared

    @property
    def completed(self) -> bool:
        return self._state.completed

    # -- driving --------------------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        self._host._check_usable()
        state = self._state
        if state.completed:
            raise HostMisuseError(f"{what}: complete() was called; the stream is over")
        if state.reset:
            raise HostMisuseError(f"{what}: the plugin reset the stream ({state.reset}); Envoy sends "
                                  "nothing more on it (complete() is still allowed)")

    def _ensure_context(self) -> None:
        state = self._state
        if not state.created:
            state.created = True
            self._host._run(state.id, "proxy_on_context_create", state.id, state.root_id)

    def _check_request(self, what: str, *, headers: bool = False) -> Direction:
        self._check_open(what)
        state, request = self._state, self._state.request
        if headers and request.started:
            raise HostMisuseError(f"{what}: the request headers were already sent")
        if not headers and not request.started:
            raise HostMisuseError(f"{what}: send the request headers first")
        if not headers and request.ended:
            raise HostMisuseError(f"{what}: the request already ended (end_of_stream was sent); "
                                  "nothing can follow it")
        if state.local_reply_sent:
            raise HostMisuseError(f"{what}: the plugin answered with a local response "
                                  f"({self._local_status()}); Envoy stops reading the request")
        return request

    def _local_status(self) -> str:
        response = self._state.local_response
        return f"{response.status} sent in {response.callback}" if response else "sent"

    def _check_response(self, what: str, *, headers: bool = False) -> Direction:
        self._check_open(what)
        state, response = self._state, self._state.response
        if state.local_reply_sent:
            raise HostMisuseError(
                f"{what}: the plugin answered with a local response ({self._local_status()}); Envoy "
                "sends it to the client and never asks the upstream, so there is no upstream "
                "response to send. Assert on stream.local_response / stream.response_headers")
        if headers:
            if not state.request.started:
                raise HostMisuseError(f"{what}: send the request headers first; an upstream answers a request")
            if not state.request.headers_passed:
                raise HostMisuseError(
                    f"{what}: the plugin paused the request headers and did not resume them, so the "
                    "upstream never got the request. Resume it first (e.g. answer the plugin's HTTP "
                    "call) or assert stream.request_paused")
            if response.started:
                raise HostMisuseError(f"{what}: the response headers were already sent")
        else:
            if not response.started:
                raise HostMisuseError(f"{what}: send the response headers first")
            if response.ended:
                raise HostMisuseError(f"{what}: the response already ended (end_of_stream was sent)")
        return response

    def send_request_headers(self, headers: HeaderInput, end_of_stream: bool = False) -> Action | int:
        """The client's request headers arrive: ``proxy_on_request_headers``.

        ``headers`` are (name, value) pairs or a mapping, str or bytes; names are lower-cased as
        Envoy's codecs do. Include the pseudo-headers you need (``:method``, ``:path``,
        ``:authority``, ``:scheme``).
        """
        request = self._check_request("send_request_headers", headers=True)
        self._ensure_context()
        request.started, request.ended = True, end_of_stream
        return self._headers(request, "request", HeaderMapState(normalize_pairs(headers)), end_of_stream)

    def send_request_body(self, data: bytes | str, end_of_stream: bool = False) -> Action | int:
        """A chunk of the request body arrives: ``proxy_on_request_body`` (held, and PAUSE
        returned, while the plugin keeps the request headers paused)."""
        request = self._check_request("send_request_body")
        request.ended = end_of_stream
        return self._body(request, "request", to_bytes(data), end_of_stream)

    def send_request_trailers(self, trailers: HeaderInput) -> Action | int:
        """The request trailers arrive (they end the request): ``proxy_on_request_trailers``."""
        request = self._check_request("send_request_trailers")
        request.ended = True
        return self._trailers(request, "request", HeaderMapState(normalize_pairs(trailers)))

    def send_response_headers(self, headers: HeaderInput, end_of_stream: bool = False) -> Action | int:
        """The upstream's response headers arrive: ``proxy_on_response_headers``. Include
        ``:status``."""
        response = self._check_response("send_response_headers", headers=True)
        response.started, response.ended = True, end_of_stream
        self._state.response_code_details = self._state.response_code_details or "via_upstream"
        return self._headers(response, "response", HeaderMapState(normalize_pairs(headers)), end_of_stream)

    def send_response_body(self, data: bytes | str, end_of_stream: bool = False) -> Action | int:
        """A chunk of the upstream's response body: ``proxy_on_response_body``."""
        response = self._check_response("send_response_body")
        response.ended = end_of_stream
        return self._body(response, "response", to_bytes(data), end_of_stream)

    def send_response_trailers(self, trailers: HeaderInput) -> Action | int:
        """The upstream's response trailers: ``proxy_on_response_trailers``."""
        response = self._check_response("send_response_trailers")
        response.ended = True
        return self._trailers(response, "response", HeaderMapState(normalize_pairs(trailers)))

    def complete(self) -> None:
        """The stream ends: ``proxy_on_log`` (headers readable as the access log sees them), then
        ``proxy_on_done`` and ``proxy_on_delete``. Nothing can be sent afterwards."""
        host, state = self._host, self._state
        host._check_usable()
        if state.completed:
            raise HostMisuseError("complete() was already called for this stream")
        self._ensure_context()  # Envoy creates the context for the log if no callback did
        state.access_log_phase = True
        try:
            host._run(state.id, "proxy_on_log", state.id)
        finally:
            state.access_log_phase = False
        host._drain()
        host._run(state.id, "proxy_on_done", state.id)  # a stream's answer is ignored by Envoy
        host._drain()
        host._run(state.id, "proxy_on_delete", state.id)
        state.completed = True
        host._forget_stream(state.id)
        host._drain()

    # -- one filter-chain step each -------------------------------------------------------------

    def _stopped(self, raw: int | None) -> bool:
        forced = self._host._stop_requested()  # read (and clear) even when raw decides
        return forced or (raw is not None and raw != 0)

    def _headers_stop(self, raw: int | None) -> str | None:
        """Where a headers callback's answer stops the stream (cpp-host
        convertVmCallResultToFilterHeadersStatus): None, "headers" (StopAllIteration: data is held
        back from the plugin too) or "headers only" (StopIteration, only when the plugin config
        has allow_on_headers_stop_iteration: later data still reaches the plugin)."""
        forced = self._host._stop_requested()
        if forced:
            return "headers"
        if raw is None or raw in (0, 2):  # Continue, ContinueAndEndStream
            return None
        if raw == 1 and self._host.state.config.allow_on_headers_stop_iteration:
            return "headers only"
        return "headers"

    def _headers(self, direction: Direction, which: str, headers: HeaderMapState, end: bool) -> Action | int:
        host, state = self._host, self._state
        direction.headers, direction.headers_live = headers, True
        state.end_of_stream = end
        raw = host._run(state.id, f"proxy_on_{which}_headers", state.id, len(headers), int(end))
        direction.stopped = self._headers_stop(raw)
        if direction.stopped is None:
            direction.headers_live, direction.headers_passed = False, True
        host._drain()
        return _action(raw)

    def _body(self, direction: Direction, which: str, data: bytes, end: bool) -> Action | int:
        if direction.stopped == "headers":
            direction.held += data
            direction.held_end, direction.has_held = end, True
            return Action.PAUSE
        return self._deliver_body(direction, which, data, end)

    def _deliver_body(self, direction: Direction, which: str, data: bytes, end: bool) -> Action | int:
        host, state = self._host, self._state
        if direction.buffering:
            direction.body += data
        else:
            direction.body = bytearray(data)
        direction.body_live = True
        state.end_of_stream = end
        raw = host._run(state.id, f"proxy_on_{which}_body", state.id, len(direction.body), int(end))
        if self._stopped(raw):
            direction.buffering, direction.stopped = True, "body"
        else:
            self._forward_body(direction)
        host._drain()
        return _action(raw)

    def _trailers(self, direction: Direction, which: str, trailers: HeaderMapState) -> Action | int:
        if direction.stopped == "headers":
            direction.held_trailers, direction.has_held = trailers, True
            return Action.PAUSE
        return self._deliver_trailers(direction, which, trailers)

    def _deliver_trailers(self, direction: Direction, which: str, trailers: HeaderMapState) -> Action | int:
        host, state = self._host, self._state
        direction.trailers, direction.trailers_live = trailers, True
        raw = host._run(state.id, f"proxy_on_{which}_trailers", state.id, len(trailers))
        if self._stopped(raw):
            direction.stopped = "trailers"
        else:
            direction.trailers_live = False
            self._forward_body(direction)
        host._drain()
        return _action(raw)

    @staticmethod
    def _forward_body(direction: Direction) -> None:
        """The plugin let the buffered body go (the headers too, unless it still holds them)."""
        direction.forwarded += direction.body
        direction.body = bytearray()
        direction.body_live = direction.buffering = False
        if direction.stopped in ("body", "trailers"):
            direction.stopped = None

    # -- what the plugin asked for, applied after its callback ----------------------------------

    def _apply(self, deferred: Deferred) -> None:
        state = self._state
        if state.completed:
            return
        if deferred.kind == "local_response":
            assert deferred.response is not None
            self._local_response(deferred.response)
        elif deferred.kind == "continue" and not state.reset:
            if deferred.stream_type == StreamType.HTTP_REQUEST:
                self._continue(state.request, "request")
            else:
                self._continue(state.response, "response")
        elif deferred.kind == "close":
            self._reset("wasm_close_stream")

    def _continue(self, direction: Direction, which: str) -> None:
        if direction.stopped is None or (which == "request" and self._state.local_reply_sent):
            return  # after a local reply the request goes nowhere; the reply itself may resume
        previous, direction.stopped = direction.stopped, None
        if previous not in ("headers", "headers only"):
            direction.trailers_live = False
            self._forward_body(direction)
            return
        direction.headers_passed = True
        if not direction.has_held:
            return
        data, end, trailers = bytes(direction.held), direction.held_end, direction.held_trailers
        direction.held, direction.held_end = bytearray(), False
        direction.held_trailers, direction.has_held = None, False
        if data or end:
            self._deliver_body(direction, which, data, end)
        if trailers is not None and not self._state.reset and not self._state.local_reply_sent:
            self._deliver_trailers(direction, which, trailers)

    def _reset(self, details: str) -> None:
        state = self._state
        state.reset = details
        state.response_code_details = state.response_code_details or details

    def _local_response(self, reply: LocalResponse) -> None:
        state, response = self._state, self._state.response
        if state.local_response is None:
            state.local_response = reply
        if reply.details:
            state.response_code_details = reply.details
        if response.headers_passed or state.local_reply_sent:
            # the client already has response headers: all Envoy can do is reset the stream
            self._reset("local reply after the response started")
            return
        headers, body, end_at_headers = self._reply_message(reply)
        state.local_reply_sent = True
        if response.started:
            # the upstream's response is being filtered: Envoy replies directly, bypassing filters
            response.headers, response.headers_live, response.headers_passed = headers, False, True
            response.trailers, response.trailers_live = None, False
            response.body, response.body_live, response.buffering = bytearray(), False, False
            response.forwarded = bytearray(body)
            response.held, response.has_held, response.held_trailers = bytearray(), False, None
            response.stopped, response.ended = None, True
            return
        # the response has not started: it goes through the filter chain, this plugin included
        response.started, response.ended = True, True
        self._headers(response, "response", headers, end_at_headers)
        if not end_at_headers:
            if response.stopped == "headers":
                response.held, response.held_end, response.has_held = bytearray(body), True, True
            else:
                self._deliver_body(response, "response", body, True)

    def _reply_message(self, reply: LocalResponse) -> tuple[HeaderMapState, bytes, bool]:
        """The response Envoy's sendLocalReply builds (Http::Utility::encodeLocalReply)."""
        request = self._state.request.headers or HeaderMapState()
        headers = HeaderMapState([(b":status", str(reply.status).encode())])
        for name, value in reply.headers:
            headers.add(to_bytes(name), to_bytes(value))
        content_type = request.get(b"content-type") or b""
        if content_type.startswith(b"application/grpc"):
            grpc = reply.grpc_status if reply.grpc_status is not None else _HTTP_TO_GRPC.get(reply.status, 2)
            headers.replace(b":status", b"200")
            headers.replace(b"content-type", b"application/grpc")
            headers.replace(b"grpc-status", str(grpc).encode())
            if reply.body:
                headers.replace(b"grpc-message", _percent_encode(reply.body))
            return headers, b"", True
        if reply.body:
            headers.replace(b"content-length", str(len(reply.body)).encode())
            if headers.get(b"content-type") is None:
                headers.add(b"content-type", b"text/plain")
        if request.get(b":method") == b"HEAD":
            return headers, b"", True
        return headers, reply.body, not reply.body


class TcpConnection:
    """One TCP connection through the plugin (a network filter). Get it from
    ``host.tcp_connection()``.

    :meth:`connect` first (``proxy_on_new_connection``), then bytes from either side with
    :meth:`send_downstream` (from the client) and :meth:`send_upstream` (from the server), then
    :meth:`close`. ``to_upstream`` / ``to_downstream`` are the bytes that passed the plugin in
    each direction; ``filter_state`` shows what the plugin set (``envoy.tcp_proxy.cluster``).
    """

    def __init__(self, host: MockHost, state: TcpState) -> None:
        self._host = host
        self._state = state

    def __repr__(self) -> str:
        return f"<TcpConnection context {self._state.id}>"

    @property
    def context_id(self) -> int:
        return self._state.id

    @property
    def filter_state(self) -> dict[str, Any]:
        """Filter state of the connection (``envoy.tcp_proxy.cluster`` after the plugin set it)."""
        return self._state.filter_state

    @property
    def properties(self) -> dict[str, Any]:
        """Properties the test provides for this connection only (mutable)."""
        return self._state.properties

    @property
    def to_upstream(self) -> bytes:
        """Bytes from the client that passed the plugin toward the upstream."""
        return bytes(self._state.to_upstream)

    @property
    def to_downstream(self) -> bytes:
        """Bytes from the upstream that passed the plugin toward the client."""
        return bytes(self._state.to_downstream)

    @property
    def downstream_paused(self) -> bool:
        return self._state.downstream_stopped

    @property
    def upstream_paused(self) -> bool:
        return self._state.upstream_stopped

    @property
    def closed(self) -> bool:
        """The connection is closed (by the test, or by the plugin's close_stream)."""
        return self._state.downstream_closed

    @property
    def close_reason(self) -> str | None:
        return self._state.close_reason

    def _check_open(self, what: str) -> None:
        self._host._check_usable()
        state = self._state
        if not state.connected:
            raise HostMisuseError(f"{what}: call connect() first (Envoy runs on_new_connection first)")
        if state.downstream_closed:
            raise HostMisuseError(f"{what}: the connection is closed ({state.close_reason})")

    def connect(self) -> Action | int:
        """The client connected: the context is created and ``proxy_on_new_connection`` runs."""
        host, state = self._host, self._state
        host._check_usable()
        if state.connected:
            raise HostMisuseError("connect(): the connection is already established")
        state.connected = state.created = True
        host._run(state.id, "proxy_on_context_create", state.id, state.root_id)
        raw = host._run(state.id, "proxy_on_new_connection", state.id)
        host._drain()
        return _action(raw)

    def send_downstream(self, data: bytes | str, end_of_stream: bool = False) -> Action | int:
        """Bytes from the client: ``proxy_on_downstream_data`` (after a PAUSE the plugin sees
        them appended to what it held back)."""
        self._check_open("send_downstream")
        state = self._state
        if state.downstream_ended:
            raise HostMisuseError("send_downstream: the client already ended its side (end_of_stream)")
        state.downstream_ended = end_of_stream
        return self._data("downstream", to_bytes(data), end_of_stream)

    def send_upstream(self, data: bytes | str, end_of_stream: bool = False) -> Action | int:
        """Bytes from the upstream: ``proxy_on_upstream_data``. With ``end_of_stream`` Envoy then
        reports the upstream closed: ``proxy_on_upstream_connection_close(UNKNOWN)``."""
        self._check_open("send_upstream")
        state = self._state
        if state.upstream_ended:
            raise HostMisuseError("send_upstream: the upstream already ended its side (end_of_stream)")
        state.upstream_ended = end_of_stream
        action = self._data("upstream", to_bytes(data), end_of_stream)
        if end_of_stream and not state.upstream_closed:
            state.upstream_closed = True
            self._host._run(state.id, "proxy_on_upstream_connection_close", state.id, PeerType.UNKNOWN)
            if state.downstream_closed:
                self._finish()
            self._host._drain()
        return action

    def close(self, peer: PeerType = PeerType.REMOTE) -> None:
        """The client connection closes (REMOTE: the client closed it; LOCAL: the proxy did):
        ``proxy_on_downstream_connection_close``, then on_done, on_log and on_delete."""
        self._check_open("close")
        self._close(PeerType(peer), "closed by the client" if peer == PeerType.REMOTE else "closed by the proxy")

    def _close(self, peer: PeerType, reason: str) -> None:
        host, state = self._host, self._state
        state.downstream_closed, state.close_reason = True, reason
        host._run(state.id, "proxy_on_downstream_connection_close", state.id, peer)
        self._finish()
        host._drain()

    def _finish(self) -> None:
        host, state = self._host, self._state
        if state.completed:
            return
        state.completed = True
        for name in ("proxy_on_done", "proxy_on_log", "proxy_on_delete"):
            host._run(state.id, name, state.id)
        host._forget_stream(state.id)

    def _data(self, side: str, data: bytes, end: bool) -> Action | int:
        host, state = self._host, self._state
        downstream = side == "downstream"
        stopped = state.downstream_stopped if downstream else state.upstream_stopped
        buffer = state.downstream if downstream else state.upstream
        if stopped:
            buffer += data  # Envoy's connection buffer still holds what the plugin held back
        else:
            buffer[:] = data
        if downstream:
            state.downstream_live = True
        else:
            state.upstream_live = True
        raw = host._run(state.id, f"proxy_on_{side}_data", state.id, len(buffer), int(end))
        host._stop_requested()
        if raw is not None and raw != 0:
            if downstream:
                state.downstream_stopped = True
            else:
                state.upstream_stopped = True
        else:
            self._forward(side)
        host._drain()
        return _action(raw)

    def _forward(self, side: str) -> None:
        state = self._state
        if side == "downstream":
            state.to_upstream += state.downstream
            state.downstream[:] = b""
            state.downstream_live = state.downstream_stopped = False
        else:
            state.to_downstream += state.upstream
            state.upstream[:] = b""
            state.upstream_live = state.upstream_stopped = False

    def _apply(self, deferred: Deferred) -> None:
        state = self._state
        if state.completed:
            return
        if deferred.kind == "continue" and deferred.stream_type == StreamType.DOWNSTREAM:
            if state.downstream_stopped:
                self._forward("downstream")
        elif deferred.kind == "close" and not state.downstream_closed:
            self._close(PeerType.LOCAL, "closed by the plugin (close_stream)")
