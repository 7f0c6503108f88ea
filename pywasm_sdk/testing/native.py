"""Runs a plugin's Python in this process, served by the mock host instead of a proxy.

Fast and debuggable (a breakpoint in the plugin works), and as close to the .wasm as Python
allows: each guest has its own SDK runtime (:class:`pywasm_sdk._runtime.Runtime`: registrations,
contexts, calls) and its own copy of the plugin's modules, imported fresh with the same path
rules as ``pywasm build``; the runtime's entry points are called, only for the callbacks the
.wasm would export (``used_callbacks()``); the host is bound behind the SDK's one seam
(:mod:`pywasm_sdk.hostcalls`) through an adapter that checks arguments the way the module's
bridge does (a wrong type is a TypeError, an int out of range an OverflowError, a str that is
not valid Unicode a UnicodeEncodeError: exceptions the plugin can catch). A callback result the
ABI cannot carry is logged as the .wasm's bridge logs it and the callback answers its default.

Around each callback (and the import) the guest puts in place what the plugin would see in its
own VM, and takes it away afterwards, so several native guests (of one plugin or of several) can
be open side by side in one process: its runtime and its hostcalls, its modules in
``sys.modules`` and its folder on ``sys.path``; ``print``, ``sys.stderr`` and the ``logging``
root logger writing to the proxy log; ``time.time()``, ``time.monotonic()``,
``time.perf_counter()`` (and their ``_ns`` forms) reading the host's clocks and ``time.sleep()``
returning at once, as WASI gives them to the .wasm; the VM's environment variables in
``os.environ``. Only the plugin's own modules (those its folder provides on the path, as the
build's check reports them) are imported per guest; a virtual environment inside the project
folder, and the test modules beside the plugin, are left alone.

Not followed natively: ``datetime.now()`` and functions bound before the callback (``from time
import time`` at module level) read the machine's clock.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from .. import _runtime, hostcalls
from .. import log as sdk_log
from .._abi import LogLevel
from ..errors import NoHostError
from ..tooling import abi as abi_mod
from ..tooling.bridge import callback_default
from ..tooling.build import BuildError, resolve_plugin
from ..tooling.preflight import async_problems
from .errors import HostMisuseError, PluginLoadError
from .host import HostState

__all__ = ["NativeGuest"]

_RANGES = {"u32": (0, (1 << 32) - 1), "i32": (-(1 << 31), (1 << 31) - 1),
           "u64": (0, (1 << 64) - 1), "i64": (-(1 << 63), (1 << 63) - 1)}


def _check_argument(call: str, name: str, kind: str, value: Any) -> Any:
    """Refuse what the module's bridge refuses (pywasm_sdk/tooling/bridge.py converts with
    CPython's C API), with the exception it raises there."""
    if kind == "bytes":
        if type(value) is str:  # a str is passed as its UTF-8 (lone surrogates: UnicodeEncodeError)
            return value.encode("utf-8")
        if not isinstance(value, bytes):
            raise TypeError(f"{call}(): {name} must be bytes, not {type(value).__name__}")
    elif kind == "string":
        if not isinstance(value, str):
            raise TypeError(f"{call}(): {name} must be str, not {type(value).__name__}")
        value.encode("utf-8")  # lone surrogates: UnicodeEncodeError, as PyUnicode_AsUTF8AndSize
    elif not isinstance(value, int):
        raise TypeError(f"{call}(): {name} must be int, not {type(value).__name__}")
    if kind not in ("bytes", "string"):
        low, high = _RANGES["u32" if kind == "bool" else kind]
        if not low <= value <= high:
            raise OverflowError(f"{call}(): {name}={value} does not fit in {kind}")
        return int(value)
    return value


