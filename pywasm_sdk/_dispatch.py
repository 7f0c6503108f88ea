"""The registry of root contexts, the live contexts, and the callbacks the host calls.

Rule of this module: each exported ``proxy_on_*`` method is a one-line forward to a context
inside the exception boundary. Nothing is looked up per call that could be looked up once.

Exception boundary: an exception escaping a plugin's callback is logged at ERROR with its
traceback and the callback answers a default, so a plugin bug never traps the VM:

    ===========================================  =====================================
    callback                                     answer after an exception
    ===========================================  =====================================
    on_vm_start, on_configure                    False (the proxy rejects the config)
    on_request_*/on_response_*, TCP data/conn.   CONTINUE (the request goes on)
    on_done                                      True
    everything else                              nothing to answer
    ===========================================  =====================================

Raise :class:`ConfigurationError` from on_configure/on_vm_start to reject a configuration with a
one-line message instead of a traceback.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

from . import _boundary, callouts, hostcalls, log
from ._abi import CALLBACKS, BufferType, LogLevel, PeerType, StreamType
from ._boundary import report as _report
from .contexts import Context, HttpContext, RootContext, StreamContext

_CONTINUE = 0
_COROUTINE = types.CoroutineType
_run = callouts.run_callback_result
_REQUEST, _RESPONSE = StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE
_DOWNSTREAM, _UPSTREAM = StreamType.DOWNSTREAM, StreamType.UPSTREAM


@dataclass(frozen=True)
class Registration:
    root: type[RootContext]
    root_id: str


#: root_id -> registration; filled by register() when the plugin module is imported
_registry: dict[str, Registration] = {}
#: context id -> live context (roots and streams)
_contexts: dict[int, Context] = {}
#: root context id -> how that root makes the context of a new stream (decided once per root)
_factories: dict[int, Callable[[int], Context]] = {}


def register(root: type[RootContext] | None = None, *, root_id: str = "",
             http: type[HttpContext] | None = None,
             stream: type[StreamContext] | None = None) -> type[RootContext]:
    """Name the plugin's root context; call it once at the top level of the plugin module.

    ``register(MyRoot)`` or ``register(http=MyHttpContext)`` (a default root is made for you).
    ``root_id`` must match the ``root_id`` of the proxy's plugin configuration when one module
    carries several plugins; with a single registration it serves every root_id.
    Usable as a class decorator: ``@register``.
    """
    if root is None:
        root = RootContext
    if not (isinstance(root, type) and issubclass(root, RootContext)):
        raise TypeError(f"register() takes a RootContext subclass, got {root!r}")
    for name, cls, base in (("http", http, HttpContext), ("stream", stream, StreamContext)):
        if cls is not None and not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"register({name}=...) takes a {base.__name__} subclass, got {cls!r}")
    if http is not None or stream is not None:
        attrs = {"__module__": root.__module__, "__qualname__": root.__qualname__}
        if http is not None:
            attrs["http_context"] = http
        if stream is not None:
            attrs["stream_context"] = stream
        root = type(root.__name__, (root,), attrs)
    if root_id in _registry:
        raise ValueError(f"a root context is already registered for root_id {root_id!r}")
    _registry[root_id] = Registration(root, root_id)
    return root


def registrations() -> list[Registration]:
    return list(_registry.values())


def reset() -> None:
    """Forget registrations and contexts (for tests that load several plugins natively)."""
    _registry.clear()
    _contexts.clear()
    _factories.clear()
    callouts.reset()
    _boundary.repeats.clear()


# -- which callbacks a plugin uses ---------------------------------------------------------

#: ABI callback -> (context class that implements it, method name)
ROUTES: dict[str, tuple[type[Context], str]] = {
    "proxy_on_context_create": (Context, ""),
    "proxy_on_vm_start": (RootContext, "on_vm_start"),
    "proxy_on_configure": (RootContext, "on_configure"),
    "proxy_on_tick": (RootContext, "on_tick"),
    "proxy_on_queue_ready": (RootContext, "on_queue_ready"),
    "proxy_on_foreign_function": (RootContext, ""),
    "proxy_on_new_connection": (StreamContext, "on_new_connection"),
    "proxy_on_downstream_data": (StreamContext, "on_downstream_data"),
    "proxy_on_downstream_connection_close": (StreamContext, "on_downstream_connection_close"),
    "proxy_on_upstream_data": (StreamContext, "on_upstream_data"),
    "proxy_on_upstream_connection_close": (StreamContext, "on_upstream_connection_close"),
    "proxy_on_request_headers": (HttpContext, "on_request_headers"),
    "proxy_on_request_body": (HttpContext, "on_request_body"),
    "proxy_on_request_trailers": (HttpContext, "on_request_trailers"),
    "proxy_on_response_headers": (HttpContext, "on_response_headers"),
    "proxy_on_response_body": (HttpContext, "on_response_body"),
    "proxy_on_response_trailers": (HttpContext, "on_response_trailers"),
    "proxy_on_http_call_response": (RootContext, ""),
    "proxy_on_grpc_receive_initial_metadata": (RootContext, ""),
    "proxy_on_grpc_receive": (RootContext, ""),
    "proxy_on_grpc_receive_trailing_metadata": (RootContext, ""),
    "proxy_on_grpc_close": (RootContext, ""),
    "proxy_on_done": (Context, "on_done"),
    "proxy_on_log": (Context, "on_log"),
    "proxy_on_delete": (Context, ""),
}
assert set(ROUTES) == set(CALLBACKS), "ROUTES must name every ABI callback"

#: Exported whatever the plugin overrides: context bookkeeping, configuration, and callbacks the
#: host only calls when the plugin asked for them (timers, queues, call answers), which cost
#: nothing per request. The per-request callbacks are exported only when a class overrides them.
ALWAYS = ("proxy_on_context_create", "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick",
          "proxy_on_queue_ready", "proxy_on_http_call_response",
          "proxy_on_grpc_receive_initial_metadata", "proxy_on_grpc_receive",
          "proxy_on_grpc_receive_trailing_metadata", "proxy_on_grpc_close", "proxy_on_delete")


def used_callbacks() -> list[str]:
    """The ABI callbacks the registered classes need, in ABI order."""
    classes: list[type[Context]] = []
    for reg in _registry.values():
        classes.append(reg.root)
        classes += [c for c in (reg.root.http_context, reg.root.stream_context) if c is not None]
        if (reg.root.new_http_context is not RootContext.new_http_context
                and reg.root.http_context is None):
            classes.append(_AnyHttp)  # a custom factory of undeclared classes: export all
        if (reg.root.new_stream_context is not RootContext.new_stream_context
                and reg.root.stream_context is None):
            classes.append(_AnyStream)
    used = set(ALWAYS)
    for name, (owner, method) in ROUTES.items():
        if method and any(_overrides(cls, owner, method) for cls in classes):
            used.add(name)
    return [name for name in CALLBACKS if name in used]


class _AnyHttp(HttpContext):
    pass


class _AnyStream(StreamContext):
    pass


def _overrides(cls: type, owner: type, method: str) -> bool:
    if cls in (_AnyHttp, _AnyStream):  # unknown classes: assume they override everything
        return issubclass(cls, owner)
    return issubclass(cls, owner) and getattr(cls, method) is not getattr(owner, method)


# -- context lifecycle ---------------------------------------------------------------------

def _root_registration() -> Registration | None:
    if len(_registry) == 1:
        return next(iter(_registry.values()))
    value = hostcalls.get_property(b"plugin_root_id")
    root_id = value.decode() if value is not None else ""
    reg = _registry.get(root_id)
    if reg is None:
        log.write_unconditionally(
            LogLevel.ERROR, f"pywasm: no root context registered for root_id {root_id!r} "
            f"(registered: {sorted(_registry)}); this plugin does nothing")
    return reg


def _root(context_id: int) -> RootContext:
    ctx = _contexts.get(context_id)
    if ctx is None:  # hosts that do not call proxy_on_context_create for roots
        ctx = _create_root(context_id)
    return ctx  # type: ignore[return-value]


def _create_root(context_id: int) -> RootContext:
    reg = _root_registration()
    root = (reg.root if reg else RootContext)(context_id)
    _contexts[context_id] = root
    return root


class _Undecided(Context):
    """A stream of a root that makes both HTTP and TCP contexts: the first callback decides."""

    def __init__(self, context_id: int, root: RootContext) -> None:
        super().__init__(context_id)
        self.root = root

    def _become(self, kind: str) -> Context:
        ctx = (self.root.new_http_context if kind == "http" else self.root.new_stream_context)(
            self.context_id) or _NO_CONTEXT
        _contexts[self.context_id] = ctx
        return ctx

    def __getattr__(self, name: str):
        kind = "http" if name.startswith(("on_request", "on_response")) else "stream"
        return getattr(self._become(kind), name)


class _NoContext(HttpContext, StreamContext):
    """Stands in for a stream the root made no context for: every callback continues."""

    def __init__(self) -> None:
        Context.__init__(self, 0)


_NO_CONTEXT = _NoContext()


def _stream_factory(root: RootContext) -> Callable[[int], Context]:
    cls = type(root)
    http = cls.http_context is not None or cls.new_http_context is not RootContext.new_http_context
    tcp = cls.stream_context is not None or cls.new_stream_context is not RootContext.new_stream_context
    if http and tcp:
        return lambda context_id: _Undecided(context_id, root)
    make = root.new_http_context if http else root.new_stream_context if tcp else None
    if make is None:
        return lambda _context_id: _NO_CONTEXT

    def create(context_id: int) -> Context:
        made = make(context_id)
        return made if made is not None else _NO_CONTEXT

    return create


def _create_stream(context_id: int, root_id: int) -> None:
    factory = _factories.get(root_id)
    if factory is None:
        factory = _factories[root_id] = _stream_factory(_root(root_id))
    _contexts[context_id] = factory(context_id)


def _reseed_random() -> None:
    """`random` was seeded when the plugin was built: every VM would draw the same numbers.
    Reseed it from the proxy's entropy (os.urandom reaches the host's random_get)."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()


