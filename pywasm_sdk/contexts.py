"""The classes a plugin author subclasses: RootContext, HttpContext, StreamContext.

A proxy creates one root context per plugin configuration in each VM (one VM per worker
thread) and one stream context per HTTP request or TCP connection. Override the ``on_*``
methods you need; the SDK exports to the proxy only the callbacks your classes override, so
an unused callback costs nothing per request.

Callbacks return an :class:`Action` where the proxy expects one (``None`` means CONTINUE) and a
bool where it expects one (``None`` means True). An exception that escapes a callback is logged
with its traceback and the callback answers its documented default (see :mod:`._dispatch`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from . import _runtime, callouts, hostcalls
from ._abi import Action, PeerType, StreamType
from .callouts import GrpcResponse, GrpcStream, GrpcStreamHandler, HttpResponse
from .http import (DOWNSTREAM_DATA, REQUEST_BODY, REQUEST_HEADERS, REQUEST_TRAILERS,
                   RESPONSE_BODY, RESPONSE_HEADERS, RESPONSE_TRAILERS, UPSTREAM_DATA, Buffer,
                   HeaderMap, HeaderPairs, pairs_to_bytes)
from .wire import check_int, to_bytes

TYPE_CHECKING = False  # typing is not imported at run time: it would weigh on every plugin
if TYPE_CHECKING:
    from typing import Any, ClassVar, TypeAlias, TypeVar

    _T = TypeVar("_T")
    #: a callback that may be ``async def`` answers its value or a coroutine that returns it
    MaybeAwaitable: TypeAlias = "_T | Awaitable[_T]"

#: gRPC status meaning "no grpc-status header" for send_local_response
_NO_GRPC_STATUS = -1


def _milliseconds(seconds: float | None) -> int:
    """A timeout for the host: None waits forever (the host's 0); a positive timeout is at least 1 ms."""
    if seconds is None:
        return 0
    if seconds <= 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, got {seconds}")
    return max(1, round(seconds * 1000))


class Context:
    """What every context has: its id, and the callbacks the proxy calls on any context."""

    def __init__(self, context_id: int) -> None:
        self.context_id = context_id

    def on_done(self) -> bool:
        """The proxy is done with this context. Return False to finish later with ``done()``."""
        return True

    def on_log(self) -> None:
        """Access-log time: request and response headers are still readable."""

    def on_delete(self) -> None:
        """The context is gone; release what you hold for it."""

    def done(self) -> None:
        """Finish this context after on_done returned False."""
        self.set_effective_context()
        hostcalls.done()

    def set_effective_context(self) -> None:
        """Make the hostcalls that follow act on this context.

        Inside this context's own callbacks that is already so, and the SDK's own calls on a
        context (its header maps and bodies, ``resume_*``, ``reset``, ``close``,
        ``send_local_response``) do it themselves: ``other.request_headers.add(...)`` acts on
        ``other`` from any callback. Only module-level functions that act on "the current
        stream" (properties, ``set_envoy_filter_state``) need it, when called for another
        context than the one whose callback runs.
        """
        rt = _runtime.current
        if rt.effective != self.context_id:
            rt.set_effective(self.context_id)

    # -- calls to other services (see pywasm_sdk.callouts) -------------------------------
    def http_call(self, cluster: str, *, method: str = "GET", path: str = "/",
                  headers: HeaderPairs | None = None, body: str | bytes = b"",
                  trailers: HeaderPairs | None = None, authority: str | None = None,
                  timeout: float | None = 5.0) -> Awaitable[HttpResponse]:
        """``response = await self.http_call(...)`` in an ``async def`` callback.

        ``cluster`` is an Envoy cluster name. The stream is paused while the call is out and
        continues when the callback returns CONTINUE. Raises HttpCallError when no response
        arrives (reset, timeout); an HTTP error status is a normal response.
        """
        request = (cluster, callouts.http_headers(method, path, authority or cluster, headers),
                   to_bytes(body), pairs_to_bytes(trailers), _milliseconds(timeout))
        return callouts.Pending(lambda waiter: _runtime.current.calls.send_http(*request, waiter),
                                f"self.http_call({cluster!r}, ...)")

    def dispatch_http_call(self, cluster: str, *, method: str = "GET", path: str = "/",
                           headers: HeaderPairs | None = None, body: str | bytes = b"",
                           trailers: HeaderPairs | None = None, authority: str | None = None,
                           timeout: float | None = 5.0,
                           callback: Callable[[HttpResponse], None] | None = None) -> int:
        """Start an HTTP call; ``callback(response)`` runs when it is answered (default:
        ``self.on_http_call_response(token, response)``). Returns the call's token.

        A failed call is delivered too, with ``response.failed`` and ``response.error`` set.
        Return PAUSE from a stream callback to hold the stream until you resume it.
        """
        waiter = callouts.callback_waiter(self.context_id, callback or (lambda _r: None))
        token = _runtime.current.calls.send_http(
            cluster, callouts.http_headers(method, path, authority or cluster, headers),
            to_bytes(body), pairs_to_bytes(trailers), _milliseconds(timeout), waiter)
        if callback is None:
            waiter.fn = functools.partial(self.on_http_call_response, token)  # type: ignore[attr-defined]
        return token

    def on_http_call_response(self, token: int, response: HttpResponse) -> MaybeAwaitable[None]:
        """The answer to a ``dispatch_http_call`` made without a callback."""

    def grpc_call(self, cluster: str, service: str, method: str, message: bytes, *,
                  metadata: HeaderPairs | None = None, timeout: float | None = 5.0) -> Awaitable[GrpcResponse]:
        """``response = await self.grpc_call(...)``: a unary gRPC call to an Envoy cluster.
        Raises GrpcCallError when the call ends with a status other than OK."""
        request = (cluster, service, method, pairs_to_bytes(metadata), to_bytes(message), _milliseconds(timeout))
        return callouts.Pending(lambda waiter: _runtime.current.calls.send_grpc(*request, waiter),
                                f"self.grpc_call({cluster!r}, {service!r}, {method!r}, ...)")

    def dispatch_grpc_call(self, cluster: str, service: str, method: str, message: bytes, *,
                           metadata: HeaderPairs | None = None, timeout: float | None = 5.0,
                           callback: Callable[[Any], None]) -> int:
        """Start a unary gRPC call; ``callback`` gets a GrpcResponse, or a GrpcCallError."""
        return _runtime.current.calls.send_grpc(
            cluster, service, method, pairs_to_bytes(metadata), to_bytes(message), _milliseconds(timeout),
            callouts.callback_waiter(self.context_id, callback))

    def open_grpc_stream(self, cluster: str, service: str, method: str,
                         handler: GrpcStreamHandler, *, metadata: HeaderPairs | None = None) -> GrpcStream:
        """Open a gRPC stream; ``handler`` receives metadata, messages and the close."""
        return _runtime.current.calls.open_grpc_stream(self.context_id, cluster, service, method,
                                                       pairs_to_bytes(metadata), handler)


class RootContext(Context):
    """One per plugin configuration per VM: configuration, timers and stream factories.

    Declare the class of your streams' contexts with ``http_context = MyHttpContext`` (or
    ``stream_context`` for TCP); override ``new_http_context`` only to pass extra arguments.
    """

    #: the HttpContext subclass created for each HTTP stream
    http_context: ClassVar[type[HttpContext] | None] = None
    #: the StreamContext subclass created for each TCP connection
    stream_context: ClassVar[type[StreamContext] | None] = None

    def __init__(self, context_id: int) -> None:
        super().__init__(context_id)
        #: the VM configuration (``vm_config.configuration``), set before on_vm_start
        self.vm_config: bytes = b""
        #: the plugin configuration (``configuration``), set before on_configure
        self.plugin_config: bytes = b""

    def on_vm_start(self, vm_config: bytes) -> bool:
        """The VM started; return False to fail it. Called once per VM."""
        return True

    def on_configure(self, plugin_config: bytes) -> bool:
        """A (new) plugin configuration arrived; return False (or raise ConfigurationError) to
        reject it, which makes Envoy reject the listener or filter configuration."""
        return True

    def on_tick(self) -> MaybeAwaitable[None]:
        """The timer set with ``set_tick_period`` fired."""

    def on_queue_ready(self, queue_id: int) -> MaybeAwaitable[None]:
        """A shared queue this root context registered has items."""

    def new_http_context(self, context_id: int) -> HttpContext | None:
        """Create the context of a new HTTP stream (default: ``self.http_context(context_id, self)``)."""
        cls = self.http_context
        return cls(context_id, self) if cls is not None else None

    def new_stream_context(self, context_id: int) -> StreamContext | None:
        """Create the context of a new TCP connection (default: ``self.stream_context(...)``)."""
        cls = self.stream_context
        return cls(context_id, self) if cls is not None else None

    def set_tick_period(self, milliseconds: int) -> None:
        """Call on_tick every ``milliseconds`` (an int; 0 stops the timer). Valid in root
        callbacks. Raises TypeError for a float, ValueError for a negative period."""
        hostcalls.set_tick_period(check_int(milliseconds, "set_tick_period(milliseconds)", 0, 0xFFFFFFFF))


class HttpContext(Context):
    """One HTTP request and its response, as they pass through the proxy.

    Callbacks run in this order (each only when the stream has that part): request headers,
    request body (once per chunk), request trailers, response headers, response body, response
    trailers, then on_log, on_done and on_delete.
    """

    if TYPE_CHECKING:  # what the views below are to a type checker
        request_headers: HeaderMap
        request_trailers: HeaderMap
        response_headers: HeaderMap
        response_trailers: HeaderMap
        request_body: Buffer
        response_body: Buffer
    else:  # each context gets its own view of its own maps and bodies (see pywasm_sdk.http)
        request_headers = REQUEST_HEADERS
        request_trailers = REQUEST_TRAILERS
        response_headers = RESPONSE_HEADERS
        response_trailers = RESPONSE_TRAILERS
        request_body = REQUEST_BODY
        response_body = RESPONSE_BODY

    def __init__(self, context_id: int, root: RootContext) -> None:
        self.context_id = context_id  # not super().__init__: one frame less on every stream
        self.root = root

    def on_request_headers(self, num_headers: int, end_of_stream: bool) -> MaybeAwaitable[Action | None]:
        """Request headers arrived (readable and writable through ``self.request_headers``)."""
        return Action.CONTINUE

    def on_request_body(self, body_size: int, end_of_stream: bool) -> MaybeAwaitable[Action | None]:
        """A chunk of request body arrived; ``body_size`` is what is buffered so far.
        Return PAUSE to buffer until ``end_of_stream``."""
        return Action.CONTINUE

    def on_request_trailers(self, num_trailers: int) -> MaybeAwaitable[Action | None]:
        """Request trailers arrived."""
        return Action.CONTINUE

    def on_response_headers(self, num_headers: int, end_of_stream: bool) -> MaybeAwaitable[Action | None]:
        """Response headers arrived (``self.response_headers``)."""
        return Action.CONTINUE

    def on_response_body(self, body_size: int, end_of_stream: bool) -> MaybeAwaitable[Action | None]:
        """A chunk of response body arrived (see on_request_body)."""
        return Action.CONTINUE

    def on_response_trailers(self, num_trailers: int) -> MaybeAwaitable[Action | None]:
        """Response trailers arrived."""
        return Action.CONTINUE

    def send_local_response(self, status: int, body: str | bytes = b"",
                            headers: HeaderPairs | None = None, grpc_status: int | None = None,
                            details: str = "") -> None:
        """Answer the request from the plugin instead of the upstream.

        The proxy sends it when the current callback returns; return ``Action.PAUSE`` from a
        request callback afterwards so that the request goes no further. ``details`` appears
        in Envoy's access log as the response code details.
        """
        status = check_int(status, "send_local_response(status)", 0, 0xFFFFFFFF)
        grpc = _NO_GRPC_STATUS if grpc_status is None else check_int(
            grpc_status, "send_local_response(grpc_status)", 0, 0x7FFFFFFF)
        data, pairs = to_bytes(body), pairs_to_bytes(headers)
        self.set_effective_context()
        hostcalls.send_local_response(status, details, data, pairs, grpc)

    def resume_request(self) -> None:
        """Continue a request paused by returning PAUSE (e.g. after an HTTP call answered)."""
        self.set_effective_context()
        hostcalls.continue_stream(StreamType.HTTP_REQUEST)

    def resume_response(self) -> None:
        """Continue a paused response."""
        self.set_effective_context()
        hostcalls.continue_stream(StreamType.HTTP_RESPONSE)

    def reset(self) -> None:
        """Reset the stream (the client sees the connection or stream reset)."""
        self.set_effective_context()
        hostcalls.close_stream(StreamType.HTTP_REQUEST)


class StreamContext(Context):
    """One TCP connection through a network filter."""

    if TYPE_CHECKING:
        downstream_data: Buffer
        upstream_data: Buffer
    else:
        downstream_data = DOWNSTREAM_DATA
        upstream_data = UPSTREAM_DATA

    def __init__(self, context_id: int, root: RootContext) -> None:
        self.context_id = context_id  # not super().__init__: one frame less on every stream
        self.root = root

    def on_new_connection(self) -> MaybeAwaitable[Action | None]:
        """A client connected; return PAUSE to hold the connection."""
        return Action.CONTINUE

    def on_downstream_data(self, data_size: int, end_of_stream: bool) -> MaybeAwaitable[Action | None]:
        """Bytes from the client (``self.downstream_data``)."""
        return Action.CONTINUE

    def on_upstream_data(self, data_size: int, end_of_stream: bool) -> Action | None:
        """Bytes from the upstream (``self.upstream_data``)."""
        return Action.CONTINUE

    def on_downstream_connection_close(self, peer: PeerType) -> None:
        """The client side closed (``peer`` says which side closed it)."""

    def on_upstream_connection_close(self, peer: PeerType) -> None:
        """The upstream side closed."""

    def resume_downstream(self) -> None:
        """Continue reading from the client after a PAUSE."""
        self.set_effective_context()
        hostcalls.continue_stream(StreamType.DOWNSTREAM)

    def close(self) -> None:
        """Close the connection (after flushing what was written)."""
        self.set_effective_context()
        hostcalls.close_stream(StreamType.DOWNSTREAM)