class _Hostcalls:
    """The object installed into :mod:`pywasm_sdk.hostcalls`: one checked function per hostcall.

    A MockHostError (a trap the wasm would have, a host-level error), or any error of the host
    itself, is remembered as the host's fatal error so the driver raises it into the test even
    when the plugin's code catches it, as nothing in a wasm plugin can catch a trap.
    """

    def __init__(self, host: HostState) -> None:
        abi = abi_mod.load()
        for call in (*abi.hostcalls.values(), *abi.sdk_imports.values()):
            setattr(self, call.name, self._make(host, call))

    @staticmethod
    def _make(host: HostState, call: abi_mod.Hostcall) -> Callable[..., Any]:
        method = getattr(host, call.name)
        params = call.params

        def hostcall(*args: Any) -> Any:
            if len(args) != len(params):
                raise TypeError("pywasm: a raw hostcall was called with the wrong number of arguments")
            checked = [_check_argument(call.name, p.name, p.type, a) for p, a in zip(params, args)]
            try:
                return method(*checked)
            except BaseException as exc:
                if host.fatal is None:
                    host.fatal = exc
                raise

        hostcall.__name__ = call.name
        return hostcall


class _Sandbox:
    """What a guest's plugin sees while it runs (see the module docstring); entered around every
    callback and the import, restored on exit. Nests: a callback of another guest may run inside
    one of this guest's (a shared queue between two hosts)."""

    _MISSING = object()

    def __init__(self, guest: NativeGuest) -> None:
        self._guest = guest
        self._stdout = sdk_log.LineWriter(LogLevel.INFO)
        self._stderr = sdk_log.LineWriter(LogLevel.ERROR)
        self._handler = sdk_log.proxy_log_handler()
        self._plugin_level: int | None = None
        self._clock: dict[str, Callable[..., Any]] = {}
        self._env: dict[str, str] = {}
        self._saved: list[tuple[Any, ...]] = []

    def use_host(self, host: HostState) -> None:
        """From now on time reads ``host``'s clocks (from the first callback; not during the import)."""
        self._clock = {
            "time": lambda: host.now_ns / 1e9, "time_ns": lambda: host.now_ns,
            "monotonic": lambda: host.monotonic_ns / 1e9, "monotonic_ns": lambda: host.monotonic_ns,
            "perf_counter": lambda: host.monotonic_ns / 1e9, "perf_counter_ns": lambda: host.monotonic_ns,
            "sleep": lambda _seconds: None,
        }
        self._env = dict(host.config.env)

    def __enter__(self) -> None:
        guest = self._guest
        runtime = _runtime.activate(guest.runtime)
        table = hostcalls.use(guest.hostcalls)
        modules = {n: sys.modules.get(n, self._MISSING) for n in guest.modules}
        sys.modules.update(guest.modules)
        sys.path.insert(0, guest.folder)
        root = logging.getLogger()
        output = (sys.stdout, sys.stderr, root.level)
        sys.stdout, sys.stderr = self._stdout, self._stderr
        if self._plugin_level is not None:
            root.setLevel(self._plugin_level)
        root.addHandler(self._handler)
        clock = {name: getattr(time, name) for name in self._clock}
        for name, fn in self._clock.items():
            setattr(time, name, fn)
        env = {k: os.environ.get(k) for k in self._env}
        os.environ.update(self._env)  # what the SDK copied there at on_vm_start, in the .wasm
        self._saved.append((runtime, table, modules, output, clock, env))

    def __exit__(self, *exc: object) -> None:
        runtime, table, modules, output, clock, env = self._saved.pop()
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for name, fn in clock.items():
            setattr(time, name, fn)
        root = logging.getLogger()
        root.removeHandler(self._handler)
        self._plugin_level = root.level  # the plugin's (refresh_level sets it), kept for next time
        sys.stdout, sys.stderr, level = output
        root.setLevel(level)
        try:
            sys.path.remove(self._guest.folder)
        except ValueError:
            pass
        for name, module in modules.items():
            if module is self._MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        hostcalls.use(table)
        _runtime.activate(runtime)


