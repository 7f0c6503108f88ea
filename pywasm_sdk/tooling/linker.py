"""Turn meld's fused core module into a proxy-wasm 0.2.1 module, at the binary level.

What meld gives us: one core module holding CPython 3.14, pre-initialised with the plugin
imported (its linear memory is the snapshot), componentize-py's runtime, and hundreds of
exports nobody needs. The plugin's WIT world has no imports and one unused export: the
component is only a way to get that snapshot.

What Envoy needs: ``env.proxy_*`` imports with proxy-wasm's signatures, a few WASI preview-1
imports, and the exports ``memory``, ``proxy_abi_version_0_2_1``, ``proxy_on_memory_allocate``
and the ``proxy_on_*`` callbacks the plugin uses.

How (each step is one function below):

1. merge the bridge (:mod:`.bridge`: callbacks into Python, raw hostcalls as builtin functions)
   and ``build/wasi_bridge.wat`` (the WASI 0.2 calls CPython still makes, onto the WASI
   preview-1 functions every Envoy has) into the module: their imports from ``fused`` resolve to
   the module's exports by name, with their types checked;
2. put the raw hostcalls in the function table and write their ``PyMethodDef`` records into the
   anchor (:mod:`.snapshot`);
3. keep what the exports and the function tables reach and drop the rest (interpreter start-up,
   the component's glue, the trapping WASI stubs that were replaced), renumbering every index;
4. zero the snapshot's freed heap blocks and write the memory back as packed data segments.

A module of a shape this linker does not know ends the build with a :class:`LinkError` that says
what it expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .. import _bridge
from . import abi as abi_mod
from . import bridge, prune, resources, snapshot, wasm_code
from .wasm_binary import _Reader
from .wasm_module import (Elem, Export, Global, Import, Module, const_i32, encode_sleb, encode_uleb,
                          function_names, name_section)
from . import wasm_tools

__all__ = ["ORIGINS_SECTION", "LinkError", "LinkReport", "link"]

FUSED = "fused"  # adapter imports from this module name exports of the fused module
CONSTANTS = "pywasm"  # ... and from this one, constants the linker computes
#: the custom section in which the build leaves what the code is made of (pywasm inspect reads it)
ORIGINS_SECTION = "pywasm.origins"
_IMPORT_TABLE = "$imports"  # wit-component's table of the component's imports (WASI stubs)
_FUNCTION_TABLE = "__indirect_function_table"  # C function pointers
_METH_FASTCALL = 0x0080
_MESSAGES = {
    "arity_message": "pywasm: a raw hostcall was called with the wrong number of arguments",
    "module_message": "pywasm: this builtin module is not in the plugin: a build keeps only the "
                      "builtin modules the plugin imports (import it at the top of a plugin module)",
    "compiler_message": "pywasm: this plugin was built without CPython's compiler, so source code "
                        "cannot be compiled at run time (compile(), exec() or eval() of a string); "
                        "build it with `pywasm build --keep-compiler`",
}
_KIND_FUNC, _KIND_TABLE, _KIND_MEMORY, _KIND_GLOBAL = 0, 1, 2, 3


class LinkError(RuntimeError):
    """The fused module does not have the shape this linker was written for."""


@dataclass
class LinkReport:
    bridged: list[str] = field(default_factory=list)  # WASI import slots taken over
    exports: list[str] = field(default_factory=list)
    raw_hostcalls: int = 0
    removed_modules: list[str] = field(default_factory=list)  # builtin C modules left out
    compiler_removed: bool = False
    removed_functions: int = 0
    functions: int = 0
    code_origins: dict[str, int] = field(default_factory=dict)  # bytes of code by origin
    heap_walked: bool = False  # whether the snapshot's heap was found and its free blocks zeroed
    zeroed_bytes: int = 0
    data_segments: int = 0


# A function reference while modules are merged: ("fused", index), ("host", (module, name)),
# or ("added", index in the list of added functions).
Ref = tuple[str, object]


@dataclass
class _Added:
    """A function merged in from an adapter module, with how its indices translate."""

    type: int
    body: bytes
    funcs: list[Ref]  # the adapter's function index space
    globals_: list[int]  # the adapter's global index space -> the module's
    types: list[int]  # the adapter's type index space -> the module's


class _Linker:
    def __init__(self, fused: bytes, abi: abi_mod.Abi) -> None:
        try:
            self.mod = Module.parse(fused)
        except ValueError as exc:
            raise LinkError(f"the fused module cannot be read: {exc}") from exc
        self.abi = abi
        if self.mod.imports:
            names = ", ".join(f"{i.module}.{i.name}" for i in self.mod.imports[:5])
            raise LinkError(f"the fused module has imports ({names}); the plugin's WIT world must "
                            "have none (componentize-py or the world changed?)")
        if self.mod.start is not None:
            raise LinkError("the fused module has a start function; it would re-run initialisation")
        self.names = function_names(self.mod)
        if not self.names:
            raise LinkError("the fused module has no function names (meld must run with --preserve-names)")
        self.host: dict[tuple[str, str], int] = {}  # (module, name) -> type index of new imports
        self.added: list[_Added] = []
        self.constants: dict[str, int] = {}
        self.report = LinkReport()

    # -- finding things in the fused module ------------------------------------------------
    def export(self, name: str, kind: int) -> int:
        found = [e for e in self.mod.exports if e.name == name and e.kind == kind]
        if len(found) != 1:
            what = {0: "function", 1: "table", 2: "memory", 3: "global"}[kind]
            raise LinkError(f"the fused module exports {len(found)} {what}s named {name!r}, expected one")
        return found[0].index

    def data_symbol(self, name: str) -> int:
        """The global holding the absolute address of a data symbol (or another global).

        A library exports its data symbols relative to its ``__memory_base``; the component's
        linker also exports, as ``<library>:<name>``, the globals it resolved for the other
        libraries (its GOT): those hold the absolute address, and they all agree.
        """
        resolved = [e for e in self.mod.exports
                    if e.kind == _KIND_GLOBAL and e.name.rpartition(":")[2] == name and ":" in e.name]
        values = {self.mod.global_initial(e.index) for e in resolved}
        if len(values) > 1:
            raise LinkError(f"the fused module's resolved addresses of {name!r} disagree: {sorted(values, key=str)}")
        return resolved[0].index if resolved else self.export(name, _KIND_GLOBAL)

    # -- merging adapter modules ----------------------------------------------------------
    def merge(self, source: str, label: str) -> list[tuple[str, int, Ref | int]]:
        """Merge an adapter (WAT text); return its exports as (name, kind, ref or index)."""
        try:
            adapter = Module.parse(wasm_tools.parse(source))
        except Exception as exc:  # wasm-tools' message says what is wrong in the text
            raise LinkError(f"{label}: {exc}") from exc
        if adapter.elems or adapter.datas or adapter.tables or adapter.memories or adapter.start is not None:
            raise LinkError(f"{label}: adapters may not define memories, tables, element or data "
                            "segments (import the memory from 'fused')")
        types = [self.mod.type_index(p, r) for p, r in adapter.types]
        funcs: list[Ref] = []
        globals_: list[int] = []
        for imp in adapter.imports:
            where = f"{label}: import {imp.module}.{imp.name}"
            if imp.kind == _KIND_FUNC:
                want = adapter.types[imp.desc]  # type: ignore[index]
                if imp.module == FUSED:
                    index = self.export(imp.name, _KIND_FUNC)
                    if self.mod.function_type(index) != want:
                        raise LinkError(f"{where}: the fused module's function has another type")
                    funcs.append(("fused", index))
                else:
                    key = (imp.module, imp.name)
                    type_index = self.mod.type_index(*want)
                    if self.host.setdefault(key, type_index) != type_index:
                        raise LinkError(f"{where}: imported twice with different types")
                    funcs.append(("host", key))
            elif imp.kind == _KIND_GLOBAL:
                if imp.module == FUSED:
                    index = self.data_symbol(imp.name)
                    g = self.mod.globals[index]
                    if bytes([g.valtype, int(g.mutable)]) != imp.desc:
                        raise LinkError(f"{where}: the fused module's global has another type")
                    globals_.append(index)
                elif imp.module == CONSTANTS:
                    if imp.name not in self.constants or imp.desc != b"\x7f\x00":
                        raise LinkError(f"{where}: not a constant the linker provides")
                    self.mod.globals.append(Global(0x7F, False, const_i32(self.constants[imp.name])))
                    globals_.append(len(self.mod.globals) - 1)
                else:
                    raise LinkError(f"{where}: globals come from {FUSED!r} or {CONSTANTS!r} only")
            elif imp.kind == _KIND_MEMORY and imp.module == FUSED:
                continue  # the one memory
            else:
                raise LinkError(f"{where}: unsupported import")
        for g in adapter.globals:
            self.mod.globals.append(g)
            globals_.append(len(self.mod.globals) - 1)
        first = len(self.added)
        for n in range(len(adapter.functions)):
            funcs.append(("added", first + n))
        for n, (type_index, body) in enumerate(zip(adapter.functions, adapter.codes)):
            self.added.append(_Added(types[type_index], body, funcs, globals_, types))
        return [(e.name, e.kind, funcs[e.index] if e.kind == _KIND_FUNC else e.index)
                for e in adapter.exports]

    # -- the steps --------------------------------------------------------------------------
    def link(self, callbacks: list[str], keep_names: bool, keep_compiler: bool) -> bytes:
        memory = snapshot.Memory(self.mod.datas)
        try:
            anchor = snapshot.Anchor.find(memory, bytes.fromhex(_bridge.MAGIC_HEX),
                                          _bridge.ANCHOR_FORMAT, len(self.abi.callbacks),
                                          len(_bridge.CONTEXT_ENTRIES))
        except snapshot.AnchorError as exc:
            raise LinkError(str(exc)) from None
        raw = bridge.raw_names(self.abi)
        if anchor.raw_count != len(raw):
            raise LinkError(f"the anchor lists {anchor.raw_count} raw hostcalls, the ABI has {len(raw)}")
        entries = dict(zip(self.abi.callbacks, anchor.entries))
        missing = [name for name in callbacks if not entries.get(name)]
        if missing:
            raise LinkError(f"the snapshot has no Python entry for {', '.join(missing)}")
        heap_base = self.mod.global_initial(self.export("__heap_base", _KIND_GLOBAL))
        if heap_base is None:
            raise LinkError("__heap_base is not a constant")
        type_type = self.mod.global_initial(self.data_symbol("PyType_Type"))
        if type_type is None:
            raise LinkError("the address of PyType_Type is not a constant")
        defs, messages = self._method_records(memory, anchor, raw)
        if not all(anchor.context_entries):
            raise LinkError(f"the anchor has no {' or '.join(_bridge.CONTEXT_ENTRIES)}")
        self.constants = {"bind": anchor.bind, "raw_defs": defs, "raw_count": len(raw), **messages,
                          **dict(zip(_bridge.CONTEXT_ENTRIES, anchor.context_entries)),
                          "eager_delete": int(bool(anchor.flags & _bridge.EAGER_DELETE)),
                          **{f"{bridge.ENTRY_IMPORT_PREFIX}{n}": entries[n] for n in callbacks}}

        module_exports: list[tuple[str, int, Ref | int]] = []
        raw_refs: dict[str, Ref] = {}
        self.stubs: dict[str, Ref] = {}
        for name, kind, ref in self.merge(bridge.bridge_source(self.abi, callbacks), "bridge"):
            if name.startswith(bridge.RAW_EXPORT_PREFIX):
                raw_refs[name[len(bridge.RAW_EXPORT_PREFIX):]] = ref  # type: ignore[assignment]
            elif name.startswith("pywasm:"):
                self.stubs[name] = ref  # type: ignore[assignment]
            else:
                module_exports.append((name, kind, ref))
        if sorted(raw_refs) != sorted(raw):
            raise LinkError("the bridge does not define every raw hostcall")
        self._bridge_wasi()
        try:
            self.plan = prune.plan(self.mod, self.names, bytes(memory.bytes), heap_base,
                                   self.export(_FUNCTION_TABLE, _KIND_TABLE), set(anchor.modules),
                                   keep_compiler, type_type, self._called_by_bridges())
        except prune.LayoutError as exc:
            raise LinkError(str(exc)) from None
        self.report.removed_modules = self.plan.modules
        self.report.compiler_removed = bool(self.plan.compiler)
        slots = self._place_raw_functions(memory, [raw_refs[n] for n in raw], defs)
        module_exports.append((self.abi.memory_export, _KIND_MEMORY, self.export("memory", _KIND_MEMORY)))
        self.report.raw_hostcalls = len(slots)
        self.report.exports = [name for name, _, _ in module_exports]

        wasm_mod = self._renumber(module_exports, keep_names)
        pages = _Reader(self.mod.memories[0], 0).limits()[0]
        # a heap that does not walk as dlmalloc's is left as it is (correct, only larger)
        chunks = snapshot.free_chunks(memory, heap_base, pages * 65536)
        self.report.heap_walked = bool(chunks)
        self.report.zeroed_bytes = snapshot.zero_free(memory, chunks)
        wasm_mod.datas = snapshot.pack(memory)
        self.report.data_segments = len(wasm_mod.datas)
        return wasm_mod.encode()

    def _called_by_bridges(self) -> list[int]:
        """The fused module's functions that the merged bridges call."""
        return sorted({v for a in self.added for k, v in a.funcs if k == "fused" and isinstance(v, int)})

    def _method_records(self, memory: snapshot.Memory, anchor: snapshot.Anchor,
                        raw: list[str]) -> tuple[int, dict[str, int]]:
        """Lay out PyMethodDef[len(raw)] and the C strings the bridge needs in the anchor's area."""
        defs = anchor.area
        strings = defs + 16 * len(raw)
        blob = bytearray()
        name_at = []
        for name in raw:
            name_at.append(strings + len(blob))
            blob += name.encode() + b"\0"
        messages = {}
        for key, text in _MESSAGES.items():
            messages[key] = strings + len(blob)
            blob += text.encode() + b"\0"
        if strings + len(blob) > anchor.area + anchor.area_size:
            raise LinkError(f"the anchor's area ({anchor.area_size} bytes) is too small")
        memory.bytes[strings:strings + len(blob)] = blob
        for n, at in enumerate(name_at):  # ml_meth is written once the slots are known
            memory.write_u32(defs + 16 * n, at)
            memory.write_u32(defs + 16 * n + 8, _METH_FASTCALL)
            memory.write_u32(defs + 16 * n + 12, 0)
        return defs, messages

    def _place_raw_functions(self, memory: snapshot.Memory, refs: list[Ref], defs: int) -> list[int]:
        """Give each raw hostcall a slot in the C function table; write it into its record."""
        table = self.export(_FUNCTION_TABLE, _KIND_TABLE)
        reftype, lo, hi = self.mod.tables[table]
        base = lo
        self.mod.tables[table] = (reftype, lo + len(refs), None if hi is None else hi + len(refs))
        self._raw_elem = (table, base, refs)
        for n in range(len(refs)):
            memory.write_u32(defs + 16 * n + 4, base + n)
        return list(range(base, base + len(refs)))

    def _bridge_wasi(self) -> None:
        """Plug build/wasi_bridge.wat's functions into the import table's slots."""
        table = self.export(_IMPORT_TABLE, _KIND_TABLE)
        slot_of: dict[str, int] = {}
        for index, name in self.names.items():
            if name.startswith("__wasm_import_") or "::wit_import" in name:
                hit = wasm_code.trampoline_slot(self.mod.codes[index])
                if hit and hit[1] == table:
                    slot_of[name] = hit[0]
        segments = [e for e in self.mod.elems if e.mode == "active" and e.table == table]
        self._wasi_slots: dict[int, Ref] = {}
        text = (resources.build_dir() / "wasi_bridge.wat").read_text()
        for name, kind, ref in self.merge(text, "wasi bridge"):
            if kind == _KIND_FUNC and name in slot_of:
                self._wasi_slots[slot_of[name]] = ref  # type: ignore[assignment]
                self.report.bridged.append(name)
        covered = {s + i for e in segments for s in [e.offset_value or 0] for i in range(len(e.items))}
        if not set(self._wasi_slots) <= covered:
            raise LinkError("a WASI import slot is not filled by any element segment")
        self._import_table = table

    # -- renumbering -------------------------------------------------------------------------
    def _renumber(self, module_exports: list[tuple[str, int, Ref | int]], keep_names: bool) -> Module:
        mod = self.mod
        host_keys = list(self.host)
        n_host, n_fused = len(host_keys), len(mod.functions)
        host_index = {key: n for n, key in enumerate(host_keys)}

        def pre(ref: Ref) -> int:  # index before dead code is removed
            kind, value = ref
            if kind == "fused":
                return n_host + value  # type: ignore[operator]
            if kind == "host":
                return host_index[value]  # type: ignore[index]
            return n_host + n_fused + value  # type: ignore[operator]

        # element segments, with the replaced WASI slots and the raw hostcalls
        removed, module_inits = self.plan.removed, self.plan.module_inits
        function_table = self.export(_FUNCTION_TABLE, _KIND_TABLE)
        unavailable = pre(self.stubs["pywasm:module_unavailable"])
        elems: list[Elem] = []
        for e in mod.elems:
            items: list[int | None] = [None if i is None or i in removed else n_host + i for i in e.items]
            if e.mode == "active" and e.table == function_table and module_inits:
                base = e.offset_value or 0
                for k in range(len(items)):
                    if base + k in module_inits:
                        items[k] = unavailable
            if e.mode == "active" and e.table == self._import_table:
                base = e.offset_value or 0
                for slot, ref in self._wasi_slots.items():
                    if base <= slot < base + len(items):
                        items[slot - base] = pre(ref)
            elems.append(Elem(e.mode, e.table, e.offset, items))
        table, base, raw = self._raw_elem
        elems.append(Elem("active", table, const_i32(base), [pre(r) for r in raw]))

        # what is reached from the exports and the tables
        total = n_host + n_fused + len(self.added)
        compiler_stub = pre(self.stubs["pywasm:compiler_unavailable"])
        cut = self.plan.compiler
        for i in cut:
            if mod.function_type(i)[1] != b"\x7f":
                raise LinkError(f"{self.names.get(i)}: a compiler function to cut that does not return an i32")
        calls: list[list[int]] = [[] for _ in range(total)]
        for i, body in enumerate(mod.codes):
            if i in cut:
                calls[n_host + i] = [compiler_stub]
                continue
            f = wasm_code.facts(body)
            calls[n_host + i] = [n_host + c for c in f.calls + f.ref_funcs]
        for n, a in enumerate(self.added):
            f = wasm_code.facts(a.body)
            calls[n_host + n_fused + n] = [pre(a.funcs[c]) for c in f.calls + f.ref_funcs]
        roots = [pre(r) for _, kind, r in module_exports if kind == _KIND_FUNC]  # type: ignore[arg-type]
        roots += [i for e in elems for i in e.items if i is not None]
        live = [False] * total
        todo = roots
        while todo:
            i = todo.pop()
            if not live[i]:
                live[i] = True
                todo.extend(calls[i])
        final = [0] * total
        count = 0
        for i in range(total):
            if live[i]:
                final[i] = count
                count += 1
        self.report.removed_functions = total - count - (n_host - sum(live[:n_host]))
        self.report.functions = count

        out = Module(types=mod.types, tables=mod.tables, memories=mod.memories, globals=mod.globals)
        # imports only the bridges' functions that are used need (a WASI bridge for a slot the
        # component does not have is dropped with its import)
        out.imports = [Import(m, n, _KIND_FUNC, self.host[(m, n)])
                       for i, (m, n) in enumerate(host_keys) if live[i]]
        fused_map = [final[n_host + i] for i in range(n_fused)]
        kept: dict[int, int] = {}  # fused function -> bytes of its body here
        for i, (type_index, body) in enumerate(zip(mod.functions, mod.codes)):
            if live[n_host + i]:
                out.functions.append(type_index)
                if i in cut:  # no locals; the stub raises ImportError and returns 0 (NULL)
                    fails = b"" if not cut[i] else b"\x1a" + b"\x41" + encode_sleb(cut[i])  # drop; i32.const
                    out.codes.append(b"\x00\x10" + encode_uleb(final[compiler_stub]) + fails + b"\x0b")
                else:
                    out.codes.append(wasm_code.rewrite(body, funcs=fused_map))
                kept[i] = len(out.codes[-1])
        for n, a in enumerate(self.added):
            if live[n_host + n_fused + n]:
                out.functions.append(a.type)
                out.codes.append(wasm_code.rewrite(a.body, funcs=[final[pre(r)] for r in a.funcs],
                                                   types=a.types, globals_=a.globals_))
        out.elems = [Elem(e.mode, e.table, e.offset, [None if i is None else final[i] for i in e.items])
                     for e in elems]
        out.exports = [Export(name, kind, final[pre(ref)] if kind == _KIND_FUNC else ref)  # type: ignore[arg-type]
                       for name, kind, ref in module_exports]
        if keep_names:
            names = {final[n_host + i]: name for i, name in self.names.items() if live[n_host + i]}
            out.customs.append(("name", name_section(names)))
        origins = prune.code_origins(self.plan, kept)
        origins["pywasm bridge"] = sum(len(a.body) for n, a in enumerate(self.added)
                                       if live[n_host + n_fused + n])
        self.report.code_origins = origins
        out.customs.append((ORIGINS_SECTION, json.dumps({"code": origins}, sort_keys=True).encode()))
        return out


def link(fused_wasm: bytes, callbacks: list[str], *, abi: abi_mod.Abi | None = None,
         keep_names: bool = False, keep_compiler: bool = False) -> tuple[bytes, LinkReport]:
    """Link meld's output into a proxy-wasm module exporting the given callbacks."""
    linker = _Linker(fused_wasm, abi or abi_mod.load())
    wasm = linker.link(callbacks, keep_names, keep_compiler)
    return wasm, linker.report
