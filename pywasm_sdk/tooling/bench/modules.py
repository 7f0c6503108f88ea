"""The module under test: a ``.wat`` reference made binary, and where a module's bytes go."""

from __future__ import annotations

import os
from pathlib import Path

from ..wasm_binary import read
from ..wasm_file import ModuleFileError

__all__ = ["SIZE_PARTS", "section_sizes", "size_text", "wasm_from_wat"]

#: how :func:`section_sizes` splits a module, in the order the reports show it
SIZE_PARTS = ("code", "data", "names", "other")


def wasm_from_wat(wat: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """``folder/NAME.wasm`` compiled from the text module ``wat`` (e.g. bench/reference_filter.wat)."""
    import wasmtime  # only when a .wat is given

    source = Path(wat)
    target = Path(folder) / (source.stem + ".wasm")
    try:
        target.write_bytes(wasmtime.wat2wasm(source.read_text()))
    except wasmtime.WasmtimeError as exc:
        raise ModuleFileError(f"{source}: not valid WebAssembly text: {exc}") from None
    except OSError as exc:
        raise ModuleFileError(f"{source}: cannot read it: {exc.strerror or exc}") from None
    return target


def section_sizes(data: bytes) -> dict[str, int]:
    """Bytes of a module by part: ``code`` (what V8 compiles at start), ``data`` (the
    pre-initialised memory), ``names`` (the name section: only backtraces use it), ``other``
    (section headers and everything else), and ``total``."""
    parts = dict.fromkeys(SIZE_PARTS, 0)
    key = {"code": "code", "data": "data", "custom:name": "names"}
    for name, size in read(data).sections:
        parts[key.get(name, "other")] += size
    parts["other"] += len(data) - sum(parts.values())  # preamble and section headers
    parts["total"] = len(data)
    return parts


def size_text(n: int) -> str:
    """706 B, 12.3 kB, 18.38 MB (decimal units, as the benchmarks' tables use)."""
    if n < 1000:
        return f"{n} B"
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
