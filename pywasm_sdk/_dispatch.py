"""The runtime's entry points: one function per ABI callback, made from the ABI's table.

Rule of this module: every entry point is made here from ``CALLBACK_SPECS`` (generated from the
``callbacks`` of abi/proxy_wasm.yaml: parameters, context kind, method, answer kind, what
awaiting means), with exactly the ABI's parameters, and none of them ever raises. What differs
between callbacks is data in that table, written into one of three templates (for an answer
that is an Action, a bool, or nothing); the few the SDK handles itself (context creation and
deletion, the VM's start and configuration, the answers to calls) are written out below.
Nothing is looked up per call that can be looked up once.

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

An answer the ABI cannot carry (an action that is not an int, an ``async def`` where the proxy
needs the answer at once) is such an exception too. Raise :class:`ConfigurationError` from
on_configure/on_vm_start to reject a configuration with a one-line message instead of a
traceback. ``end_of_stream`` arrives as a bool (the bridge makes it with ``PyBool_FromLong``, the
native mock host with ``bool()``) and reaches the plugin as it is.
"""

from __future__ import annotations

import os
import sys
import types

from . import hostcalls, log
from ._abi import CALLBACK_SPECS, Action, BufferType, PeerType, StreamType
from ._boundary import flush, report

TYPE_CHECKING = False  # typing is not imported at run time: it would weigh on every plugin
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ._abi import CallbackSpec
    from ._runtime import Runtime

COROUTINE = types.CoroutineType
_MAX_ACTION = 0xFFFFFFFF
#: an ``awaits`` that allows no coroutine (the answer is needed at once, or nothing can resume)
_REFUSE = -1


def entry_points(rt: Runtime) -> dict[str, Callable[..., Any]]:
    """The functions the host's callbacks end in, bound to ``rt``; see :mod:`._entry`."""
    made: dict[str, Callable[..., Any]] = {}
    for name, spec in CALLBACK_SPECS.items():
        special = _SPECIAL.get(name)
        fn = special(rt) if special is not None else _from_table(rt, spec)
        fn.__name__ = fn.__qualname__ = name
        made[name] = fn
    made["create_stream_context"] = _create_stream_context(rt)
    made["forget_contexts"] = _forget_contexts(rt)
    return made


# -- answers ---------------------------------------------------------------------------------

def _awaits(spec: CallbackSpec) -> int | None:
    """The stream a coroutine of this callback holds, None (detached) or _REFUSE."""
    if spec.awaits == "never":
        return _REFUSE
    if spec.awaits == "detached":
        return None
    return int(StreamType[spec.awaits])


def _other_action(rt: Runtime, result: object, context_id: int, resume: int | None, where: str) -> int:
    """The action for an answer that is not None or an Action: a coroutine, an int, or a bug."""
    if result.__class__ is COROUTINE:
        if resume == _REFUSE:
            result.close()
            raise TypeError(f"{where} cannot be async: nothing could continue the stream after an await")
        return rt.calls.run(result, context_id, resume, where)
    if isinstance(result, int) and not isinstance(result, bool) and 0 <= result <= _MAX_ACTION:
        return result
    raise TypeError(f"{where} returned {result!r}: a callback answers an Action (or None for CONTINUE)")


def _detached(rt: Runtime, result: object, context_id: int, where: str, resume: int | None = None) -> None:
    """Run a void callback's coroutine to its first await (its awaits finish later), or refuse
    one where the ABI says nothing may await."""
    if result.__class__ is COROUTINE:
        if resume == _REFUSE:
            result.close()
            raise TypeError(f"{where} cannot be async: the context is deleted right after it")
        rt.calls.run(result, context_id, None, where)


def _bool_answer(result: object, where: str) -> bool:
    """The bool a callback answers the host (None means True)."""
    if result.__class__ is COROUTINE:
        result.close()
        raise TypeError(f"{where} cannot be async: the proxy needs its answer before it goes on")
    return result is not False


