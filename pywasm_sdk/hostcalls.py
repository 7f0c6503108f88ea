# mypy: disable-error-code="no-any-return"
# (the raw hostcalls are bound at run time and untyped: each wrapper below gives its result a type)
"""The one seam between the SDK and a host, and a thin typed wrapper over each hostcall.

Rule of this module: nothing else in the SDK calls the raw imports. The raw functions are this
module's globals, named as in the ABI (``proxy_log``, ``proxy_get_header_map_value``, ...), and
:func:`install` binds them to a host: the bindings of the built module inside the proxy, or the
mock host's in-process implementation in tests. Until then they raise :class:`NoHostError`,
which is what a plugin sees when it calls the host at import time (during the build).

:func:`bind` makes the table of one host without binding it and :func:`use` binds a table and
returns the one it replaces: the native mock host binds its own table around each callback of
its plugin, so several hosts can serve plugins in one process.

Raw calling convention (the WIT world generated from abi/proxy_wasm.yaml): inputs are ints,
``bytes`` or ``str``; a hostcall without outputs returns its status; one with outputs returns
``(status, *outputs)`` with zeroed outputs when the status is not OK.

Each wrapper maps the statuses its call may legitimately return ("absent" becomes None) and
raises :class:`HostCallError` (typed by status) for any other.
"""

from __future__ import annotations

from ._abi import HOSTCALLS, SDK_IMPORTS, TEXT_PARAMS, BufferType, MapType, Status
from .errors import NoHostError, error_for
from .wire import Pairs, decode_pairs, encode_pairs, safe_text, to_bytes, to_str

TYPE_CHECKING = False  # typing is not imported at run time: it would weigh on every plugin
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeAlias

    #: raw hostcall name -> the function bound to it
    Table: TypeAlias = "dict[str, Callable[..., Any]]"

_OK = Status.OK
_NOT_FOUND = Status.NOT_FOUND
_EMPTY = Status.EMPTY


def _no_host(name: str) -> Callable[..., Any]:
    def call(*_args: object) -> object:
        raise NoHostError(
            f"{name}: the host is not available here. Plugins are imported while `pywasm build` "
            "pre-initialises them, where no proxy exists: call the host (log, headers, "
            "properties, ...) from a callback such as on_vm_start or on_configure, not at "
            "module level."
        )

    call.__name__ = name
    return call


RAW_NAMES = HOSTCALLS + SDK_IMPORTS


def _text_safe(fn: Callable[..., Any], positions: tuple[int, ...]) -> Callable[..., Any]:
    """``fn`` with its text arguments made valid Unicode first (see :func:`wire.safe_text`):
    componentize-py aborts the whole VM, it raises nothing, on a str with lone surrogates, and
    the SDK's own str decoding makes exactly those of bytes that are not UTF-8."""
    def call(*args: object) -> object:
        args_ = list(args)
        for i in positions:
            args_[i] = safe_text(args_[i])  # type: ignore[arg-type]
        return fn(*args_)

    call.__name__ = getattr(fn, "__name__", "hostcall")
    return call


def bind(raw: object) -> Table:
    """The table of raw hostcalls of ``raw`` (a module or an object with a function per name),
    not bound yet. The text parameters the ABI declares are guarded here, once for every
    wrapper below."""
    missing = [n for n in RAW_NAMES if not hasattr(raw, n)]
    if missing:
        raise TypeError(f"host implementation lacks {', '.join(missing)}")
    table: Table = {}
    for name in RAW_NAMES:
        fn = getattr(raw, name)
        positions = TEXT_PARAMS.get(name)
        table[name] = _text_safe(fn, positions) if positions else fn
    return table


#: the table bound while no host is: every raw hostcall raises NoHostError
NO_HOST: Table = {name: _no_host(name) for name in RAW_NAMES}
_bound = NO_HOST


def use(table: Table) -> Table:
    """Bind a table made by :func:`bind` (or :data:`NO_HOST`); returns the table it replaces."""
    global _bound
    previous, _bound = _bound, table
    globals().update(table)
    return previous


def install(raw: object) -> None:
    """Bind every raw hostcall to ``raw.<name>`` (a module or an object with those functions)."""
    use(bind(raw))


