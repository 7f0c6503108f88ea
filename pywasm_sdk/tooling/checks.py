"""Check that a module is one Envoy will load, before anything is written.

A proxy-wasm host links a module against what it provides and fails on anything else (V8:
"Failed to load Wasm module due to a missing import"). So: the module must validate; export
memory, the ABI marker, an allocator and only callbacks with the ABI's signatures; and import
only ``env.proxy_*`` hostcalls of the ABI and the WASI preview-1 functions every Envoy since
the 1.2x releases provides, each with the signature the host registers.
"""

from __future__ import annotations

import wasmtime

from . import abi as abi_mod
from .wasm_binary import ModuleInfo, WasmFormatError, read


def problems(wasm: bytes, abi: abi_mod.Abi | None = None) -> list[str]:
    """Everything that would keep Envoy from loading this module (empty when none)."""
    abi = abi or abi_mod.load()
    try:
        info = read(wasm)
    except WasmFormatError as exc:
        return [str(exc)]
    found: list[str] = []
    try:
        wasmtime.Module.validate(wasmtime.Engine(), wasm)
    except wasmtime.WasmtimeError as exc:
        found.append(f"the module does not validate: {str(exc).splitlines()[0]}")
    found += _import_problems(info, abi) + _export_problems(info, abi)
    return found


def _sig(params: list[str], results: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(params), tuple(results)


def _import_problems(info: ModuleInfo, abi: abi_mod.Abi) -> list[str]:
    out = []
    for imp in info.imports:
        where = f"import {imp.module}.{imp.name}"
        if imp.kind != "func":
            out.append(f"{where}: imports a {imp.kind}; Envoy provides functions only")
            continue
        if imp.module == "env" and imp.name in abi.hostcalls:
            expected = _sig(*abi.hostcalls[imp.name].core_signature())
        elif imp.module == "wasi_snapshot_preview1" and imp.name in abi.wasi_allowed:
            expected = _sig(*abi.wasi_allowed[imp.name])
        else:
            out.append(f"{where}: not provided by Envoy (allowed: env.proxy_* of ABI "
                       f"{abi.version} and wasi_snapshot_preview1.{{{', '.join(abi.wasi_allowed)}}})")
            continue
        if imp.signature != expected:
            out.append(f"{where}: signature {imp.signature}, the host provides {expected}")
    return out


def _export_problems(info: ModuleInfo, abi: abi_mod.Abi) -> list[str]:
    out = []
    memory = info.export(abi.memory_export)
    if memory is None or memory.kind != "memory":
        out.append(f"no memory exported as {abi.memory_export!r}")
    marker = info.export(abi.marker)
    if marker is None or marker.signature != ((), ()):
        out.append(f"no {abi.marker} export of type () -> (): the host would not know the ABI")
    alloc = info.export(abi.allocator_export)
    if alloc is None or alloc.signature != (("i32",), ("i32",)):
        out.append(f"no {abi.allocator_export} (i32) -> i32 export: the host could not pass data")
    for exp in info.exports:
        if exp.name.startswith("proxy_on_") and exp.name != abi.allocator_export:
            cb = abi.callbacks.get(exp.name)
            if cb is None:
                out.append(f"export {exp.name}: not a callback of ABI {abi.version}")
            elif exp.signature != _sig(*cb.core_signature()):
                out.append(f"export {exp.name}: signature {exp.signature}, the host calls it "
                           f"with {_sig(*cb.core_signature())}")
        elif exp.name in ("_initialize", "_start", "main", "malloc"):
            out.append(f"export {exp.name}: the host would call it and re-run initialisation "
                       "or use it instead of the plugin's allocator")
    return out