# -- callbacks made from the table ------------------------------------------------------------
# Each is compiled from a template with the ABI's parameters and the method's name written in,
# as dataclasses writes __init__: ``ctx.on_response_headers(...)`` is one specialised attribute
# load, where ``getattr(ctx, name)(...)`` would be a builtin call and a bound method made and
# freed on every callback (1,300 wasm instructions per request, measured with costs.py's fuel).
# They are compiled when a runtime's entry points are made: for a .wasm while ``pywasm build``
# imports the plugin (the proxy's interpreter has no compiler), natively when a plugin loads.

_TEMPLATES = {
    # a stream callback answering an Action (HTTP headers/body/trailers, TCP data); a stream
    # without a context yet (the bridge does not enter Python to create one) gets it here
    "action": """
def {name}({params}):
    rt.effective = context_id
    try:
        ctx = contexts.get(context_id)
        r = (ctx if ctx is not None else rt.lazy(context_id)).{method}({args})
        if r is None:
            return 0
        return r if r.__class__ is Action else other_action(rt, r, context_id, resume, where)
    except BaseException:
        report(context_id, where)
        return 0
""",
    # on_done: a bool from any context
    "bool": """
def {name}({params}):
    rt.effective = context_id
    try:
        return bool_answer(find(context_id).{method}({args}), where)
    except BaseException:
        report(context_id, where)
        return True
""",
    # no answer: on_tick, on_queue_ready (root), on_log (any), the TCP connection closes
    "void": """
def {name}({params}):
    rt.effective = context_id
    try:
        detached(rt, find(context_id).{method}({args}), context_id, where, resume)
    except BaseException:
        report(context_id, where)
""",
}

#: how an ABI parameter reaches the method (by its name in the ABI; the rest as they come)
_CONVERT = {"peer_type": "PeerType({})"}


def _from_table(rt: Runtime, spec: CallbackSpec) -> Callable[..., Any]:
    """The entry point of a callback that the table describes completely."""
    params = [name for name, _ in spec.params]
    if params[0] not in ("context_id", "root_context_id"):
        raise ValueError(f"{spec.name}: a callback's first parameter must be its context's id")
    params[0] = "context_id"  # the template's name for it (the ABI calls a root's root_context_id)
    scope: dict[str, Any] = {
        "__name__": __name__, "rt": rt, "contexts": rt.contexts, "where": spec.method,
        "resume": _awaits(spec), "find": rt.root if spec.context == "root" else rt.context,
        "report": report, "Action": Action, "PeerType": PeerType, "other_action": _other_action,
        "detached": _detached, "bool_answer": _bool_answer}
    clash = set(params) & {*scope, "ctx", "r"}
    if clash:
        raise ValueError(f"{spec.name}: parameter {sorted(clash)} would hide a name of the template")
    source = _TEMPLATES[spec.result or "void"].format(
        name=spec.name, params=", ".join(params), method=spec.method,
        args=", ".join(_CONVERT.get(p, "{}").format(p) for p in params[1:]))
    exec(compile(source, f"<{__name__}: {spec.name}>", "exec"), scope)  # noqa: S102 - our template
    made: Callable[..., Any] = scope[spec.name]
    return made


# -- callbacks the SDK handles itself ----------------------------------------------------------