class NativeGuest:
    """A plugin's Python, imported into this process with a runtime of its own."""

    kind = "native"

    def __init__(self, plugin: str | os.PathLike[str]) -> None:
        try:
            self.source = resolve_plugin(plugin)
        except BuildError as exc:
            raise PluginLoadError(str(exc)) from None
        self._abi = abi_mod.load()
        #: callback -> positions of its bool parameters (end_of_stream), made bools as the bridge does
        self._bools = {name: frozenset(i for i, p in enumerate(cb.params) if p.type == "bool")
                       for name, cb in self._abi.callbacks.items()}
        self._exports: frozenset[str] = frozenset()
        self._callbacks: dict[str, Callable[..., Any]] | None = None
        #: the SDK runtime of this plugin (registrations, contexts, calls)
        self.runtime = _runtime.Runtime()
        #: the hostcalls bound while the plugin runs (none until started)
        self.hostcalls: hostcalls.Table = hostcalls.NO_HOST
        #: the plugin's own modules, by name (in sys.modules only while the plugin runs)
        self.modules: dict[str, Any] = {}
        self.folder = str(self.source.folder)
        self._sandbox = _Sandbox(self)

    @property
    def exports(self) -> frozenset[str]:
        return self._exports

    def start(self, host: HostState) -> None:
        self._import()
        self.hostcalls = hostcalls.bind(_Hostcalls(host))
        self._sandbox.use_host(host)
        self._exports = frozenset(self.runtime.used_callbacks())
        self._callbacks = self.runtime.entry_points()

    def _import(self) -> None:
        """Import the plugin into this guest's runtime, fresh: earlier copies of its modules
        (another guest's, a test's own ``import plugin``) are set aside meanwhile and put back."""
        source = self.source
        aside = {n: m for n, m in list(sys.modules.items()) if n == source.module or source.owns(n, m)}
        for name in aside:
            del sys.modules[name]
        before = set(sys.modules)
        try:
            with self._sandbox:
                __import__(source.module)
        except NoHostError as exc:
            raise PluginLoadError(f"{source.main_file}: the plugin called the host while it was "
                                  f"imported ({exc}); `pywasm build` would fail the same way") from None
        except BaseException as exc:  # noqa: BLE001 - any failure of the plugin's import
            text = "".join(traceback.format_exception(exc)).rstrip()
            raise PluginLoadError(f"importing {source.main_file} raised:\n{text}") from None
        finally:
            for name in set(sys.modules) - before:
                module = sys.modules[name]
                if name == source.module or source.owns(name, module):
                    self.modules[name] = sys.modules.pop(name)
            sys.modules.update(aside)
        if not self.runtime.registrations():
            raise PluginLoadError(f"{source.main_file} registers no root context: call "
                                  "register(...) at module level")
        problems = async_problems(self.runtime.registrations())
        if problems:  # `pywasm build` refuses the plugin for the same reason
            raise PluginLoadError(f"{source.main_file}: {'; '.join(problems)}")

    def call(self, name: str, args: tuple[int, ...]) -> int | None:
        if self._callbacks is None:
            raise HostMisuseError(f"the native plugin {self.source.main_file} is closed")
        bools = self._bools[name]  # end_of_stream as a bool, as the bridge makes it (PyBool_FromLong)
        if bools:
            args = tuple(bool(a) if i in bools else a for i, a in enumerate(args))
        with self._sandbox:  # print/stderr/logging go to the proxy log, as in the .wasm
            result = self._callbacks[name](*args)
        return self._check_result(name, args[0] if args else 0, result)

    def _check_result(self, name: str, context_id: int, result: Any) -> int | None:
        """The answer as the bridge converts it (PyLong_AsLong); one it cannot convert is
        reported as the bridge reports it (sys.unraisablehook, so in the proxy log) and the
        callback answers its default. (The SDK's entry points only answer what the ABI carries:
        this is for what does not come through them.)"""
        callback = self._abi.callbacks[name]
        if callback.result is None:
            return None
        if isinstance(result, int) and -(1 << 31) <= result <= 0xFFFFFFFF:
            return int(result) & 0xFFFFFFFF
        problem = (f"TypeError: '{type(result).__name__}' object cannot be interpreted as an integer"
                   if not isinstance(result, int) else "OverflowError: Python int too large to convert to C long")
        with self._sandbox:
            print(f"Exception ignored in: {name}\n{problem}", file=sys.stderr)
        return callback_default(callback)

    def close(self) -> None:
        """Let go of the plugin: its modules and runtime go with this guest (idempotent)."""
        self._callbacks = None
        self.hostcalls = hostcalls.NO_HOST
