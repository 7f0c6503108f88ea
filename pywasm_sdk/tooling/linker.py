"""Turn meld's fused core module into a proxy-wasm 0.2.1 module.

What meld gives us: one core module in which every import of the component (our hostcalls,
and the WASI functions componentize-py stubbed out) is plugged into one slot of a table of
imports, reached through small trampolines, plus hundreds of exports nobody needs.

What Envoy needs: ``env.proxy_*`` imports with proxy-wasm's signatures, a few WASI preview-1
imports, and exports ``memory``, ``proxy_abi_version_0_2_1``, ``proxy_on_memory_allocate`` and
the ``proxy_on_*`` callbacks the plugin uses, each followed by its canonical-ABI post-return.

How: the module is edited as text (see :mod:`.wat`). Adapter modules written in WAT (generated
from the ABI for hostcalls and callbacks, and ``build/wasi_bridge.wat`` for WASI) are merged in;
each adapter export names either an import slot it takes over or a module export it provides.
Hostcalls whose lowered signature already is proxy-wasm's are only renamed. Finally everything
nothing can reach any more (interpreter start-up, pre-initialisation entry points, the stubs and
imports that were replaced) is removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import abi as abi_mod
from . import resources
from .wat import ID, Item, Module, rename_ids

FUSED = "fused"  # adapter imports from this module name functions of the fused module
REALLOC = "#realloc"  # ... and this name the realloc the canonical ABI lowers lists with


class LinkError(RuntimeError):
    """The fused module does not have the shape this linker was written for."""


@dataclass
class LinkReport:
    bridged: list[str] = field(default_factory=list)  # import slots taken over by adapters
    renamed: list[str] = field(default_factory=list)  # hostcalls plugged in directly
    exports: list[str] = field(default_factory=list)
    removed_functions: int = 0


# -- adapters generated from the ABI -------------------------------------------------------

def _params(types: list[str], names: list[str]) -> str:
    return " ".join(f"(param ${n} {t})" for n, t in zip(names, types))


def hostcall_adapters(abi: abi_mod.Abi) -> str:
    """WAT for every hostcall with outputs: pass the host pointers into the return area.

    The outputs are zeroed first so that a failed call (the host writes nothing) reads back
    as zeros and an empty list, never as whatever was on the stack.
    """
    out = ["(module"]
    for call in abi.hostcalls.values():
        if call.direct:
            continue
        core_params, _ = call.core_signature()
        out.append(f'  (import "env" "{call.name}" (func ${call.name} '
                   f'{_params(core_params, [f"p{i}" for i in range(len(core_params))])} (result i32)))')
    for call in abi.hostcalls.values():
        if call.direct:
            continue
        lowered, _ = call.lowered_signature()
        names = [f"a{i}" for i in range(len(lowered) - 1)] + ["ret"]
        zero, pointers = [], []
        for out_param, offset in abi_mod.result_layout(call):
            words = [offset, offset + 4] if out_param.type == "bytes" else [offset]
            store = "i64.store" if out_param.type == "u64" else "i32.store"
            const = "i64.const" if out_param.type == "u64" else "i32.const"
            for w in words:
                zero.append(f"    ({store} offset={w} (local.get $ret) ({const} 0))")
                pointers.append(f"(i32.add (local.get $ret) (i32.const {w}))")
        args = " ".join(f"(local.get ${n})" for n in names[:-1])
        out.append(f'  (func (export "{call.wit_name}") {_params(lowered, names)}')
        out += zero
        out.append(f"    (i32.store (local.get $ret) (call ${call.name} {args} {' '.join(pointers)})))")
    out.append(")")
    return "\n".join(out) + "\n"


def module_exports(abi: abi_mod.Abi, callbacks: list[str]) -> str:
    """WAT for the exports Envoy looks for: the ABI marker, the allocator and the callbacks.

    Each callback runs the component's export and then its ``cabi_post_*`` function, which the
    canonical ABI requires after every call (componentize-py releases per-call state there).
    """
    out = ["(module",
           f'  (import "{FUSED}" "{REALLOC}" (func $realloc (param i32 i32 i32 i32) (result i32)))']
    for name in callbacks:
        cb = abi.callbacks[name]
        params, results = cb.core_signature()
        res = " (result i32)" if results else ""
        out.append(f'  (import "{FUSED}" "{cb.wit_name}" (func $cb.{name} {_params(params, [f"p{i}" for i in range(len(params))])}{res}))')
        out.append(f'  (import "{FUSED}" "cabi_post_{cb.wit_name}" (func $post.{name}{" (param i32)" if results else ""}))')
    out.append(f'  (func (export "{abi.marker}"))')
    out.append(f'  (func (export "{abi.allocator_export}") (param $size i32) (result i32)')
    out.append("    (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $size)))")
    for name in callbacks:
        cb = abi.callbacks[name]
        params, results = cb.core_signature()
        names = [f"p{i}" for i in range(len(params))]
        args = " ".join(f"(local.get ${n})" for n in names)
        if results:
            out.append(f'  (func (export "{name}") {_params(params, names)} (result i32) (local $r i32)')
            out.append(f"    (local.set $r (call $cb.{name} {args}))")
            out.append(f"    (call $post.{name} (local.get $r))")
            out.append("    (local.get $r))")
        else:
            out.append(f'  (func (export "{name}") {_params(params, names)}')
            out.append(f"    (call $cb.{name} {args})")
            out.append(f"    (call $post.{name}))")
    out.append(")")
    return "\n".join(out) + "\n"


# -- the link ------------------------------------------------------------------------------

_SIG_PARAM = re.compile(r"\(param(?: " + ID + r")? (\w+)\)")
_SIG_RESULT = re.compile(r"\(result ([\w ]+)\)")
_TYPE_USE = re.compile(r" \(type " + ID + r"\)")
_ELEM = re.compile(r"^(  \(elem " + ID + r"(?: \(;\d+;\))? \(table (" + ID + r")\) \(i32\.const (\d+)\) func)((?:\s+" + ID + r")*)\)\s*$", re.S)


def _signature(item_text: str) -> tuple[list[str], list[str]]:
    head = item_text.split("\n", 1)[0]
    results = [t for r in _SIG_RESULT.findall(head) for t in r.split()]
    return _SIG_PARAM.findall(head), results


class _Slots:
    """The table of imports: which function fills which slot, and the slot of each import."""

    def __init__(self, mod: Module) -> None:
        exported = mod.exports().get("$imports")
        if not exported or exported[0] != "table":
            raise LinkError("the fused module exports no `$imports` table (meld/componentize-py changed?)")
        self.table = exported[1]
        first_table = next(mod.of_kind("table")).id
        self.segments: list[tuple[Item, int, list[str]]] = []
        for item in mod.of_kind("elem"):
            m = _ELEM.match(item.text)
            if m and m.group(2) == self.table:
                self.segments.append((item, int(m.group(3)), re.findall(ID, m.group(4))))
        if not self.segments:
            raise LinkError(f"no element segment fills the import table {self.table}")
        self.by_key: dict[str, int] = {}
        for item in mod.of_kind("func"):
            hit = item.trampoline_slot()
            if hit and (hit[1] or first_table) == self.table:
                self.by_key.setdefault(_plain(item.id), hit[0])
        imports = {i.id: i.import_ for i in mod.of_kind("import")}
        for _, offset, funcs in self.segments:
            for n, ident in enumerate(funcs):
                if imports.get(ident):
                    self.by_key[imports[ident][0]] = offset + n

    def set(self, slot: int, ident: str) -> None:
        for n, (item, offset, funcs) in enumerate(self.segments):
            if offset <= slot < offset + len(funcs):
                funcs[slot - offset] = ident
                head = _ELEM.match(item.text).group(1)
                item.text = head + " " + " ".join(funcs) + ")\n"
                return
        raise LinkError(f"import slot {slot} is not filled by any element segment")


def _plain(ident: str) -> str:
    return ident[2:-1] if ident.startswith('$"') else ident[1:]


def _merge(mod: Module, adapter: Module, prefix: str, fused: dict[str, str]) -> list[tuple[str, str, str]]:
    """Copy an adapter module's imports, globals and functions into mod under fresh ids.

    Imports from FUSED become references to the fused module's functions; other imports are
    shared with an identical import mod already has. Returns the adapter's exports as
    (name, kind, id in mod).
    """
    existing = {i.import_[:2]: i.id for i in mod.of_kind("import") if i.import_}
    mapping: dict[str, str] = {}
    new_imports, new_globals, new_funcs = [], [], []
    for item in adapter.items:
        if item.kind == "import":
            module, name, kind, ident = item.import_  # type: ignore[misc]
            if module == FUSED:
                if name not in fused:
                    raise LinkError(f"the fused module has no function {name!r} (needed by {prefix})")
                mapping[ident] = fused[name]
            elif (module, name) in existing:
                mapping[ident] = existing[(module, name)]
            else:
                mapping[ident] = f"${prefix}/{_plain(ident)}"
                new_imports.append(item)
        elif item.kind in ("func", "global"):
            mapping[item.id] = f"${prefix}/{_plain(item.id)}"
            (new_funcs if item.kind == "func" else new_globals).append(item)
        elif item.kind not in ("type", "export", "memory") and not item.kind.startswith("@"):
            raise LinkError(f"adapter {prefix}: unsupported field {item.kind}")
    for item in new_imports + new_globals + new_funcs:
        if "call_indirect" in item.text:
            raise LinkError(f"adapter {prefix}: call_indirect would need the adapter's types")
        head, sep, rest = item.text.partition("\n")
        item.text = rename_ids(_TYPE_USE.sub("", head, count=1) + sep + rest, mapping)
        item.id = mapping[item.id]
    mod.insert_after_last("import", new_imports)
    mod.insert_after_last("global", new_globals)
    mod.insert_after_last("func", new_funcs)
    return [(name, kind, mapping[ident]) for name, kind, ident in
            (i.export for i in adapter.of_kind("export"))]


def link(fused_wasm: bytes, import_map: dict, callbacks: list[str],
         abi: abi_mod.Abi | None = None) -> tuple[bytes, LinkReport]:
    """Link meld's output into a proxy-wasm module exporting the given callbacks."""
    abi = abi or abi_mod.load()
    report = LinkReport()
    mod = Module.from_binary(fused_wasm)
    if any(True for _ in mod.of_kind("start")):
        raise LinkError("the fused module has a start function; it would re-run initialisation")
    exported = mod.exports()
    fused = {name: e[1] for name, e in exported.items() if e and e[0] == "func"}
    fused[REALLOC] = _list_realloc(mod, import_map)
    slots = _Slots(mod)

    # 1. hostcalls whose lowering already is proxy-wasm's: rename the import.
    for item in list(mod.of_kind("import")):
        module, name, kind, ident = item.import_  # type: ignore[misc]
        call = abi.hostcalls.get(module.replace("-", "_"))
        if call is None or not call.direct:
            continue
        sig = _signature(item.text.split("(func", 1)[1])
        if sig != call.core_signature():
            raise LinkError(f"{module}: lowered to {sig}, proxy-wasm expects {call.core_signature()}")
        item.text = item.text.replace(f'(import "{module}" "{name}"', f'(import "env" "{call.name}"', 1)
        report.renamed.append(call.name)

    # 2. adapters: take over import slots, provide the module's exports.
    mod.items = [i for i in mod.items if i.kind != "export" and not i.kind.startswith("@")]
    wanted_exports: list[tuple[str, str, str]] = []
    sources = [("pywasm/hostcalls", hostcall_adapters(abi)),
               ("pywasm/wasi", (resources.build_dir() / "wasi_bridge.wat").read_text()),
               ("pywasm/exports", module_exports(abi, callbacks))]
    module_export_names = {abi.marker, abi.allocator_export, *abi.callbacks}
    for prefix, text in sources:
        for name, kind, ident in _merge(mod, Module.from_text(text), prefix, fused):
            if name in module_export_names:
                wanted_exports.append((name, kind, ident))
            elif name in slots.by_key:
                slots.set(slots.by_key[name], ident)
                report.bridged.append(name)
            elif prefix == "pywasm/hostcalls":
                raise LinkError(f"the component does not import hostcall {name}")
    memory = exported.get("memory")
    if not memory or memory[0] != "memory":
        raise LinkError("the fused module exports no memory")
    wanted_exports.append((abi.memory_export, "memory", memory[1]))
    mod.items += [Item("export", None, f'  (export "{n}" ({k} {i}))\n') for n, k, i in wanted_exports]
    report.exports = [n for n, _, _ in wanted_exports]

    # 3. drop what nothing reaches any more.
    report.removed_functions = len(mod.remove_unreachable_functions())
    return mod.to_binary(), report


def _list_realloc(mod: Module, import_map: dict) -> str:
    """The function the canonical ABI allocates hostcall results with (meld's import map)."""
    indices = {(imp.get("realloc") or {}).get("func") for imp in import_map.get("imports", [])
               if imp.get("realloc")}
    indices.discard(None)
    if len(indices) != 1:
        raise LinkError(f"expected one realloc for all lowered imports, meld reports {sorted(indices)}")
    marker = f"(;{indices.pop()};)"
    for item in mod.of_kind("func"):
        if marker in item.text.split("\n", 1)[0]:
            return item.id  # type: ignore[return-value]
    raise LinkError(f"meld's import map names a realloc {marker} the module does not have")
