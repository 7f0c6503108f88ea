"""HTTP and gRPC calls from a plugin, answered later, with callbacks or with ``await``.

The proxy answers a call in a later callback on the ROOT context, identified by a token. A
:class:`Calls` (one per runtime) keeps which context made each call (token -> waiter), and when
the answer arrives makes that context the effective one (``proxy_set_effective_context``) before
running the author's code, so headers, local responses and resumes act on the right stream.

Two styles:

- callbacks: ``token = self.dispatch_http_call(cluster, ..., callback=fn)``; ``fn(response)``
  runs when the answer arrives (default: ``self.on_http_call_response(token, response)``);
- ``await``: ``response = await self.http_call(cluster, ...)`` inside an ``async def``
  callback. The SDK answers PAUSE to the proxy, resumes the coroutine with the answer, and
  continues the stream when the coroutine returns CONTINUE (or nothing). A failed or timed-out
  call raises :class:`HttpCallError` / :class:`GrpcCallError` inside the coroutine. A call
  that is never awaited is never made: the SDK logs a warning naming it.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine

from . import _boundary, hostcalls, log
from ._abi import Action, BufferType, LogLevel, MapType
from ._protobuf import field_bytes
from .errors import PyWasmError
from .http import HeaderPairs, pairs_to_bytes
from .wire import Pairs, to_bytes, to_str

TYPE_CHECKING = False  # typing is not imported at run time: it would weigh on every plugin
if TYPE_CHECKING:
    from collections.abc import Generator
    from typing import Any

    from ._runtime import Runtime

_COROUTINE = types.CoroutineType
_CONTINUE = int(Action.CONTINUE)
_PAUSE = int(Action.PAUSE)


class HttpCallError(PyWasmError):
    """An HTTP call got no response from the upstream: the timeout passed, the connection
    failed or was reset, or the cluster had no healthy host."""


#: Envoy answers a call that got no upstream response with a local reply of its own (504 after
#: the timeout, 503 when connecting failed) instead of reporting a failure; these are its texts.
_ENVOY_FAILURE_BODIES = (
    (504, b"upstream request timeout", "timeout"),
    (504, b"upstream max stream duration reached", "timeout"),
    (503, b"upstream connect error or disconnect/reset before headers", "connection failure"),
    (503, b"no healthy upstream", "no healthy upstream"),
)


def envoy_failure(response: HttpResponse) -> str | None:
    """The failure an HTTP call response stands for, when it is Envoy's own local reply
    (its status and text, no ``date`` header: an upstream's reply has one), else None."""
    status = response.status
    if status not in (503, 504) or response.header("date") is not None:
        return None
    for code, text, reason in _ENVOY_FAILURE_BODIES:
        if status == code and response.body.startswith(text):
            return f"{reason} ({response.body.decode(errors='replace')})"
    return None


class GrpcCallError(PyWasmError):
    """A gRPC call ended with a status other than OK; ``.status`` and ``.message`` say why."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(f"gRPC status {status}: {message}" if message else f"gRPC status {status}")


class HttpResponse:
    """The answer to an HTTP call."""

    __slots__ = ("headers", "body", "trailers", "error")

    def __init__(self, headers: list[tuple[str, str]], body: bytes, trailers: list[tuple[str, str]],
                 error: str | None = None) -> None:
        self.headers = headers
        self.body = body
        self.trailers = trailers
        #: set when the call failed (no headers arrived): the proxy's reason
        self.error = error

    def __repr__(self) -> str:
        return (f"HttpResponse(headers={self.headers!r}, body={self.body!r}, trailers={self.trailers!r}, "
                f"error={self.error!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HttpResponse):
            return NotImplemented
        return (self.headers, self.body, self.trailers, self.error) == (
            other.headers, other.body, other.trailers, other.error)

    __hash__ = None  # type: ignore[assignment]

    @property
    def status(self) -> int | None:
        """The HTTP status code, or None when the call failed."""
        value = self.header(":status")
        return int(value) if value and value.isdigit() else None

    def header(self, name: str) -> str | None:
        """The first value of a response header (names are lower-case)."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, "replace")


class GrpcResponse:
    """The answer to a unary gRPC call that ended with status OK.

    Envoy passes no response metadata of a unary call to a plugin (its unary gRPC client has no
    callback for it), so in Envoy ``initial_metadata`` and ``trailing_metadata`` are empty; open
    the method as a stream to read the server's metadata (docs/callouts.md).
    """

    __slots__ = ("message", "initial_metadata", "trailing_metadata")

    def __init__(self, message: bytes, initial_metadata: list[tuple[str, str]] | None = None,
                 trailing_metadata: list[tuple[str, str]] | None = None) -> None:
        self.message = message
        self.initial_metadata = initial_metadata if initial_metadata is not None else []
        self.trailing_metadata = trailing_metadata if trailing_metadata is not None else []

    def __repr__(self) -> str:
        return (f"GrpcResponse(message={self.message!r}, initial_metadata={self.initial_metadata!r}, "
                f"trailing_metadata={self.trailing_metadata!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GrpcResponse):
            return NotImplemented
        return (self.message, self.initial_metadata, self.trailing_metadata) == (
            other.message, other.initial_metadata, other.trailing_metadata)

    __hash__ = None  # type: ignore[assignment]


class GrpcStreamHandler:
    """Subclass to receive what a gRPC stream sends back (each runs in the opener's context)."""

    def on_initial_metadata(self, metadata: list[tuple[str, str]]) -> None: ...
    def on_message(self, message: bytes) -> None: ...
    def on_trailing_metadata(self, metadata: list[tuple[str, str]]) -> None: ...
    def on_close(self, status: int, message: str) -> None: ...


class GrpcStream:
    """An open gRPC stream: send messages, half-close, cancel."""

    def __init__(self, token: int, handlers: dict[int, Any] | None = None) -> None:
        self.token = token
        self._handlers = handlers  # where the SDK routes this stream's events (forgotten on cancel)

    def send(self, message: bytes, end_of_stream: bool = False) -> None:
        hostcalls.grpc_send(self.token, to_bytes(message), end_of_stream)

    def close(self) -> None:
        """Half-close: no more messages from this side."""
        hostcalls.grpc_close(self.token)

    def cancel(self) -> None:
        """Reset the stream. Envoy then forgets the token: no callback of it runs again."""
        hostcalls.grpc_cancel(self.token)
        if self._handlers is not None:
            self._handlers.pop(self.token, None)


# -- waiters: who is waiting for which token ------------------------------------------------

class _Waiter:
    """Someone waiting for the answer to a call made from ``context_id``."""

    __slots__ = ("context_id",)

    def __init__(self, context_id: int) -> None:
        self.context_id = context_id


class _Callback(_Waiter):
    __slots__ = ("fn",)

    def __init__(self, context_id: int, fn: Callable[[Any], object]) -> None:
        super().__init__(context_id)
        self.fn = fn


class _Resume(_Waiter):
    """A coroutine suspended in an ``await`` of a call; resumes ``stream`` when it finishes."""

    __slots__ = ("coroutine", "stream", "where")

    def __init__(self, context_id: int, coroutine: Coroutine[Any, Any, Any], stream: int | None,
                 where: str) -> None:
        super().__init__(context_id)
        self.coroutine, self.stream, self.where = coroutine, stream, where


class _GrpcCallState:
    __slots__ = ("waiter", "initial", "trailing")

    def __init__(self, waiter: _Waiter) -> None:
        self.waiter = waiter
        self.initial: list[tuple[str, str]] = []
        self.trailing: list[tuple[str, str]] = []


def callback_waiter(context_id: int, fn: Callable[[Any], object]) -> _Waiter:
    return _Callback(context_id, fn)


def _owner(waiter: _Waiter | _GrpcCallState) -> int:
    return waiter.waiter.context_id if isinstance(waiter, _GrpcCallState) else waiter.context_id


def _quietly(fn: Callable[..., Any], arg: Any, context_id: int) -> None:
    """Clean up without letting a failure stop the rest of the clean-up."""
    try:
        fn() if arg is None else fn(arg)
    except BaseException:
        _boundary.report(context_id, "cleaning up the calls of a finished stream")


# -- making calls ---------------------------------------------------------------------------

def http_headers(method: str, path: str, authority: str, headers: HeaderPairs | None) -> Pairs:
    """The request headers of a call: the pseudo-headers Envoy requires, then the others."""
    extra = pairs_to_bytes(headers)
    given = {k.lower() for k, _ in extra}
    pseudo = [(k, to_bytes(v)) for k, v in ((b":method", method), (b":path", path), (b":authority", authority))
              if k not in given]
    return pseudo + extra


def grpc_service(cluster: str) -> bytes:
    """envoy.config.core.v3.GrpcService{envoy_grpc: {cluster_name: cluster}}, serialized."""
    return field_bytes(1, field_bytes(1, cluster.encode()))


class Pending:
    """What ``await self.http_call(...)`` waits on: the coroutine yields it to the driver,
    which starts the call with itself as the waiter. One that is dropped without being awaited
    never made its call: it says so in the log (as Python does for a coroutine never awaited)."""

    __slots__ = ("start", "what", "awaited")

    def __init__(self, start: Callable[[_Waiter], int], what: str) -> None:
        self.start = start
        self.what = what
        self.awaited = False

    def __await__(self) -> Generator[Pending, Any, Any]:
        self.awaited = True
        return (yield self)

    def __del__(self) -> None:
        if not self.awaited:
            log.write_unconditionally(
                LogLevel.WARN, f"pywasm: {self.what} was never awaited, so the call was not made: write "
                "`await` before it in an `async def` callback (or use dispatch_http_call / "
                "dispatch_grpc_call with a callback)")


class Calls:
    """The calls of one runtime that wait for answers, and the coroutines that await them.

    token -> waiter for HTTP calls, unary gRPC calls and gRPC streams (tokens of the three
    kinds never collide: the host keeps their kind in the low bits).
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._http: dict[int, _Waiter] = {}
        self._grpc: dict[int, _GrpcCallState] = {}
        self._streams: dict[int, tuple[int, GrpcStreamHandler]] = {}

    def idle(self) -> bool:
        """Whether no call or stream is waiting for an answer."""
        return not (self._http or self._grpc or self._streams)

    def forget_context(self, context_id: int) -> None:
        """The context is gone: drop what waits for it (closing suspended coroutines)."""
        if self.idle():
            return
        for table in (self._http, self._grpc):
            for token in [t for t, w in table.items() if _owner(w) == context_id]:
                waiter = table.pop(token)
                resume = waiter.waiter if isinstance(waiter, _GrpcCallState) else waiter
                if table is self._grpc:
                    _quietly(hostcalls.grpc_cancel, token, context_id)
                if isinstance(resume, _Resume):
                    _quietly(resume.coroutine.close, None, context_id)
        for token in [t for t, (cid, _) in self._streams.items() if cid == context_id]:
            del self._streams[token]
            _quietly(hostcalls.grpc_cancel, token, context_id)

    # -- making calls -----------------------------------------------------------------------

    def send_http(self, cluster: str, headers: Pairs, body: bytes, trailers: Pairs, timeout_ms: int,
                  waiter: _Waiter) -> int:
        """Start an HTTP call whose answer goes to ``waiter``."""
        token = hostcalls.http_call(cluster, headers, body, trailers, timeout_ms)
        self._http[token] = waiter
        return token

    def send_grpc(self, cluster: str, service: str, method: str, metadata: Pairs, message: bytes,
                  timeout_ms: int, waiter: _Waiter) -> int:
        """Start a unary gRPC call whose answer goes to ``waiter``."""
        token = hostcalls.grpc_call(grpc_service(cluster), service, method, metadata, message, timeout_ms)
        self._grpc[token] = _GrpcCallState(waiter)
        return token

    def open_grpc_stream(self, context_id: int, cluster: str, service: str, method: str, metadata: Pairs,
                         handler: GrpcStreamHandler) -> GrpcStream:
        token = hostcalls.grpc_stream(grpc_service(cluster), service, method, metadata)
        self._streams[token] = (context_id, handler)
        return GrpcStream(token, self._streams)

    # -- driving async callbacks ------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, Any], context_id: int, stream: int | None, where: str) -> int:
        """Run an async callback to its first await; the action for the host: the callback's
        own when it finished, PAUSE while it awaits a call (``stream`` is continued when it
        returns CONTINUE later; None: nothing to continue)."""
        return self._step(coroutine, context_id, stream, where, None, None, first=True)

    def _step(self, coroutine: Coroutine[Any, Any, Any], context_id: int, stream: int | None, where: str,
              value: Any, error: BaseException | None, first: bool = False) -> int:
        """Run a coroutine to its next await (or its end). Returns the action for a first run."""
        try:
            awaited = coroutine.throw(error) if error is not None else coroutine.send(value)
        except StopIteration as done:
            action = _CONTINUE if done.value is None else int(done.value)
            if not first and action == _CONTINUE and stream is not None:
                hostcalls.continue_stream(stream)
            return action
        except BaseException:
            _boundary.report(context_id, where)
            if not first and stream is not None:
                _resume_quietly(context_id, stream, where)
            return _CONTINUE
        if not isinstance(awaited, Pending):
            coroutine.close()
            try:
                raise TypeError(f"{where}: a plugin callback can only await the SDK's calls "
                                f"(http_call, grpc_call), not {awaited!r}")
            except TypeError:
                _boundary.report(context_id, where)
            if not first and stream is not None:
                _resume_quietly(context_id, stream, where)
            return _CONTINUE
        resume = _Resume(context_id, coroutine, stream, where)
        try:
            awaited.start(resume)
        except BaseException as exc:  # the call could not start: raise it inside the coroutine
            return self._step(coroutine, context_id, stream, where, None, exc, first)
        return _PAUSE

    # -- delivering answers (the runtime's call-answer callbacks, on the root context) -------

    def _deliver(self, waiter: _Waiter, value: Any, error: BaseException | None) -> None:
        self._runtime.set_effective(waiter.context_id)
        if isinstance(waiter, _Resume):
            self._step(waiter.coroutine, waiter.context_id, waiter.stream, waiter.where, value, error)
        elif isinstance(waiter, _Callback):
            try:
                result = waiter.fn(value if error is None else error)
                if result.__class__ is _COROUTINE:
                    self.run(result, waiter.context_id, None, "an HTTP/gRPC call callback")
            except BaseException:
                _boundary.report(waiter.context_id, "an HTTP/gRPC call callback")

    def on_http_call_response(self, token: int, num_headers: int, body_size: int, num_trailers: int) -> None:
        waiter = self._http.pop(token, None)
        if waiter is None:
            return  # its context is gone, or nobody asked to be told
        if num_headers == 0:
            code, message = _status_or_unknown()
            reason = to_str(message) or f"status {code}"
            response = HttpResponse([], b"", [], error=f"no response: {reason}")
            error = HttpCallError(f"HTTP call failed: {reason}") if isinstance(waiter, _Resume) else None
            self._deliver(waiter, response, error)
            return
        headers = hostcalls.get_map_pairs(MapType.HTTP_CALL_RESPONSE_HEADERS)
        body = (hostcalls.get_buffer(BufferType.HTTP_CALL_RESPONSE_BODY, 0, body_size) or b"") if body_size else b""
        trailers = hostcalls.get_map_pairs(MapType.HTTP_CALL_RESPONSE_TRAILERS) if num_trailers else []
        response = HttpResponse([(to_str(k), to_str(v)) for k, v in headers], body,
                                [(to_str(k), to_str(v)) for k, v in trailers])
        failure = envoy_failure(response)
        if failure is not None:
            response.error = failure
            if isinstance(waiter, _Resume):
                self._deliver(waiter, response, HttpCallError(f"HTTP call failed: {failure}"))
                return
        self._deliver(waiter, response, None)

    def on_grpc_receive_initial_metadata(self, token: int, num_elements: int) -> None:
        if token in self._grpc:
            self._grpc[token].initial = _metadata(MapType.GRPC_RECEIVE_INITIAL_METADATA)
        elif token in self._streams:
            context_id, handler = self._streams[token]
            self._to_handler(context_id, handler.on_initial_metadata,
                             _metadata(MapType.GRPC_RECEIVE_INITIAL_METADATA))

    def on_grpc_receive(self, token: int, message_size: int) -> None:
        message = (hostcalls.get_buffer(BufferType.GRPC_RECEIVE_BUFFER, 0, message_size) or b"") if message_size else b""
        state = self._grpc.pop(token, None)
        if state is not None:
            # Envoy ends a successful unary call here: no proxy_on_grpc_close follows
            # (its close callback only reports failures).
            self._deliver(state.waiter, GrpcResponse(message, state.initial, state.trailing), None)
        elif token in self._streams:
            context_id, handler = self._streams[token]
            self._to_handler(context_id, handler.on_message, message)

    def on_grpc_receive_trailing_metadata(self, token: int, num_elements: int) -> None:
        if token in self._grpc:
            self._grpc[token].trailing = _metadata(MapType.GRPC_RECEIVE_TRAILING_METADATA)
        elif token in self._streams:
            context_id, handler = self._streams[token]
            self._to_handler(context_id, handler.on_trailing_metadata,
                             _metadata(MapType.GRPC_RECEIVE_TRAILING_METADATA))

    def on_grpc_close(self, token: int, status_code: int) -> None:
        _, message = _status_or_unknown()
        text = to_str(message)
        state = self._grpc.pop(token, None)
        if state is not None:  # a unary call that failed (success arrives in on_grpc_receive)
            error = GrpcCallError(status_code, text)
            self._deliver(state.waiter, error, error if isinstance(state.waiter, _Resume) else None)
            return
        stream = self._streams.pop(token, None)
        if stream is not None:
            self._to_handler(stream[0], stream[1].on_close, status_code, text)

    def _to_handler(self, context_id: int, method: Callable[..., object], *args: Any) -> None:
        try:
            self._runtime.set_effective(context_id)
            result = method(*args)
            if result.__class__ is _COROUTINE:
                self.run(result, context_id, None, f"gRPC stream handler {method.__name__}")
        except BaseException:
            _boundary.report(context_id, f"gRPC stream handler {getattr(method, '__name__', '')}")


def _resume_quietly(context_id: int, stream: int, where: str) -> None:
    try:
        hostcalls.continue_stream(stream)
    except BaseException:
        _boundary.report(context_id, f"{where} (resuming the stream)")


def _status_or_unknown() -> tuple[int, bytes]:
    try:
        return hostcalls.get_status()
    except PyWasmError:
        return -1, b""


def _metadata(map_type: int) -> list[tuple[str, str]]:
    return [(to_str(k), to_str(v)) for k, v in hostcalls.get_map_pairs(map_type)]