use(NO_HOST)

# Raw hostcalls, bound by install(); declared for readers and type checkers.
proxy_log: Any
proxy_get_log_level: Any
proxy_get_current_time_nanoseconds: Any
proxy_set_tick_period_milliseconds: Any
proxy_get_buffer_bytes: Any
proxy_get_buffer_status: Any
proxy_set_buffer_bytes: Any
proxy_get_header_map_pairs: Any
proxy_set_header_map_pairs: Any
proxy_get_header_map_value: Any
proxy_get_header_map_size: Any
proxy_add_header_map_value: Any
proxy_replace_header_map_value: Any
proxy_remove_header_map_value: Any
proxy_continue_stream: Any
proxy_close_stream: Any
proxy_send_local_response: Any
proxy_get_property: Any
proxy_set_property: Any
proxy_call_foreign_function: Any
proxy_get_status: Any
proxy_http_call: Any
proxy_grpc_call: Any
proxy_grpc_stream: Any
proxy_grpc_send: Any
proxy_grpc_cancel: Any
proxy_grpc_close: Any
proxy_set_effective_context: Any
proxy_done: Any
proxy_set_shared_data: Any
proxy_get_shared_data: Any
proxy_register_shared_queue: Any
proxy_resolve_shared_queue: Any
proxy_enqueue_shared_queue: Any
proxy_dequeue_shared_queue: Any
proxy_define_metric: Any
proxy_increment_metric: Any
proxy_record_metric: Any
proxy_get_metric: Any
pywasm_environ: Any


# -- logging -------------------------------------------------------------------------------

def log(level: int, message: str) -> None:
    status = proxy_log(level, message)
    if status:
        raise error_for("proxy_log", status)


def get_log_level() -> int:
    status, level = proxy_get_log_level()
    if status:
        raise error_for("proxy_get_log_level", status)
    return level


def get_current_time_ns() -> int:
    status, now = proxy_get_current_time_nanoseconds()
    if status:
        raise error_for("proxy_get_current_time_nanoseconds", status)
    return now


def set_tick_period(milliseconds: int) -> None:
    status = proxy_set_tick_period_milliseconds(milliseconds)
    if status:
        raise error_for("proxy_set_tick_period_milliseconds", status)


# -- buffers -------------------------------------------------------------------------------

def get_buffer(buffer_type: int, start: int = 0, max_size: int = 0xFFFFFFFF) -> bytes | None:
    """Bytes of a buffer, or None when the buffer does not exist in this callback."""
    status, data = proxy_get_buffer_bytes(buffer_type, start, max_size)
    if status:
        if status == _NOT_FOUND:
            return None
        raise error_for("proxy_get_buffer_bytes", status, BufferType(buffer_type).name)
    return data


def get_buffer_size(buffer_type: int) -> int | None:
    status, size, _flags = proxy_get_buffer_status(buffer_type)
    if status:
        if status == _NOT_FOUND:
            return None
        raise error_for("proxy_get_buffer_status", status, BufferType(buffer_type).name)
    return size


def set_buffer(buffer_type: int, start: int, size: int, data: bytes) -> None:
    status = proxy_set_buffer_bytes(buffer_type, start, size, data)
    if status:
        raise error_for("proxy_set_buffer_bytes", status, BufferType(buffer_type).name)


# -- header maps ---------------------------------------------------------------------------

def get_map_pairs(map_type: int) -> Pairs:
    status, blob = proxy_get_header_map_pairs(map_type)
    if status:
        raise error_for("proxy_get_header_map_pairs", status, MapType(map_type).name)
    return decode_pairs(blob)


def set_map_pairs(map_type: int, pairs: Pairs) -> None:
    status = proxy_set_header_map_pairs(map_type, encode_pairs(pairs))
    if status:
        raise error_for("proxy_set_header_map_pairs", status, MapType(map_type).name)


# The header names and values below may be str: the raw hostcalls pass a str as its UTF-8
# without making a bytes object (build/bridge.wat, $bytes_arg). What they refuse (bytearray,
# memoryview, a str with lone surrogates from a non-UTF-8 header) goes again through to_bytes.


