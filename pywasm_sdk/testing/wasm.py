"""Runs a built .wasm in wasmtime, as Envoy's V8 runtime runs it.

Rule of this module: nothing about the ABI is written here by hand. Every ``env.proxy_*`` import
is generated from abi/proxy_wasm.yaml (:func:`pywasm_sdk.tooling.abi.load`): the glue reads each
parameter (ints, or a ``(ptr, len)`` pair for ``bytes``/``string``) from the call, calls the
HostState method of the same name, and writes the outputs through the out-pointers, allocating
host-to-guest data with the module's allocator exactly like Envoy (``malloc`` if exported, else
``proxy_on_memory_allocate``; a zero-length output writes ptr=0, len=0 and allocates nothing). A
memory access out of bounds answers INVALID_MEMORY_ACCESS, as Envoy does.

Loading fails loudly (:class:`~.errors.PluginLoadError`) for a module Envoy would refuse: no ABI
0.2.1 marker, no ``memory`` or allocator, an import the host does not provide (each named), an
import or callback export with a signature other than the ABI's. The module's start functions run
like Envoy's ``startVm`` (``_initialize`` then ``main``/``__main_void``, or ``_start``) with
only logging, clocks, randomness and environment allowed; the allocator runs with only logging
and clocks allowed. Anything else called then traps, as in Envoy ("restricted_callback").

A trap becomes :class:`~.errors.PluginTrap` with the Python traceback the plugin wrote during the
callback when there is one, else the wasm backtrace. Compiled modules come from a
:class:`~.cache.ModuleCache`, so a plugin is compiled once per machine, not once per test.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

from .._abi import Status
from ..tooling import abi as abi_mod
from ..wire import to_str
from ._memory import GuestMemory
from .cache import ModuleCache
from .errors import MockHostError, PluginLoadError, PluginTrap
from .host import HostState
from .wasi import MODULE as WASI_MODULE
from .wasi import Wasi

__all__ = ["WasmGuest"]

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_ENV = "env"
_WASI_MODULES = (WASI_MODULE, "wasi_unstable")
#: Envoy caps a VM's memory at 1 GiB (proxy-wasm-cpp-host limits.h)
_MAX_MEMORY = 1 << 30
_OTHER_ABI_MARKERS = ("proxy_abi_version_0_2_0", "proxy_abi_version_0_1_0")

#: what Envoy lets a module call while its start functions run (cpp-host WasmBase::startVm)
_INIT_ALLOWED = frozenset(
    ["env.proxy_log", "env.emscripten_notify_memory_growth"]
    + [f"{m}.{f}" for m in _WASI_MODULES for f in (
        "fd_write", "args_sizes_get", "args_get", "environ_sizes_get", "environ_get",
        "clock_time_get", "clock_res_get", "random_get", "poll_oneoff", "fd_fdstat_get",
        "fd_fdstat_set_flags", "fd_prestat_dir_name", "fd_prestat_get")]
)
#: what Envoy lets the allocator call (cpp-host WasmBase::allocMemory)
_ALLOC_ALLOWED = frozenset(
    ["env.proxy_log"]
    + [f"{m}.{f}" for m in _WASI_MODULES for f in ("fd_write", "clock_time_get", "poll_oneoff")]
)
_TRACEBACK = "Traceback (most recent call last)"
#: frames shown of a trap's backtrace (Envoy prints at most 20: PROXY_WASM_HOST_MAX_BACKTRACE_FRAMES_COUNT)
_MAX_FRAMES = 20


class _RestrictedCall(MockHostError):
    """An import called where Envoy forbids it; becomes a PluginTrap at the callback boundary."""


def _signed32(value: int) -> int:
    value &= _M32
    return value - (1 << 32) if value >= 1 << 31 else value


def _signature(functype: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(t) for t in functype.params), tuple(str(t) for t in functype.results)


def _valtypes(names: list[str] | tuple[str, ...]) -> list[wasmtime.ValType]:
    return [wasmtime.ValType.i64() if n == "i64" else wasmtime.ValType.i32() for n in names]


def _describe(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return f"({' '.join(sig[0])}) -> ({' '.join(sig[1])})"


class WasmGuest:
    """A proxy-wasm module in wasmtime: one instance, one store, like one Envoy worker's VM.

    Create it with the module's bytes or path; the MockHost calls :meth:`start` with its
    HostState. Wasm guests are independent of each other: any number may live in one process.
    """

    kind = "wasm"

    def __init__(self, wasm: bytes | str | os.PathLike[str], *, cache: ModuleCache | None = None,
                 name: str | None = None) -> None:
        if isinstance(wasm, (bytes, bytearray)):
            data, self.name = bytes(wasm), name or "<bytes>"
        else:
            path = Path(wasm)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise PluginLoadError(f"{path}: cannot read the module: {exc.strerror}") from None
            self.name = name or str(path)
        self._abi = abi_mod.load()
        self._cache = cache or ModuleCache.shared()
        try:
            self.module = self._cache.load(data)
        except wasmtime.WasmtimeError as exc:
            raise PluginLoadError(f"{self.name} is not a valid wasm module: "
                                  f"{str(exc).strip().splitlines()[0]}") from None
        self._exports_by_name = {e.name: e.type for e in self.module.exports}
        self._check_exports()
        self._host: HostState | None = None
        self._store: wasmtime.Store | None = None
        self._memory: GuestMemory | None = None
        self._funcs: dict[str, wasmtime.Func] = {}
        self._alloc: wasmtime.Func | None = None

    # -- loading --------------------------------------------------------------------------------

    @property
    def exports(self) -> frozenset[str]:
        return frozenset(n for n in self._exports_by_name if n in self._abi.callbacks)

    def _check_exports(self) -> None:
        exports = self._exports_by_name
        if self._abi.marker not in exports:
            other = next((m for m in _OTHER_ABI_MARKERS if m in exports), None)
            if other:
                raise PluginLoadError(f"{self.name} is built for proxy-wasm ABI "
                                      f"{other.removeprefix('proxy_abi_version_').replace('_', '.')}; "
                                      f"this host implements ABI {self._abi.version} (like Envoy does "
                                      "for modules exporting proxy_abi_version_0_2_1)")
            raise PluginLoadError(f"{self.name} is not a proxy-wasm module: it does not export "
                                  f"{self._abi.marker}")
        if not isinstance(exports.get(self._abi.memory_export), wasmtime.MemoryType):
            raise PluginLoadError(f"{self.name} exports no memory named {self._abi.memory_export!r}")
        allocator = next((n for n in ("malloc", self._abi.allocator_export) if n in exports), None)
        if allocator is None:
            raise PluginLoadError(f"{self.name} exports no allocator (malloc or "
                                  f"{self._abi.allocator_export}): the host could not pass it data")
        alloc_type = exports[allocator]
        if not isinstance(alloc_type, wasmtime.FuncType) or _signature(alloc_type) != (("i32",), ("i32",)):
            raise PluginLoadError(f"{self.name}: export {allocator} must be (i32) -> (i32)")
        self._allocator_name = allocator
        for name, callback in self._abi.callbacks.items():
            ty = exports.get(name)
            if ty is None:
                continue
            params, results = callback.core_signature()
            expected = (tuple(params), tuple(results))
            if not isinstance(ty, wasmtime.FuncType) or _signature(ty) != expected:
                raise PluginLoadError(f"{self.name}: export {name} has signature "
                                      f"{_describe(_signature(ty)) if isinstance(ty, wasmtime.FuncType) else ty}, "
                                      f"the host calls it as {_describe(expected)}")

    def start(self, host: HostState) -> None:
        """Instantiate the module against ``host`` and run its start functions."""
        self._host = host
        store = wasmtime.Store(self._cache.engine)
        store.set_limits(memory_size=_MAX_MEMORY)
        if self._cache.fuel is not None:
            store.set_fuel(self._cache.fuel)
        self._store = store
        wasi = Wasi(host, lambda: self._mem)
        imports: list[wasmtime.Func] = []
        problems: list[str] = []
        for imp in self.module.imports:
            func = self._import(imp, wasi, problems)
            if func is not None:
                imports.append(func)
        if problems:
            raise PluginLoadError(f"{self.name} cannot be loaded (Envoy would refuse it too):\n  "
                                  + "\n  ".join(problems))
        try:
            instance = wasmtime.Instance(store, self.module, imports)
        except wasmtime.WasmtimeError as exc:
            raise PluginLoadError(f"{self.name}: instantiation failed: {str(exc).strip()}") from None
        exports = instance.exports(store)
        self._memory = GuestMemory(exports[self._abi.memory_export], store)  # type: ignore[arg-type]
        self._alloc = exports[self._allocator_name]  # type: ignore[assignment]
        self._funcs = {n: exports[n] for n in self.exports}  # type: ignore[misc]
        self._run_start_functions(exports)

    @property
    def memory(self) -> GuestMemory:
        """The instance's linear memory (``read``/``write``), for debugging and host tests; only
        while the module runs (between start and close)."""
        if self._memory is None:
            raise PluginLoadError(f"{self.name}: the module is not running")
        return self._memory

    @property
    def fuel_left(self) -> int | None:
        """The instance's fuel left when its cache meters fuel (``ModuleCache(fuel=...)``): the
        difference over a callback is how many wasm instructions it ran. None otherwise."""
        if self._cache.fuel is None or self._store is None:
            return None
        return self._store.get_fuel()

    @property
    def _mem(self) -> GuestMemory:
        assert self._memory is not None, "the instance is not running"
        return self._memory

    def _run_start_functions(self, exports: Any) -> None:
        host = self._host
        assert host is not None and self._store is not None
        names = [n for n in ("_initialize", "main", "__main_void", "_start") if n in self._exports_by_name]
        if "_initialize" in names:
            order = ["_initialize"] + (["main"] if "main" in names else
                                       ["__main_void"] if "__main_void" in names else [])
        else:
            order = ["_start"] if "_start" in names else []
        for name in order:
            args = (0, 0) if name == "main" else ()
            mark = len(host.logs)
            with host.restricted(name, _INIT_ALLOWED):
                try:
                    exports[name](self._store, *args)
                except (wasmtime.Trap, wasmtime.WasmtimeError, _RestrictedCall) as exc:
                    raise self._trap(name, 0, exc, mark) from None

    def _import(self, imp: wasmtime.ImportType, wasi: Wasi, problems: list[str]) -> wasmtime.Func | None:
        where = f"{imp.module}.{imp.name}"
        ty = imp.type
        if not isinstance(ty, wasmtime.FuncType):
            problems.append(f"import {where}: imports a {type(ty).__name__}; Envoy provides functions only")
            return None
        actual = _signature(ty)
        if imp.module == _ENV and imp.name in self._abi.hostcalls:
            call = self._abi.hostcalls[imp.name]
            params, results = call.core_signature()
            expected = (tuple(params), tuple(results))
            impl: Callable[..., Any] = self._hostcall(call)
        elif imp.module == _ENV and imp.name == "pthread_equal":
            expected, impl = (("i32", "i32"), ("i32",)), lambda a, b: int(a == b)
        elif imp.module == _ENV and imp.name == "emscripten_notify_memory_growth":
            expected, impl = (("i32",), ()), lambda _index: None
        elif imp.module in _WASI_MODULES and imp.name in self._abi.wasi_allowed:
            params, results = self._abi.wasi_allowed[imp.name]
            expected = (tuple(params), tuple(results))
            impl = self._wasi_call(where, wasi.functions[imp.name])
        else:
            problems.append(f"import {where} {_describe(actual)}: not provided by the host (Envoy with ABI "
                            f"{self._abi.version} provides env.proxy_* of the ABI and "
                            f"{WASI_MODULE}.{{{', '.join(self._abi.wasi_allowed)}}})")
            return None
        if actual != expected:
            problems.append(f"import {where}: signature {_describe(actual)}, the host provides "
                            f"{_describe(expected)}")
            return None
        assert self._store is not None
        return wasmtime.Func(self._store, wasmtime.FuncType(_valtypes(expected[0]), _valtypes(expected[1])),
                             impl)

    def _check_allowed(self, where: str) -> None:
        host = self._host
        assert host is not None
        if host.allowed is not None and where not in host.allowed:
            raise _RestrictedCall(f"restricted_callback: {where} was called during "
                                  f"{host.restricted_phase}, where Envoy does not allow it")

    def _wasi_call(self, where: str, fn: Callable[..., int | None]) -> Callable[..., int | None]:
        def call(*raw: int) -> int | None:
            self._check_allowed(where)
            return fn(*raw)
        return call

    def _hostcall(self, call: abi_mod.Hostcall) -> Callable[..., int]:
        """The import function for one hostcall, generated from its ABI description."""
        assert self._host is not None
        method = getattr(self._host, call.name)
        params = [p.type for p in call.params]
        outputs = [r.type for r in call.returns]
        where = f"{_ENV}.{call.name}"

        def hostcall(*raw: int) -> int:
            self._check_allowed(where)
            memory = self._mem
            args: list[Any] = []
            i = 0
            for kind in params:
                if kind in ("bytes", "string"):
                    data = memory.read(raw[i] & _M32, raw[i + 1] & _M32)
                    if data is None:
                        return Status.INVALID_MEMORY_ACCESS
                    args.append(to_str(data) if kind == "string" else data)
                    i += 2
                else:
                    value = raw[i]
                    args.append(value & _M32 if kind in ("u32", "bool") else value & _M64 if kind == "u64"
                                else _signed32(value) if kind == "i32" else value)
                    i += 1
            result = method(*args)
            if not outputs:
                return int(result)
            status, *values = result
            if status != Status.OK:
                return int(status)
            for kind, value in zip(outputs, values):
                if kind == "bytes":
                    ptr_ptr, size_ptr = raw[i] & _M32, raw[i + 1] & _M32
                    i += 2
                    address = self._copy_in(value) if value else 0
                    if address is None or not (memory.write_u32(ptr_ptr, address)
                                               and memory.write_u32(size_ptr, len(value))):
                        return Status.INVALID_MEMORY_ACCESS
                else:
                    write = memory.write_u64 if kind == "u64" else memory.write_u32
                    if not write(raw[i] & _M32, value):
                        return Status.INVALID_MEMORY_ACCESS
                    i += 1
            return Status.OK

        hostcall.__name__ = call.name
        return hostcall

    def _copy_in(self, data: bytes) -> int | None:
        """Allocate ``len(data)`` bytes in the guest with its allocator and copy ``data`` there."""
        host, store = self._host, self._store
        assert host is not None and store is not None and self._alloc is not None
        with host.restricted(self._allocator_name, _ALLOC_ALLOWED):
            address: int = self._alloc(store, _signed32(len(data))) & _M32
        if not address or not self._mem.write(address, data):
            return None
        return address

    # -- calling --------------------------------------------------------------------------------

    def call(self, name: str, args: tuple[int, ...]) -> int | None:
        host, store = self._host, self._store
        if host is None or store is None:
            raise PluginLoadError(f"{self.name}: the module is not running (closed or never started)")
        func = self._funcs[name]
        mark = len(host.logs)
        try:
            result = func(store, *(_signed32(a) for a in args))
        except (wasmtime.Trap, wasmtime.WasmtimeError, _RestrictedCall) as exc:
            raise self._trap(name, host.current or 0, exc, mark) from None
        return None if result is None else int(result) & _M32

    def _trap(self, where: str, context_id: int, exc: BaseException, mark: int) -> PluginTrap:
        host = self._host
        assert host is not None
        if isinstance(exc, _RestrictedCall):
            reason = str(exc)
            backtrace = None
        else:
            text = str(exc)
            reason = text.split("Caused by:", 1)[-1].strip().splitlines()[0] if "Caused by:" in text \
                else text.strip().splitlines()[0]
            frames = (getattr(exc, "frames", None) or [])[:_MAX_FRAMES]
            backtrace = "\n".join(
                f"  #{i} {f.func_name or f'<wasm function {f.func_index}>'} (offset {f.module_offset:#x})"
                for i, f in enumerate(frames)) or text
        records = list(host.logs)[mark:]
        stderr = "\n".join(r.message for r in records if r.source == "stderr").strip()
        return PluginTrap(f"the plugin trapped in {where} (context {context_id}): {reason}",
                          callback=where, context_id=context_id,
                          python_traceback=_python_traceback(records), wasm_backtrace=backtrace,
                          stderr=stderr or None)

    def close(self) -> None:
        self._funcs = {}
        self._memory = None
        self._alloc = None
        self._store = None


def _python_traceback(records: list[Any]) -> str | None:
    """The last Python traceback among log records: one record (the SDK logs it whole), or the
    run of stderr lines it was written as (CPython writes a traceback piece by piece)."""
    for i in range(len(records) - 1, -1, -1):
        if _TRACEBACK in records[i].message:
            if records[i].source != "stderr":
                return str(records[i].message)
            lines = [r.message for r in records[i:] if r.source == "stderr"]
            return "\n".join(lines)
    return None