def _answer(result: object, where: str) -> bool:
    """The bool a callback answers the host (None means True)."""
    if result.__class__ is _COROUTINE:
        result.close()  # type: ignore[attr-defined]
        raise TypeError(f"{where} cannot be async: the proxy needs its answer before it goes on")
    return result is not False


def _read_config(buffer_type: int, size: int) -> bytes:
    return (hostcalls.get_buffer(buffer_type, 0, size) or b"") if size else b""


class Exports:
    """The callbacks the host calls (componentize-py's world class derives from this)."""

    def proxy_on_context_create(self, context_id: int, parent_context_id: int) -> None:
        try:
            if parent_context_id == 0:
                _create_root(context_id)
            else:
                _create_stream(context_id, parent_context_id)
        except BaseException:
            _report(context_id, "creating a context")

    def proxy_on_vm_start(self, root_context_id: int, vm_configuration_size: int) -> bool:
        try:
            log.refresh_level()
            _reseed_random()
            os.environ.update(hostcalls.vm_environment())
            root = _root(root_context_id)
            root.vm_config = _read_config(BufferType.VM_CONFIGURATION, vm_configuration_size)
            return _answer(root.on_vm_start(root.vm_config), "on_vm_start")
        except BaseException:
            _report(root_context_id, "on_vm_start")
            return False

    def proxy_on_configure(self, root_context_id: int, plugin_configuration_size: int) -> bool:
        try:
            log.refresh_level()
            root = _root(root_context_id)
            root.plugin_config = _read_config(BufferType.PLUGIN_CONFIGURATION, plugin_configuration_size)
            return _answer(root.on_configure(root.plugin_config), "on_configure")
        except BaseException:
            _report(root_context_id, "on_configure")
            return False

    def proxy_on_tick(self, root_context_id: int) -> None:
        _boundary.flush()  # repeated exceptions' summaries that are due, even if none comes again
        try:
            r = _root(root_context_id).on_tick()
            if r.__class__ is _COROUTINE:
                _run(r, root_context_id, None, "on_tick")
        except BaseException:
            _report(root_context_id, "on_tick")

    def proxy_on_queue_ready(self, root_context_id: int, queue_id: int) -> None:
        try:
            r = _root(root_context_id).on_queue_ready(queue_id)
            if r.__class__ is _COROUTINE:
                _run(r, root_context_id, None, "on_queue_ready")
        except BaseException:
            _report(root_context_id, "on_queue_ready")

    def proxy_on_foreign_function(self, root_context_id: int, function_id: int, arguments_size: int) -> None:
        """Never exported: Envoy registers no foreign functions that call back into a plugin."""

    def proxy_on_new_connection(self, context_id: int) -> int:
        try:
            r = _contexts[context_id].on_new_connection()
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _DOWNSTREAM, "on_new_connection")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_new_connection")
            return _CONTINUE

    def proxy_on_downstream_data(self, context_id: int, data_size: int, end_of_stream: bool) -> int:
        try:
            r = _contexts[context_id].on_downstream_data(data_size, end_of_stream)
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _DOWNSTREAM, "on_downstream_data")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_downstream_data")
            return _CONTINUE

    def proxy_on_downstream_connection_close(self, context_id: int, peer_type: int) -> None:
        try:
            _contexts[context_id].on_downstream_connection_close(PeerType(peer_type))  # type: ignore[attr-defined]
        except BaseException:
            _report(context_id, "on_downstream_connection_close")

    def proxy_on_upstream_data(self, context_id: int, data_size: int, end_of_stream: bool) -> int:
        try:
            r = _contexts[context_id].on_upstream_data(data_size, end_of_stream)
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _UPSTREAM, "on_upstream_data")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_upstream_data")
            return _CONTINUE

    def proxy_on_upstream_connection_close(self, context_id: int, peer_type: int) -> None:
        try:
            _contexts[context_id].on_upstream_connection_close(PeerType(peer_type))  # type: ignore[attr-defined]
        except BaseException:
            _report(context_id, "on_upstream_connection_close")

    def proxy_on_request_headers(self, context_id: int, num_headers: int, end_of_stream: bool) -> int:
        try:
            r = _contexts[context_id].on_request_headers(num_headers, end_of_stream)
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _REQUEST, "on_request_headers")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_request_headers")
            return _CONTINUE

    def proxy_on_request_body(self, context_id: int, body_size: int, end_of_stream: bool) -> int:
        try:
            r = _contexts[context_id].on_request_body(body_size, end_of_stream)
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _REQUEST, "on_request_body")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_request_body")
            return _CONTINUE

    def proxy_on_request_trailers(self, context_id: int, num_trailers: int) -> int:
        try:
            r = _contexts[context_id].on_request_trailers(num_trailers)
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _REQUEST, "on_request_trailers")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_request_trailers")
            return _CONTINUE

    def proxy_on_response_headers(self, context_id: int, num_headers: int, end_of_stream: bool) -> int:
        try:
            r = _contexts[context_id].on_response_headers(num_headers, end_of_stream)
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _RESPONSE, "on_response_headers")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_response_headers")
            return _CONTINUE

    def proxy_on_response_body(self, context_id: int, body_size: int, end_of_stream: bool) -> int:
        try:
            r = _contexts[context_id].on_response_body(body_size, end_of_stream)
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _RESPONSE, "on_response_body")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_response_body")
            return _CONTINUE

    def proxy_on_response_trailers(self, context_id: int, num_trailers: int) -> int:
        try:
            r = _contexts[context_id].on_response_trailers(num_trailers)
            if r.__class__ is _COROUTINE:
                return _run(r, context_id, _RESPONSE, "on_response_trailers")
            return _CONTINUE if r is None else r
        except BaseException:
            _report(context_id, "on_response_trailers")
            return _CONTINUE

    def proxy_on_http_call_response(self, context_id: int, token: int, num_headers: int,
                                    body_size: int, num_trailers: int) -> None:
        try:
            callouts.on_http_call_response(token, num_headers, body_size, num_trailers)
        except BaseException:
            _report(context_id, "on_http_call_response")

    def proxy_on_grpc_receive_initial_metadata(self, context_id: int, token: int, num_elements: int) -> None:
        try:
            callouts.on_grpc_receive_initial_metadata(token, num_elements)
        except BaseException:
            _report(context_id, "on_grpc_receive_initial_metadata")

    def proxy_on_grpc_receive(self, context_id: int, token: int, message_size: int) -> None:
        try:
            callouts.on_grpc_receive(token, message_size)
        except BaseException:
            _report(context_id, "on_grpc_receive")

    def proxy_on_grpc_receive_trailing_metadata(self, context_id: int, token: int, num_elements: int) -> None:
        try:
            callouts.on_grpc_receive_trailing_metadata(token, num_elements)
        except BaseException:
            _report(context_id, "on_grpc_receive_trailing_metadata")

    def proxy_on_grpc_close(self, context_id: int, token: int, status_code: int) -> None:
        try:
            callouts.on_grpc_close(token, status_code)
        except BaseException:
            _report(context_id, "on_grpc_close")

    def proxy_on_done(self, context_id: int) -> bool:
        try:
            return _answer(_contexts[context_id].on_done(), "on_done")
        except BaseException:
            _report(context_id, "on_done")
            return True

    def proxy_on_log(self, context_id: int) -> None:
        try:
            r = _contexts[context_id].on_log()
            if r.__class__ is _COROUTINE:
                _run(r, context_id, None, "on_log")
        except BaseException:
            _report(context_id, "on_log")

    def proxy_on_delete(self, context_id: int) -> None:
        try:
            ctx = _contexts.pop(context_id, None)
            _factories.pop(context_id, None)  # when a root goes
            callouts.forget_context(context_id)
            if ctx is not None and ctx is not _NO_CONTEXT:
                r = ctx.on_delete()
                if r.__class__ is _COROUTINE:
                    r.close()
                    raise TypeError("on_delete cannot be async: the context is already gone")
        except BaseException:
            _report(context_id, "on_delete")