def _again_as_bytes(raw: Callable[..., Any], map_type: int, *texts: str | bytes) -> Any:
    """``raw(map_type, *texts)`` with the texts converted by to_bytes: the second try of a
    header hostcall whose first the bridge refused. Called from that try's ``except`` clause;
    what it raises is not chained to the refusal (to_bytes's TypeError says what was wrong)."""
    try:
        return raw(map_type, *[to_bytes(t) for t in texts])
    except Exception as exc:
        raise exc from None


def get_map_value(map_type: int, key: str | bytes) -> bytes | None:
    try:
        status, value = proxy_get_header_map_value(map_type, key)
    except (TypeError, UnicodeEncodeError):
        status, value = _again_as_bytes(proxy_get_header_map_value, map_type, key)
    if status:
        if status == _NOT_FOUND:
            return None
        raise error_for("proxy_get_header_map_value", status, MapType(map_type).name)
    return value


def write_map_value(raw: Callable[[int, object, object], int], map_type: int, key: str | bytes,
                    value: str | bytes) -> None:
    """Add or replace a header: ``raw`` is this module's proxy_add_header_map_value or
    proxy_replace_header_map_value, passed by the caller rather than wrapped twice (a wrapper
    each would be one Python frame more on every header a plugin writes)."""
    try:
        status = raw(map_type, key, value)
    except (TypeError, UnicodeEncodeError):
        status = _again_as_bytes(raw, map_type, key, value)
    if status:
        raise error_for(raw.__name__, status, MapType(map_type).name)


def remove_map_value(map_type: int, key: str | bytes) -> None:
    try:
        status = proxy_remove_header_map_value(map_type, key)
    except (TypeError, UnicodeEncodeError):
        status = _again_as_bytes(proxy_remove_header_map_value, map_type, key)
    if status:
        raise error_for("proxy_remove_header_map_value", status, MapType(map_type).name)


# -- streams -------------------------------------------------------------------------------

def continue_stream(stream_type: int) -> None:
    status = proxy_continue_stream(stream_type)
    if status:
        raise error_for("proxy_continue_stream", status)


def close_stream(stream_type: int) -> None:
    status = proxy_close_stream(stream_type)
    if status:
        raise error_for("proxy_close_stream", status)


def send_local_response(status_code: int, details: str, body: bytes, headers: Pairs,
                        grpc_status: int) -> None:
    status = proxy_send_local_response(status_code, details, body, encode_pairs(headers), grpc_status)
    if status:
        raise error_for("proxy_send_local_response", status)


# -- properties and foreign functions ------------------------------------------------------

def get_property(path: bytes) -> bytes | None:
    """The raw value of a property, or None when it does not exist."""
    status, value = proxy_get_property(path)
    if status:
        if status == _NOT_FOUND:
            return None
        raise error_for("proxy_get_property", status, repr(path.replace(b"\0", b".").decode(errors="replace")))
    return value


def set_property(path: bytes, value: bytes) -> None:
    status = proxy_set_property(path, value)
    if status:
        raise error_for("proxy_set_property", status)


def call_foreign_function(name: str, arguments: bytes) -> bytes:
    status, result = proxy_call_foreign_function(name, arguments)
    if status:
        raise error_for("proxy_call_foreign_function", status, name)
    return result


# -- callouts ------------------------------------------------------------------------------

def http_call(cluster: str, headers: Pairs, body: bytes, trailers: Pairs, timeout_ms: int) -> int:
    """Start an HTTP call; the token identifies its answer."""
    status, token = proxy_http_call(cluster, encode_pairs(headers), body, encode_pairs(trailers), timeout_ms)
    if status:
        raise error_for("proxy_http_call", status,
                        f"cluster {cluster!r} (it must exist in the proxy, and the headers need "
                        ":method, :path and :authority)")
    return token


def grpc_call(service: bytes, service_name: str, method: str, metadata: Pairs, message: bytes,
              timeout_ms: int) -> int:
    status, token = proxy_grpc_call(service, service_name, method, encode_pairs(metadata), message, timeout_ms)
    if status:
        raise error_for("proxy_grpc_call", status, f"{service_name}/{method}")
    return token


