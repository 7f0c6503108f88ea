"""MockHost: a plugin in a simulated Envoy, driven by a test.

Rule of this module: this is the driver. It decides which callback runs when (as Envoy's VM
start, timers, call completions and queue notifications do), runs it through a
:class:`~.guest.Guest`, and applies what Envoy applies after each callback (the
:class:`~.host.Deferred` records the hostcalls queued). Streams and connections
(:mod:`.streams`) use it the same way. It never answers a hostcall itself (:mod:`.host` does).

Failure model, as in Envoy: a trap fails the VM; the host then raises :class:`VmFailedError`
for anything that would call the plugin. A plugin's Python exception is not a failure: the SDK
logs it and answers its default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._abi import LogLevel
from ._state import HeaderMapState, RootState
from .cache import ModuleCache
from .calls import GrpcCall, GrpcStream, HttpCall
from .errors import HostMisuseError, VmFailedError
from .guest import Guest
from .host import KNOWN_FILTER_STATE_KEYS, Deferred, HostConfig, HostState
from .native import NativeGuest
from .records import Logs, Metrics
from .shared import SharedData, SharedQueues, SharedStore
from .streams import HttpStream, TcpConnection
from .wasm import WasmGuest

__all__ = ["MockHost"]

_BROKEN_CONNECTION = 11


def _config(plugin_config: bytes | str, vm_config: bytes | str, root_id: str,
            env: Mapping[str, str] | None, options: dict[str, Any]) -> HostConfig:
    def as_bytes(v: bytes | str) -> bytes:
        return v.encode() if isinstance(v, str) else bytes(v)
    known = set(HostConfig.__dataclass_fields__)
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown MockHost option(s): {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(sorted(known - {'plugin_config', 'vm_config', 'root_id', 'env'}))})")
    if "clusters" in options:
        options["clusters"] = frozenset(options["clusters"])
    if "filter_state_keys" in options:
        options["filter_state_keys"] = frozenset(options["filter_state_keys"]) | KNOWN_FILTER_STATE_KEYS
    if "log_level" in options:
        options["log_level"] = LogLevel(options["log_level"])
    return HostConfig(plugin_config=as_bytes(plugin_config), vm_config=as_bytes(vm_config),
                      root_id=root_id, env=dict(env or {}), **options)


class MockHost:
    """A plugin loaded in a simulated Envoy, ready for a test to open streams through it.

    Create one with :meth:`from_wasm` (the built .wasm, in wasmtime) or :meth:`from_plugin`
    (the plugin's Python, natively); both start the VM as Envoy does: the root context is
    created, then ``proxy_on_vm_start`` and ``proxy_on_configure`` run. ``started`` and
    ``configured`` say whether they accepted their configuration (Envoy would reject the
    listener otherwise, and the host refuses to open streams).

    Close it when done (``close()``, ``with``, or the ``mock_host`` fixture). Any number of hosts,
    native and wasm, can be open at once.
    """

    def __init__(self, guest: Guest, config: HostConfig | None = None, *,
                 shared: SharedStore | None = None) -> None:
        self.state = HostState(config or HostConfig(), shared=shared)
        self.state.answerer = self
        self.state.wakeup = self._wakeup
        self._guest = guest
        self._busy = False
        self._closed = False
        #: the trap that failed the VM, when one did
        self.failed: BaseException | None = None
        self.started = False
        self.configured = False
        self._streams: dict[int, HttpStream | TcpConnection] = {}
        guest.start(self.state)
        try:
            self._start_vm()
        except BaseException:
            self.close()
            raise

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_wasm(cls, path: str | os.PathLike[str] | bytes, *, plugin_config: bytes | str = b"",
                  vm_config: bytes | str = b"", root_id: str = "", env: Mapping[str, str] | None = None,
                  shared: SharedStore | None = None, cache: ModuleCache | None = None,
                  **options: Any) -> MockHost:
        """Load a built .wasm (a path, or its bytes) in wasmtime and start it like Envoy.

        ``options`` are :class:`HostConfig` fields: ``vm_id``, ``plugin_name``, ``log_level``,
        ``clusters``, ``properties``, ``node``, ``start_time_ns``, ``filter_state_keys``,
        ``foreign_functions``, ``allow_on_headers_stop_iteration``. ``shared`` lets several
        hosts share shared data and queues (like VMs of one Envoy); ``cache`` picks where
        compiled modules are kept.
        """
        guest = WasmGuest(path, cache=cache)
        return cls(guest, _config(plugin_config, vm_config, root_id, env, options), shared=shared)

    @classmethod
    def from_plugin(cls, path: str | os.PathLike[str], *, plugin_config: bytes | str = b"",
                    vm_config: bytes | str = b"", root_id: str = "", env: Mapping[str, str] | None = None,
                    shared: SharedStore | None = None, **options: Any) -> MockHost:
        """Import a plugin's Python (a .py file or a folder with plugin.py, as ``pywasm build``
        takes it) into this process and start it like Envoy; same options as :meth:`from_wasm`.

        ``env`` is what the plugin would see through WASI; natively ``os.environ`` is the test
        process's own.
        """
        guest = NativeGuest(path)
        return cls(guest, _config(plugin_config, vm_config, root_id, env, options), shared=shared)

    @classmethod
    def from_guest(cls, guest: Guest, *, plugin_config: bytes | str = b"", vm_config: bytes | str = b"",
                   root_id: str = "", env: Mapping[str, str] | None = None,
                   shared: SharedStore | None = None, **options: Any) -> MockHost:
        """Drive any :class:`~.guest.Guest` (your own, e.g. a scripted one); same options."""
        return cls(guest, _config(plugin_config, vm_config, root_id, env, options), shared=shared)

    def _start_vm(self) -> None:
        state = self.state
        root = state.new_root()
        state.plugin_config_readable = True  # Envoy's temp_plugin_ is set while the root is created
        try:
            self._run(root.id, "proxy_on_context_create", root.id, 0)
        finally:
            state.plugin_config_readable = False
        self.started = self._bool(self._run(root.id, "proxy_on_vm_start", root.id, len(state.config.vm_config)))
        if self.started:
            state.plugin_config_readable = True
            try:
                raw = self._run(root.id, "proxy_on_configure", root.id, len(state.config.plugin_config))
            finally:
                state.plugin_config_readable = False
            self.configured = self._bool(raw)
        self._drain()

    # -- what tests read ------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"wasm"`` or ``"native"``."""
        return self._guest.kind

    @property
    def exports(self) -> frozenset[str]:
        """The ABI callbacks the plugin exports (Envoy calls only those)."""
        return self._guest.exports

    @property
    def memory_pages(self) -> int | None:
        """The module's linear memory in 64 KiB pages (``None`` natively). The allocator takes
        pages and never gives them back, so memory that leaks per request shows here as growth
        over many requests."""
        if self._guest.kind != "wasm":
            return None
        size: int = self._guest.memory.size  # type: ignore[attr-defined]
        return size // 65536

    @property
    def logs(self) -> Logs:
        """Everything the plugin logged, in order (level and message)."""
        return self.state.logs

    @property
    def notes(self) -> list[str]:
        """Hints the host left when it refused something that is probably a test-setup mistake
        (an unknown cluster, an unknown filter-state key...)."""
        return self.state.notes

    @property
    def metrics(self) -> Metrics:
        """The plugin's metrics by name (``host.metrics["requests"].value``)."""
        return self.state.metrics

    @property
    def shared_data(self) -> SharedData:
        """The shared data of the plugin's vm_id (readable and writable by the test)."""
        return self.state.shared_data

    @property
    def shared_queues(self) -> SharedQueues:
        """The shared queues of the plugin's vm_id."""
        return self.state.shared_queues

    @property
    def shared(self) -> SharedStore:
        """The store behind shared data and queues; pass it to another host to share them."""
        return self.state.shared

    @property
    def properties(self) -> dict[str, Any]:
        """Properties the test provides (nested mappings, e.g. ``{"cluster_name": "x"}``); they
        override what the host derives. Mutable."""
        return self.state.properties

    @property
    def foreign_functions(self) -> dict[str, Any]:
        """Foreign functions the test provides by name (``fn(arguments: bytes) -> bytes``)."""
        return self.state.foreign_functions

    @property
    def http_calls(self) -> list[HttpCall]:
        """Every HTTP call the plugin dispatched, in order (answer the pending ones)."""
        return self.state.http_calls

    @property
    def grpc_calls(self) -> list[GrpcCall]:
        """Every unary gRPC call the plugin started."""
        return self.state.grpc_calls

    @property
    def grpc_streams(self) -> list[GrpcStream]:
        """Every gRPC stream the plugin opened."""
        return self.state.grpc_streams

    def pending_calls(self) -> list[HttpCall | GrpcCall]:
        """HTTP and unary gRPC calls nobody answered yet (the fixture checks these at the end of a
        test). Open gRPC streams are not listed: plugins keep some open for their lifetime."""
        calls: list[HttpCall | GrpcCall] = [c for c in self.http_calls if c.pending]
        calls += [c for c in self.grpc_calls if c.pending]
        return calls

    @property
    def root_context_id(self) -> int:
        return self.state.require_root().id

    @property
    def now_ns(self) -> int:
        """The proxy's wall clock (what the plugin reads), in ns since the epoch."""
        return self.state.now_ns

    @property
    def tick_period_ms(self) -> int:
        """The root context's timer period (0: no timer)."""
        root = self.state.root
        return root.tick_period_ms if root is not None and not root.deleted else 0

    # -- driving --------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise HostMisuseError("this MockHost is closed")
        if self.failed is not None:
            raise VmFailedError("the plugin's VM failed earlier (see the chained exception); Envoy "
                                "runs no more of its callbacks") from self.failed

    def _require_serving(self) -> RootState:
        self._check_usable()
        if not self.started:
            raise HostMisuseError("proxy_on_vm_start rejected the VM configuration, so Envoy would not "
                                  "start this plugin; there is nothing to send requests through")
        if not self.configured:
            raise HostMisuseError("proxy_on_configure rejected the plugin configuration, so Envoy would "
                                  "reject the listener; assert host.configured is False instead")
        return self.state.require_root()

    def http_stream(self, *, source: str = "10.0.0.2:1234", destination: str = "10.0.0.1:80",
                    properties: Mapping[str, Any] | None = None) -> HttpStream:
        """A new HTTP stream (request and response) through the plugin.

        The plugin's context is created when the request headers arrive (as in Envoy).
        ``source``/``destination`` are the peers' "ip:port"; ``properties`` override attributes
        for this stream only.
        """
        self._require_serving()
        stream = HttpStream(self, self.state.new_http(source, destination, properties or {}))
        self._streams[stream.context_id] = stream
        return stream

    def tcp_connection(self, source: str = "10.0.0.2:1234", destination: str = "10.0.0.1:80", *,
                       properties: Mapping[str, Any] | None = None) -> TcpConnection:
        """A new TCP connection through the plugin (a network filter); call ``connect()`` first."""
        self._require_serving()
        conn = TcpConnection(self, self.state.new_tcp(source, destination, properties or {}))
        self._streams[conn.context_id] = conn
        return conn

    def advance_time(self, milliseconds: float) -> None:
        """Move the proxy's clock forward, firing ``proxy_on_tick`` for every period that ends.

        Each tick sees the clock at its own deadline; the timer re-arms one period after each
        tick (Envoy's behaviour), and a period changed in ``on_tick`` applies from then on.
        """
        if milliseconds < 0:
            raise HostMisuseError("time only moves forward")
        self._check_usable()
        state = self.state
        target = state.now_ns + int(milliseconds * 1_000_000)
        while True:
            root = state.root
            if root is None or root.deleted or root.next_tick_ns is None or root.next_tick_ns > target:
                break
            state.now_ns = max(state.now_ns, root.next_tick_ns)
            if "proxy_on_tick" not in self._guest.exports:
                root.next_tick_ns = None  # Envoy does not re-arm a timer without on_tick
                break
            self._call(root.id, "proxy_on_tick", root.id)
            root.next_tick_ns = state.now_ns + root.tick_period_ms * 1_000_000 if root.tick_period_ms else None
        state.now_ns = target

    def shutdown(self) -> bool:
        """Stop the plugin as Envoy does on a configuration change: ``proxy_on_done`` on the root,
        then ``proxy_on_delete``, unless on_done answered False (then the root waits for the
        plugin's ``proxy_done``). Returns what on_done answered."""
        self._check_usable()
        root = self.state.require_root()
        done = self._bool(self._run(root.id, "proxy_on_done", root.id))
        if done:
            self._delete_root(root)
        else:
            root.pending_done = True
        self._drain()
        return done

    def close(self) -> None:
        """Release the plugin. Idempotent; runs no callback."""
        if self._closed:
            return
        self._closed = True
        self._guest.close()

    def __enter__(self) -> MockHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<MockHost {self.kind} started={self.started} configured={self.configured}"
                f"{' failed' if self.failed else ''}{' closed' if self._closed else ''}>")

    # -- running callbacks ----------------------------------------------------------------------
    # The driver's interface for :mod:`.streams` (package-internal): _run, _drain,
    # _stop_requested, _check_usable, _forget_stream and ``state``.

    @staticmethod
    def _bool(raw: int | None) -> bool:
        return raw is None or raw != 0

    def _run(self, context_id: int, name: str, *args: int) -> int | None:
        """Run one callback if the plugin exports it (else None, Envoy's "absent"); returns its
        raw result. Leaves the deferred actions for :meth:`_drain`."""
        self._check_usable()
        if name not in self._guest.exports:
            return None
        state = self.state
        state.stop_iteration = False
        state.fatal = None
        with state.callback(context_id, name):
            try:
                raw = self._guest.call(name, args)
            except BaseException as exc:
                state.fatal = None
                self._fail_vm(exc)
                raise
        if state.fatal is not None:
            fatal, state.fatal = state.fatal, None
            self._fail_vm(fatal)
            raise fatal
        return raw

    def _fail_vm(self, exc: BaseException) -> None:
        # In wasm an exception escaping a callback unwound the plugin's stack: the instance cannot
        # be trusted again (Envoy fails the VM on a trap). Natively the same rule keeps the two
        # modes in agreement. What the failed callback deferred never happens.
        self.failed = exc
        self.state.after_call.clear()
        self.state.posted.clear()

    def _call(self, context_id: int, name: str, *args: int) -> int | None:
        """Run a callback and then everything it deferred."""
        raw = self._run(context_id, name, *args)
        self._drain()
        return raw

    def _stop_requested(self) -> bool:
        """Whether the callback that just ran asked Envoy to stop regardless of its answer
        (send_local_response); cleared by reading."""
        stopped, self.state.stop_iteration = self.state.stop_iteration, False
        return stopped

    def _wakeup(self) -> None:
        """Something was posted to this VM: deliver it now if the VM is idle (no callback running,
        nothing draining), else the drain in progress or the end of the callback delivers it."""
        if not self._busy and self.state.current is None and not self._closed and self.failed is None:
            self._drain()

    def _drain(self) -> None:
        """Apply deferred actions, then deliver posted notifications, until none are left.

        Callbacks run while draining defer their own actions into the same queue; the outermost
        drain applies them in order (nested calls return at once), as Envoy's after-VM-call
        action loop does.
        """
        if self._busy:
            return
        self._busy = True
        state = self.state
        try:
            while state.after_call or state.posted:
                if state.after_call:
                    self._apply(state.after_call.popleft())
                    continue
                context_id, token = state.posted.popleft()
                if isinstance(state.contexts.get(context_id), RootState):
                    self._run(context_id, "proxy_on_queue_ready", context_id, token)
        finally:
            self._busy = False

    def _apply(self, deferred: Deferred) -> None:
        if deferred.kind == "delete_root":
            root = self.state.contexts.get(deferred.context_id)
            if isinstance(root, RootState):
                self._delete_root(root)
            return
        target = self._streams.get(deferred.context_id)
        if target is not None:  # else the stream is gone and Envoy's callbacks would be null
            target._apply(deferred)

    def _delete_root(self, root: RootState) -> None:
        self._run(root.id, "proxy_on_delete", root.id)
        self.state.forget(root.id)

    def _forget_stream(self, context_id: int) -> None:
        self._streams.pop(context_id, None)
        self.state.forget(context_id)

    # -- answering calls (HttpCall.respond & co. land here) -------------------------------------

    def _root_for_call(self, root_id: int, what: str) -> RootState:
        self._check_usable()
        if self._busy or self.state.current is not None:
            raise HostMisuseError(f"answer {what} from the test, not from inside a callback")
        root = self.state.contexts.get(root_id)
        if not isinstance(root, RootState):
            raise HostMisuseError(f"the root context that made {what} is gone; Envoy cancelled the call")
        return root

    def _answer_http_call(self, call: HttpCall, headers: list[tuple[bytes, bytes]] | None,
                          body: bytes, trailers: list[tuple[bytes, bytes]] | None) -> None:
        root = self._root_for_call(call.root_context_id, f"HTTP call {call.token}")
        state = self.state
        state.end_call(call.token)
        if headers is None:
            root.status_code, root.status_message = _BROKEN_CONNECTION, b"reset"
            counts = (0, 0, 0)
        else:
            trailer_map = HeaderMapState(trailers) if trailers else None
            root.http_call_response = (HeaderMapState(headers), body, trailer_map)
            counts = (len(headers), len(body), len(trailers or ()))
        try:
            self._run(root.id, "proxy_on_http_call_response", root.id, call.token, *counts)
        finally:
            root.http_call_response = None
            root.status_message = b""
        self._drain()

    def _answer_grpc(self, token: int, event: str, payload: object, status: int = 0,
                     message: str = "") -> None:
        call = self.state.live_call(token)
        if not isinstance(call, (GrpcCall, GrpcStream)):
            raise HostMisuseError(f"gRPC {token} is no longer open on the host (the plugin cancelled "
                                  "or closed it)")
        root = self._root_for_call(call.root_context_id, f"gRPC {token}")
        try:
            if event == "initial_metadata":
                root.grpc_initial_metadata = HeaderMapState(payload)  # type: ignore[arg-type]
                self._run(root.id, "proxy_on_grpc_receive_initial_metadata", root.id, token,
                          len(root.grpc_initial_metadata))
            elif event == "trailing_metadata":
                root.grpc_trailing_metadata = HeaderMapState(payload)  # type: ignore[arg-type]
                self._run(root.id, "proxy_on_grpc_receive_trailing_metadata", root.id, token,
                          len(root.grpc_trailing_metadata))
            elif event == "message":
                root.grpc_receive_buffer = bytearray(payload)  # type: ignore[call-overload]
                if isinstance(call, GrpcCall):
                    self.state.end_call(token)  # a unary call is over once it answered
                self._run(root.id, "proxy_on_grpc_receive", root.id, token, len(payload))  # type: ignore[arg-type]
            elif event == "close":
                if isinstance(call, GrpcCall) or call.local_closed:
                    self.state.end_call(token)
                if "proxy_on_grpc_close" in self._guest.exports:
                    root.status_code, root.status_message = status, message.encode()
                self._run(root.id, "proxy_on_grpc_close", root.id, token, status)
        finally:
            root.grpc_initial_metadata = root.grpc_trailing_metadata = None
            root.grpc_receive_buffer = None
            root.status_message = b""
        self._drain()
