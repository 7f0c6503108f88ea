"""Runs a plugin's Python in this process, served by the mock host instead of a proxy.

Fast and debuggable (a breakpoint in the plugin works), and as close to the .wasm as Python
allows: the plugin is imported fresh (same path rules as ``pywasm build``), the SDK's real
dispatcher (:class:`pywasm_sdk._dispatch.Exports`) is called, only for the callbacks the .wasm
would export (``used_callbacks()``), and the host is installed behind the SDK's one seam
(:func:`pywasm_sdk.hostcalls.install`) through an adapter that checks arguments the way the
module's bridge does (a wrong type is a TypeError, an int out of range an OverflowError, a str
that is not valid Unicode a UnicodeEncodeError: exceptions the plugin can catch).
``print``, ``sys.stderr`` and ``logging`` reach the proxy log during callbacks, as in the .wasm.
A callback result the ABI cannot carry (not an int, out of range) is logged as the .wasm's
bridge logs it and the callback answers its default.

One at a time: the SDK keeps its runtime state (registrations, contexts, the installed host) in
module globals, so only one native guest can be started per process at a time; :meth:`close`
(called by ``MockHost.close()``, the fixtures and ``with``) restores everything (uninstalls the
host, resets the dispatcher, drops the plugin's modules from ``sys.modules``) so another can
follow. Wasm guests have no such limit. While a native plugin runs, the VM environment the SDK
copies into ``os.environ`` at ``on_vm_start`` is visible to the whole process; close restores
``os.environ``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from .. import _dispatch, hostcalls
from .. import log as sdk_log
from ..errors import NoHostError
from ..tooling import abi as abi_mod
from ..tooling.bridge import callback_default
from ..tooling.build import BuildError, resolve_plugin
from .errors import HostMisuseError, PluginLoadError
from .host import HostState

__all__ = ["NativeGuest"]

_RANGES = {"u32": (0, (1 << 32) - 1), "i32": (-(1 << 31), (1 << 31) - 1),
           "u64": (0, (1 << 64) - 1), "i64": (-(1 << 63), (1 << 63) - 1)}


def _check_argument(call: str, name: str, kind: str, value: Any) -> Any:
    """Refuse what the module's bridge refuses (pywasm_sdk/tooling/bridge.py converts with
    CPython's C API), with the exception it raises there."""
    if kind == "bytes":
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


class NativeGuest:
    """A plugin's Python, imported into this process and driven through the SDK's dispatcher."""

    kind = "native"
    #: the guest currently holding the SDK's module-level state (one per process)
    _active: ClassVar[NativeGuest | None] = None

    def __init__(self, plugin: str | os.PathLike[str]) -> None:
        try:
            self.source = resolve_plugin(plugin)
        except BuildError as exc:
            raise PluginLoadError(str(exc)) from None
        self._abi = abi_mod.load()
        self._exports: frozenset[str] = frozenset()
        self._dispatch: _dispatch.Exports | None = None
        self._modules: list[str] = []
        self._output = sdk_log.PluginOutput()
        self._environ: dict[str, str] | None = None

    @property
    def exports(self) -> frozenset[str]:
        return self._exports

    def start(self, host: HostState) -> None:
        active = NativeGuest._active
        if active is not None and active is not self:
            raise HostMisuseError(
                f"a native MockHost for {active.source.main_file} is still open; close it first "
                "(host.close(), or use the mock_host fixture / a with block). Native hosts share the "
                "SDK's module-level state, so only one can run at a time (wasm hosts have no limit)")
        NativeGuest._active = self
        self._environ = dict(os.environ)  # the SDK puts the VM's env into os.environ: undo at close
        try:
            self._import()
            hostcalls.install(_Hostcalls(host))
        except BaseException:
            self.close()
            raise
        self._exports = frozenset(_dispatch.used_callbacks())
        self._dispatch = _dispatch.Exports()

    def _is_plugin_module(self, module: Any) -> bool:
        file = getattr(module, "__file__", None)
        if not file:
            return False
        try:
            return Path(file).resolve().is_relative_to(self.source.folder)
        except (OSError, ValueError):
            return False

    def _import(self) -> None:
        _dispatch.reset()
        hostcalls.uninstall()
        for name, module in list(sys.modules.items()):
            if name == self.source.module or self._is_plugin_module(module):
                del sys.modules[name]  # import fresh, and never another folder's "plugin"
        before = set(sys.modules)
        sys.path.insert(0, str(self.source.folder))
        try:
            __import__(self.source.module)
        except NoHostError as exc:
            raise PluginLoadError(f"{self.source.main_file}: the plugin called the host while it was "
                                  f"imported ({exc}); `pywasm build` would fail the same way") from None
        except BaseException as exc:  # noqa: BLE001 - any failure of the plugin's import
            text = "".join(traceback.format_exception(exc)).rstrip()
            raise PluginLoadError(f"importing {self.source.main_file} raised:\n{text}") from None
        finally:
            self._modules = [n for n in set(sys.modules) - before if self._is_plugin_module(sys.modules[n])]
        if not _dispatch.registrations():
            raise PluginLoadError(f"{self.source.main_file} registers no root context: call "
                                  "register(...) at module level")

    def call(self, name: str, args: tuple[int, ...]) -> int | None:
        if NativeGuest._active is not self or self._dispatch is None:
            raise HostMisuseError(f"the native plugin {self.source.main_file} is closed")
        with self._output:  # print/stderr/logging go to the proxy log, as in the .wasm
            result = getattr(self._dispatch, name)(*args)
        return self._check_result(name, args[0] if args else 0, result)

    def _check_result(self, name: str, context_id: int, result: Any) -> int | None:
        """The answer as the bridge converts it (PyLong_AsLong); one it cannot convert is
        reported as the bridge reports it (sys.unraisablehook, so in the proxy log) and the
        callback answers its default."""
        callback = self._abi.callbacks[name]
        if callback.result is None:
            return None
        if isinstance(result, int) and -(1 << 31) <= result <= 0xFFFFFFFF:
            return int(result) & 0xFFFFFFFF
        problem = (f"TypeError: '{type(result).__name__}' object cannot be interpreted as an integer"
                   if not isinstance(result, int) else "OverflowError: Python int too large to convert to C long")
        with self._output:
            print(f"Exception ignored in: {name}\n{problem}", file=sys.stderr)
        return callback_default(callback)

    def close(self) -> None:
        if NativeGuest._active is not self:
            return
        try:
            hostcalls.uninstall()
            _dispatch.reset()
            for name in self._modules + [self.source.module]:
                module = sys.modules.get(name)
                if module is not None and self._is_plugin_module(module):
                    del sys.modules[name]
            folder = str(self.source.folder)
            if folder in sys.path:
                sys.path.remove(folder)
            if self._environ is not None and dict(os.environ) != self._environ:
                os.environ.clear()
                os.environ.update(self._environ)
        finally:
            self._dispatch = None
            NativeGuest._active = None