def grpc_stream(service: bytes, service_name: str, method: str, metadata: Pairs) -> int:
    status, token = proxy_grpc_stream(service, service_name, method, encode_pairs(metadata))
    if status:
        raise error_for("proxy_grpc_stream", status, f"{service_name}/{method}")
    return token


def grpc_send(token: int, message: bytes, end_of_stream: bool) -> None:
    status = proxy_grpc_send(token, message, int(end_of_stream))
    if status:
        raise error_for("proxy_grpc_send", status)


def grpc_cancel(token: int) -> None:
    status = proxy_grpc_cancel(token)
    if status:
        raise error_for("proxy_grpc_cancel", status)


def grpc_close(token: int) -> None:
    status = proxy_grpc_close(token)
    if status:
        raise error_for("proxy_grpc_close", status)


def get_status() -> tuple[int, bytes]:
    """(code, message) of the call whose answer is being delivered."""
    status, code, message = proxy_get_status()
    if status:
        raise error_for("proxy_get_status", status)
    return code, message


def set_effective_context(context_id: int) -> None:
    status = proxy_set_effective_context(context_id)
    if status:
        raise error_for("proxy_set_effective_context", status, f"context {context_id}")


def done() -> None:
    status = proxy_done()
    if status:
        raise error_for("proxy_done", status)


# -- shared data and queues ----------------------------------------------------------------

def get_shared_data(key: bytes) -> tuple[bytes, int] | None:
    status, value, cas = proxy_get_shared_data(key)
    if status:
        if status == _NOT_FOUND:
            return None
        raise error_for("proxy_get_shared_data", status, repr(to_str(key)))
    return value, cas


def set_shared_data(key: bytes, value: bytes, cas: int) -> None:
    status = proxy_set_shared_data(key, value, cas)
    if status:
        raise error_for("proxy_set_shared_data", status, repr(to_str(key)))


def register_shared_queue(name: bytes) -> int:
    status, queue_id = proxy_register_shared_queue(name)
    if status:
        raise error_for("proxy_register_shared_queue", status, repr(to_str(name)))
    return queue_id


def resolve_shared_queue(vm_id: bytes, name: bytes) -> int | None:
    status, queue_id = proxy_resolve_shared_queue(vm_id, name)
    if status:
        if status == _NOT_FOUND:
            return None
        raise error_for("proxy_resolve_shared_queue", status, f"{to_str(vm_id)!r}/{to_str(name)!r}")
    return queue_id


def enqueue_shared_queue(queue_id: int, value: bytes) -> None:
    status = proxy_enqueue_shared_queue(queue_id, value)
    if status:
        raise error_for("proxy_enqueue_shared_queue", status, f"queue {queue_id}")


def dequeue_shared_queue(queue_id: int) -> bytes | None:
    status, value = proxy_dequeue_shared_queue(queue_id)
    if status:
        if status == _EMPTY:
            return None
        raise error_for("proxy_dequeue_shared_queue", status, f"queue {queue_id}")
    return value


# -- metrics -------------------------------------------------------------------------------

def define_metric(metric_type: int, name: bytes) -> int:
    status, metric_id = proxy_define_metric(metric_type, name)
    if status:
        raise error_for("proxy_define_metric", status, repr(to_str(name)))
    return metric_id


def increment_metric(metric_id: int, offset: int) -> None:
    status = proxy_increment_metric(metric_id, offset)
    if status:
        raise error_for("proxy_increment_metric", status)


def record_metric(metric_id: int, value: int) -> None:
    status = proxy_record_metric(metric_id, value)
    if status:
        raise error_for("proxy_record_metric", status)


def get_metric(metric_id: int) -> int:
    status, value = proxy_get_metric(metric_id)
    if status:
        raise error_for("proxy_get_metric", status)
    return value


# -- the VM's environment ------------------------------------------------------------------

def vm_environment() -> dict[str, str]:
    """The variables of ``vm_config.environment_variables`` (Istio's ``vmConfig.env``)."""
    status, blob = pywasm_environ()
    if status:
        raise error_for("pywasm_environ", status)
    out = {}
    for entry in blob.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name:
            out[name.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return out