def _reseed_random() -> None:
    """`random` was seeded when the plugin was built: every VM would draw the same numbers.
    Reseed it from the proxy's entropy (os.urandom reaches the host's random_get)."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()


def _read_config(buffer_type: int, size: int) -> bytes:
    return (hostcalls.get_buffer(buffer_type, 0, size) or b"") if size else b""


def _context_create(rt: Runtime) -> Callable[[int, int], None]:
    def proxy_on_context_create(context_id: int, parent_context_id: int) -> None:
        rt.effective = context_id
        try:
            if parent_context_id == 0:
                rt.create_root(context_id)
            else:
                rt.create_stream_context(context_id, parent_context_id)
        except BaseException:
            report(context_id, "creating a context")
    return proxy_on_context_create


def _vm_start(rt: Runtime) -> Callable[[int, int], bool]:
    def proxy_on_vm_start(root_context_id: int, vm_configuration_size: int) -> bool:
        rt.effective = root_context_id
        try:
            log.refresh_level()
            _reseed_random()
            os.environ.update(hostcalls.vm_environment())
            root = rt.root(root_context_id)
            root.vm_config = _read_config(BufferType.VM_CONFIGURATION, vm_configuration_size)
            return _bool_answer(root.on_vm_start(root.vm_config), "on_vm_start")
        except BaseException:
            report(root_context_id, "on_vm_start")
            return False
    return proxy_on_vm_start


def _configure(rt: Runtime) -> Callable[[int, int], bool]:
    def proxy_on_configure(root_context_id: int, plugin_configuration_size: int) -> bool:
        rt.effective = root_context_id
        try:
            log.refresh_level()
            root = rt.root(root_context_id)
            root.plugin_config = _read_config(BufferType.PLUGIN_CONFIGURATION, plugin_configuration_size)
            return _bool_answer(root.on_configure(root.plugin_config), "on_configure")
        except BaseException:
            report(root_context_id, "on_configure")
            return False
    return proxy_on_configure


def _foreign_function(rt: Runtime) -> Callable[[int, int, int], None]:
    def proxy_on_foreign_function(root_context_id: int, function_id: int, arguments_size: int) -> None:
        """Never exported: Envoy registers no foreign functions that call back into a plugin."""
    return proxy_on_foreign_function


def _call_answer(method: str, arity: int) -> Callable[[Runtime], Callable[..., None]]:
    """The answer to an HTTP/gRPC call: delivered on the root; Calls finds who waits for it."""
    def make(rt: Runtime) -> Callable[..., None]:
        deliver = getattr(rt.calls, method)
        if arity == 2:
            def callback(context_id: int, token: int, value: int) -> None:
                rt.effective = context_id
                try:
                    deliver(token, value)
                except BaseException:
                    report(context_id, method)
        else:
            def callback(context_id: int, token: int, num_headers: int,  # type: ignore[misc]
                         body_size: int, num_trailers: int) -> None:
                rt.effective = context_id
                try:
                    deliver(token, num_headers, body_size, num_trailers)
                except BaseException:
                    report(context_id, method)
        return callback
    return make


def _tick(rt: Runtime) -> Callable[[int], None]:
    root, where = rt.root, "on_tick"

    def proxy_on_tick(root_context_id: int) -> None:
        rt.effective = root_context_id
        flush()  # repeated exceptions' summaries that are due, even if none comes again
        try:
            _detached(rt, root(root_context_id).on_tick(), root_context_id, where)
        except BaseException:
            report(root_context_id, where)
    return proxy_on_tick


def _delete(rt: Runtime) -> Callable[[int], None]:
    def proxy_on_delete(context_id: int) -> None:
        rt.effective = context_id
        try:
            rt.delete_context(context_id)
        except BaseException:
            report(context_id, "on_delete")
    return proxy_on_delete


def _create_stream_context(rt: Runtime) -> Callable[[int, int], None]:
    def create_stream_context(context_id: int, root_context_id: int) -> None:
        """Make a stream's context now (the bridge's lazy creation); never raises."""
        try:
            rt.create_stream_context(context_id, root_context_id)
        except BaseException:
            report(context_id, "creating a context")
    return create_stream_context


def _forget_contexts(rt: Runtime) -> Callable[[object], None]:
    def forget_contexts(context_ids: object) -> None:
        """Delete these contexts (any iterable of ids) as proxy_on_delete would; never raises."""
        try:
            rt.forget_contexts(list(context_ids))  # type: ignore[call-overload]
        except BaseException:
            report(0, "forgetting contexts")
    return forget_contexts


_SPECIAL: dict[str, Callable[[Runtime], Callable[..., Any]]] = {
    "proxy_on_context_create": _context_create,
    "proxy_on_vm_start": _vm_start,
    "proxy_on_configure": _configure,
    "proxy_on_tick": _tick,
    "proxy_on_foreign_function": _foreign_function,
    "proxy_on_http_call_response": _call_answer("on_http_call_response", 4),
    "proxy_on_grpc_receive_initial_metadata": _call_answer("on_grpc_receive_initial_metadata", 2),
    "proxy_on_grpc_receive": _call_answer("on_grpc_receive", 2),
    "proxy_on_grpc_receive_trailing_metadata": _call_answer("on_grpc_receive_trailing_metadata", 2),
    "proxy_on_grpc_close": _call_answer("on_grpc_close", 2),
    "proxy_on_delete": _delete,
}
