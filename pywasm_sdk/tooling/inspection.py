"""``pywasm inspect``: what a built module declares, and whether Envoy will load it.

The report answers the questions an author (or a CI job) has before shipping a ``.wasm``: which
proxy-wasm ABI it declares, which callbacks it exports (and so whether it is an HTTP or a
network filter), which host functions it imports and whether Envoy provides every one of them,
and where its bytes go (code, pre-initialised data, names). Whether Envoy loads it is decided by
:func:`.checks.problems`, the same check ``pywasm build`` runs before it writes a module, so the
two can never disagree.

Rendering is separate from gathering: :func:`inspect_module` builds a plain :class:`Report`,
:func:`to_json` and :func:`to_text` render it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import checks
from .wasm_binary import Signature
from .wasm_file import ModuleFileError, PluginModule

__all__ = ["ImportEntry", "Report", "inspect_module", "to_json", "to_text"]

_WASM_PAGE = 65536


@dataclass(frozen=True)
class ImportEntry:
    module: str
    name: str
    kind: str
    signature: Signature | None
    problem: str | None  # None when Envoy provides this import with this signature

    @property
    def provided(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ExportEntry:
    name: str
    kind: str
    signature: Signature | None


@dataclass
class Report:
    file: str
    size: int
    sha256: str
    abi_versions: list[str]
    filter_type: str  # "http", "network", or "ambiguous"
    callbacks: list[str]
    exports: list[ExportEntry]
    imports: list[ImportEntry]
    sections: list[tuple[str, int]]
    functions: int
    memory_pages: int | None
    problems: list[str] = field(default_factory=list)
    #: bytes of code by origin, as the build recorded it (empty for modules built otherwise)
    code_origins: dict[str, int] = field(default_factory=dict)

    @property
    def loads_in_envoy(self) -> bool:
        return not self.problems


def inspect_module(module: PluginModule) -> Report:
    """Gather the report of one module (fast: no compilation, one validation pass)."""
    info = module.info
    problems = checks.problems(module.data)
    imports = [ImportEntry(i.module, i.name, i.kind, i.signature,
                           _problem_of(problems, f"import {i.module}.{i.name}:"))
               for i in info.imports]
    kind: str
    try:
        kind = module.filter_type()
    except ModuleFileError:
        kind = "ambiguous"
    return Report(
        file=str(module.path), size=module.size, sha256=module.sha256,
        abi_versions=module.abi_versions, filter_type=kind, callbacks=module.exported_callbacks,
        exports=[ExportEntry(e.name, e.kind, e.signature) for e in info.exports],
        imports=imports, sections=list(info.sections), functions=info.function_count,
        memory_pages=info.memory_pages, problems=problems, code_origins=_code_origins(module.data))


def _code_origins(data: bytes) -> dict[str, int]:
    """What the build's linker recorded of where the code comes from (custom section)."""
    from .linker import ORIGINS_SECTION
    from .wasm_module import Module, WasmFormatError

    try:
        raw = Module.parse(data).custom(ORIGINS_SECTION)
        return dict(json.loads(raw)["code"]) if raw else {}
    except (WasmFormatError, ValueError, KeyError, TypeError):
        return {}


def _problem_of(problems: list[str], prefix: str) -> str | None:
    """The check's verdict on one import (its messages start with "import MODULE.NAME:")."""
    for problem in problems:
        if problem.startswith(prefix):
            return problem[len(prefix):].strip()
    return None


def _signature(sig: Signature | None) -> str | None:
    if sig is None:
        return None
    params, results = sig
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data; key names are a stable interface for scripts."""
    return {
        "file": report.file,
        "size": report.size,
        "sha256": report.sha256,
        "abi_version": report.abi_versions[0] if len(report.abi_versions) == 1 else None,
        "abi_versions": report.abi_versions,
        "filter_type": report.filter_type,
        "loads_in_envoy": report.loads_in_envoy,
        "problems": report.problems,
        "callbacks": report.callbacks,
        "exports": [{"name": e.name, "kind": e.kind, "signature": _signature(e.signature)}
                    for e in report.exports],
        "imports": [{"module": i.module, "name": i.name, "kind": i.kind,
                     "signature": _signature(i.signature), "provided_by_envoy": i.provided,
                     "problem": i.problem} for i in report.imports],
        "sections": [{"name": name, "size": size} for name, size in report.sections],
        "functions": report.functions,
        "memory_pages": report.memory_pages,
        "code_origins": report.code_origins,
    }


def _bytes(n: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def to_text(report: Report) -> str:
    """The report for a terminal: a summary first, then exports, imports and sections."""
    out: list[str] = [f"{report.file}: {_bytes(report.size)}, sha256 {report.sha256}"]
    if len(report.abi_versions) == 1:
        out.append(f"ABI:          proxy-wasm {report.abi_versions[0]} "
                   f"(export proxy_abi_version_{report.abi_versions[0].replace('.', '_')})")
    elif not report.abi_versions:
        out.append("ABI:          none declared (no proxy_abi_version_* export)")
    else:
        out.append(f"ABI:          several declared ({', '.join(report.abi_versions)}): Envoy needs one")
    kind = {"http": "HTTP filter", "network": "network (TCP) filter",
            "ambiguous": "both HTTP and TCP callbacks: choose with --type"}[report.filter_type]
    out.append(f"filter type:  {kind}")
    pages = "" if report.memory_pages is None else (
        f", memory {report.memory_pages} pages ({report.memory_pages * _WASM_PAGE / 1e6:.1f} MB) at start")
    out.append(f"functions:    {report.functions} defined, "
               f"{sum(1 for i in report.imports if i.kind == 'func')} imported{pages}")
    if report.loads_in_envoy:
        out.append("Envoy:        loads it (valid; every import provided; exports of the ABI's types)")
    else:
        out.append(f"Envoy:        would NOT load it ({len(report.problems)} problem(s)):")
        out += [f"  - {p}" for p in report.problems]

    out += ["", f"exports ({len(report.exports)}):"]
    width = max((len(e.name) for e in report.exports), default=0)
    for e in report.exports:
        out.append(f"  {e.name:<{width}}  {e.kind} {_signature(e.signature) or ''}".rstrip())

    out += ["", f"imports ({len(report.imports)}):"]
    width = max((len(f"{i.module}.{i.name}") for i in report.imports), default=0)
    sig_width = max((len(_signature(i.signature) or i.kind) for i in report.imports), default=0)
    for i in report.imports:
        verdict = "ok" if i.provided else f"NOT PROVIDED: {i.problem}"
        out.append(f"  {i.module + '.' + i.name:<{width}}  {_signature(i.signature) or i.kind:<{sig_width}}  {verdict}")

    out += ["", "size by section:"]
    total = sum(size for _, size in report.sections) or 1
    width = max((len(name) for name, _ in report.sections), default=0)
    for name, size in report.sections:
        out.append(f"  {name:<{width}}  {_bytes(size):>9}  {100 * size / total:5.1f} %")
    if report.code_origins:
        # code is what V8 compiles whenever Envoy loads the module: start time and memory
        out += ["", "code by origin (the plugin's and the SDK's Python is data: bytecode in the heap):"]
        code = sum(report.code_origins.values()) or 1
        width = max(len(name) for name in report.code_origins)
        for name, size in report.code_origins.items():
            out.append(f"  {name:<{width}}  {_bytes(size):>9}  {100 * size / code:5.1f} %")
    return "\n".join(out)
