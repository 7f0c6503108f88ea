"""Which code of the interpreter a plugin can never run: builtin C modules it did not import,
and CPython's parser and compiler.

Why ordinary dead-code removal keeps them: every C function whose address is taken sits in the
function table, and the table is a root. A builtin module's methods are reached through its
``PyModuleDef`` (static data with function pointers), the module definition through ``PyInit_X``,
and ``PyInit_X`` through the interpreter's table of builtin modules. For a module that was never
imported while the plugin was pre-initialised (and that no loaded code names, so nothing can
import it later), this module cuts that chain and proves the rest unreachable.

The proof, on a graph of functions and static data:

- edges from a function: its calls, the table slots and static addresses its code forms from
  ``__table_base``/``__memory_base``-style constant globals (how position-independent code takes
  addresses), and ``ref.func``;
- edges from static data: the words the dynamic linker relocated (read from the
  ``__wasm_apply_data_relocs`` functions, with their values from the snapshot): function
  pointers and data pointers. Static data is cut into objects at every address code refers to;
- *candidates*: what the removed modules' ``PyInit`` functions reach, plus the function index
  range of the C library each module bundles (SQLite for ``_sqlite3``, ...), plus what the cut
  compiler entry points called, plus componentize-py's runtime and meld's glue
  (:data:`RUNTIME_MODULE`);
- *live*: everything reached from every function that is not a candidate (start-up code
  included: it may have stored function pointers anywhere in the heap), from the functions the
  linker's bridges call, and from the slots and static tables of every type object in the
  snapshot's heap (:func:`heap_roots`: the compiler, a candidate, ran before the snapshot and
  made types). A candidate is removed only if it is not live;
- a guard against objects cut too finely: a candidate whose pointer is stored within
  :data:`GUARD` bytes after an address live code refers to is kept, with what it reaches.

Removed functions' table slots become null; the removed modules' ``PyInit`` slots point at a
function raising ``ImportError``, and so do the cut compiler entry points and the compiler's
run-once initialisation (:data:`COMPILER_RUN_ONCE`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from . import wasm_code
from .abi import UNUSED_EXPORT
from .wasm_module import Module

__all__ = ["COMPILER_ENTRY_POINTS", "COMPILER_RUN_ONCE", "GUARD", "RUNTIME_MODULE", "HeapRoots",
           "LayoutError", "Plan", "heap_roots", "plan"]

#: CPython entry points into its parser and compiler; each returns NULL (0) with an exception
#: set on failure, which is what the replacement does.
COMPILER_ENTRY_POINTS = (
    "_PyParser_ASTFromString", "_PyParser_ASTFromFile", "_PyParser_InteractiveASTFromFile",
    "_PyAST_Compile", "_PySymtable_Build", "PyAST_obj2mod", "PyAST_mod2obj", "_PyAST_Validate",
    "_PyCompile_CodeGen", "_PyCompile_Assemble",
    # compile() itself: without the compiler it can only fail, and what it reaches before
    # failing (PyAST_Check, which initialises every AST type) is about 90 kB of code
    "builtin_compile",
)

#: compiler functions that ran before the snapshot if anything can still reach them, and run
#: only once: ``init_types`` makes the AST node types (``get_ast_state`` calls it under a
#: once-flag, from compile() and from the AST types' own methods). Its types can be in the heap
#: (their slots are kept: :func:`heap_roots`), but with its once-flag set in the snapshot it is
#: never called again, so its body (and the 60 kB it reaches) goes; the replacement fails
#: (-1, ImportError) should that ever be wrong.
COMPILER_RUN_ONCE = ("init_types",)

#: C libraries vendored into a builtin module: names of their functions. A library's
#: functions are contiguous in the module (one object file), so the whole index range between
#: the first and the last of them is a candidate (the live closure keeps anything else in it).
BUNDLED_LIBRARIES = {
    "_sqlite3": r"^sqlite3",
    "_decimal": r"^mpd_",
    "pyexpat": r"^(XML_|XmlInit|PyExpat_XML)",
    "zlib": r"^(deflate|inflate)$",
}

#: componentize-py's runtime: the builtin module ``componentize_py_runtime`` (Rust: pyo3,
#: wit-dylib, std) that runs a component's exports and imports, and the glue meld made for
#: them (the component's exports, and the functions without a name: adapters and
#: trampolines). The bridges do that job, and the build does not keep the module unless the
#: plugin names it, so all of it is a candidate; what CPython, libc or the bridges reach of it
#: (the trampoline through which the fused module exports malloc, for one) stays.
RUNTIME_MODULE = "componentize_py_runtime"
_RUNTIME = re.compile(r"::|^<|^_ZN|^wit_dylib|^cabi_|^componentize_py|^exports#|^%s$"
                      % re.escape(UNUSED_EXPORT))

#: bytes after a live reference within which a stored pointer keeps its function
GUARD = 4096

_RELOC_FUNCTION = "__wasm_apply_data_relocs"


@dataclass
class Plan:
    removed: set[int] = field(default_factory=set)  # defined-function indices
    modules: list[str] = field(default_factory=list)  # builtin modules removed
    module_inits: dict[int, str] = field(default_factory=dict)  # table slot -> module
    compiler: dict[int, int] = field(default_factory=dict)  # function -> what its replacement returns
    guarded: int = 0  # candidates kept by the guard
    candidates: set[int] = field(default_factory=set)  # what was considered for removal
    graph: _Graph | None = field(default=None, repr=False)
    inits: dict[str, int] = field(default_factory=dict)  # builtin module -> its PyInit function
    entry_points: list[int] = field(default_factory=list)  # the functions the bridges call


class _Graph:
    def __init__(self, mod: Module, names: dict[int, str], memory: bytes, static: tuple[int, int],
                 table: int, libraries: list[Collection[int]]) -> None:
        self.mod, self.names, self.static = mod, names, static
        n_imported = len(mod.imported_functions)
        if n_imported:
            raise ValueError("pruning expects a module without function imports")
        self.size = mod.tables[table][1]
        self.slots: list[int | None] = [None] * self.size
        for e in mod.elems:
            if e.mode == "active" and e.table == table and e.offset_value is not None:
                for k, f in enumerate(e.items):
                    self.slots[e.offset_value + k] = f
        values = [mod.global_initial(i) for i in range(len(mod.globals))]
        # a library's __table_base is where its element segment starts: only a constant added
        # to one of those is a function address (a constant added to a GOT entry is not)
        table_bases = {e.offset_value for e in mod.elems if e.mode == "active" and e.table == table}
        reloc_functions = {i for i, n in names.items() if n.endswith(_RELOC_FUNCTION)}
        self.relocs: dict[int, int] = {}
        word = memoryview(memory).cast("B")
        for i in reloc_functions:
            for address, _value in wasm_code.straight_line_stores(mod.codes[i], values.__getitem__):
                if address + 4 <= len(memory):
                    self.relocs[address] = int.from_bytes(word[address:address + 4], "little")
        self.facts = [wasm_code.facts(b) for b in mod.codes]
        self.data_refs: list[list[int]] = []
        self.slot_refs: list[list[int]] = []
        self.start_referrers: dict[int, set[int]] = {}  # address -> functions citing it exactly
        starts: set[int] = set()
        lo, hi = static
        for i, fact in enumerate(self.facts):
            d: list[int] = []
            s: list[int] = []
            if i not in reloc_functions:  # their references are the relocated words themselves
                # a bundled library's code cites only its own statics (at any offset) and other
                # symbols by their start: all its references cut objects
                certain = len(fact.global_offsets) + (len(fact.derived_offsets)
                                                   if any(i in lib for lib in libraries) else 0)
                for n, (g, k) in enumerate(fact.global_offsets + fact.derived_offsets):
                    v = values[g]
                    if v is None:
                        continue
                    v = (v + k) & 0xFFFFFFFF
                    if lo <= v < hi:
                        d.append(v)
                        if n < certain:  # only certain references cut objects
                            starts.add(v)
                            self.start_referrers.setdefault(v, set()).add(i)
                    elif v < self.size and (k == 0 or values[g] in table_bases):
                        s.append(v)
            # a trampoline to a slot by its number: how the fused module exports a function
            # that the dynamic linker resolved through the table (malloc, for one)
            hit = wasm_code.trampoline_slot(mod.codes[i])
            if hit is not None and hit[1] == table and 0 <= hit[0] < self.size:
                s.append(hit[0])
            self.data_refs.append(d)
            self.slot_refs.append(s)
        starts.update(v for v in self.relocs.values() if lo <= v < hi)
        self.starts = sorted(starts)
        self.object_relocs: dict[int, list[int]] = {}
        for address in sorted(self.relocs):
            o = self.object(address)
            if o is not None:
                self.object_relocs.setdefault(o, []).append(self.relocs[address])
        self.reloc_addresses = sorted(self.relocs)

    def object(self, address: int) -> int | None:
        k = bisect.bisect_right(self.starts, address) - 1
        return k if k >= 0 else None

    def closure(self, functions: list[int], slot_override: Mapping[int, int | None],
                opaque: set[int], root_objects: Iterable[int] = ()) -> tuple[set[int], set[int]]:
        """Functions and objects reached from ``functions`` and ``root_objects``; the
        edges of ``opaque`` functions (whose bodies will be replaced) are not followed."""
        seen_f: set[int] = set()
        seen_o: set[int] = set(root_objects)
        todo = list(functions)
        objects = list(seen_o)
        slots, lo, hi, size = self.slots, self.static[0], self.static[1], self.size

        def slot(s: int) -> None:
            g = slot_override.get(s, slots[s]) if s in slot_override else slots[s]
            if g is not None:
                todo.append(g)

        while todo or objects:
            while todo:
                f = todo.pop()
                if f in seen_f:
                    continue
                seen_f.add(f)
                if f in opaque:
                    continue
                fa = self.facts[f]
                todo.extend(fa.calls)
                todo.extend(fa.ref_funcs)
                for s in self.slot_refs[f]:
                    slot(s)
                for a in self.data_refs[f]:
                    o = self.object(a)
                    if o is not None and o not in seen_o:
                        seen_o.add(o)
                        objects.append(o)
            while objects:
                for v in self.object_relocs.get(objects.pop(), ()):
                    if v < size:
                        slot(v)
                    elif lo <= v < hi:
                        o = self.object(v)
                        if o is not None and o not in seen_o:
                            seen_o.add(o)
                            objects.append(o)
        return seen_f, seen_o


def _may_belong_to_live(g: _Graph, o: int, live: set[int], removable: set[int]) -> bool:
    """Whether object ``o`` may really be the tail of a live object before it (objects are cut
    where code cites an address, which may be inside a bigger object): a live object starts
    less than GUARD bytes before, with no boundary of removable data (:func:`_own_data`)
    between."""
    k = o
    while k > 0:
        if _own_data(g, k, removable):
            return False
        k -= 1
        if g.starts[o] - g.starts[k] >= GUARD:
            return False
        if k in live:
            return True
    return False


def _own_data(g: _Graph, o: int, removable: set[int]) -> bool:
    """Whether object ``o`` starts data of the removable code's own: only removable code cites
    its start, and none of it cites the object before. C code cites another compilation unit's
    statics by their start (a symbol), so the object before, not cited by the removable code,
    is another unit's and cannot run into this one. (The exception, an interned string inside
    ``_PyRuntime`` cited by one module only, has no function pointer after it before the next
    cited address.)"""
    citing = g.start_referrers.get(g.starts[o], set())
    before = g.start_referrers.get(g.starts[o - 1], set())
    return bool(citing) and citing <= removable and not (before & removable)


class LayoutError(ValueError):
    """The snapshot's type objects are not laid out as this module reads them."""


#: CPython 3.14's type object on wasm32 (Include/cpython/object.h), the layout
#: componentize-py's interpreter has: where a type keeps its name and flags, the flag that
#: marks a metatype, and the size of a type made at run time (PyHeapTypeObject), which is
#: checked against PyType_Type's own tp_basicsize
_OB_TYPE, _TP_NAME, _TP_BASICSIZE, _TP_FLAGS = 4, 12, 16, 84
_TYPE_SUBCLASS, _TYPE_READY = 1 << 31, 1 << 12
_HEAP_TYPE_SIZE = 468
#: the type's own function pointers: tp_dealloc, tp_getattr, tp_setattr, tp_repr, tp_hash,
#: tp_call, tp_str, tp_getattro, tp_setattro, tp_traverse, tp_clear, tp_richcompare, tp_iter,
#: tp_iternext, tp_descr_get, tp_descr_set, tp_init, tp_alloc, tp_new, tp_free, tp_is_gc,
#: tp_del, tp_finalize, tp_vectorcall
_TYPE_FUNCTIONS = (24, 32, 36, 44, 60, 64, 68, 72, 76, 92, 96, 100, 108, 112, 136, 140,
                   148, 152, 156, 160, 164, 188, 196, 200)
#: its pointers to static tables: tp_methods, tp_members, tp_getset, tp_base
_TYPE_TABLES = (116, 120, 124, 128)
#: a heap type's own method tables follow the type object (208 bytes): as_async, as_number,
#: as_mapping, as_sequence, as_buffer, 55 words of function pointers (or 0)
_HEAP_TYPE_SLOTS = range(208, 208 + 55 * 4, 4)


@dataclass
class HeapRoots:
    """What the types made before the snapshot keep: their functions are called through
    pointers stored in the heap, which no static edge shows."""

    slots: set[int] = field(default_factory=set)  # table slots
    addresses: set[int] = field(default_factory=set)  # addresses of static data
    types: int = 0  # type objects found in the heap


def heap_roots(memory: bytes, heap_base: int, type_type: int, static: tuple[int, int],
               table_size: int) -> HeapRoots:
    """The functions and static tables of the type objects made at run time (in the heap).

    Code that runs while the plugin is pre-initialised can make types (``PyType_FromSpec``):
    CPython's compiler makes the AST node types, for one, and its singletons such as
    ``ast.Load()`` stay in the heap. Their slots (``tp_traverse``, ``tp_dealloc``, ...) are
    called later, by the garbage collector among others, through the copy in the heap.
    """
    lo, hi = static
    word = memoryview(memory)[:len(memory) // 4 * 4].cast("I")

    def u32(address: int) -> int:
        return word[address // 4] if 0 <= address and address + 4 <= len(memory) else 0

    def name(address: int) -> bytes:
        end = memory.find(b"\0", address, address + 256) if 0 < address < len(memory) else -1
        return memory[address:end] if end > address else b""

    if (name(u32(type_type + _TP_NAME)) != b"type" or not u32(type_type + _TP_FLAGS) & _TYPE_SUBCLASS
            or u32(type_type + _TP_BASICSIZE) != _HEAP_TYPE_SIZE):
        raise LayoutError(f"PyType_Type (at {type_type:#x}) is not laid out as CPython 3.14's type "
                          f"object on wasm32 (name 'type' at +{_TP_NAME}, the type-subclass flag at "
                          f"+{_TP_FLAGS}, tp_basicsize {_HEAP_TYPE_SIZE})")
    roots = HeapRoots()
    metatypes, todo = {type_type}, [type_type]
    while todo:
        meta = todo.pop()
        for found in re.finditer(re.escape(meta.to_bytes(4, "little")), memory):
            t = found.start() - _OB_TYPE
            if t % 4 or t < 0 or not _is_type(name(u32(t + _TP_NAME)), u32(t + _TP_FLAGS),
                                              u32(t + _TP_BASICSIZE)):
                continue  # the metatype's address in another field (a tuple's item, tp_base)
            if u32(t + _TP_FLAGS) & _TYPE_SUBCLASS and t not in metatypes:
                metatypes.add(t)
                todo.append(t)
            if t < heap_base:
                continue  # a static type: its pointers are relocated words, seen statically
            roots.types += 1
            for at in (*_TYPE_FUNCTIONS, *_HEAP_TYPE_SLOTS):
                if 0 < (v := u32(t + at)) < table_size:
                    roots.slots.add(v)
            roots.addresses.update(v for at in _TYPE_TABLES if lo <= (v := u32(t + at)) < hi)
    return roots


def _is_type(name: bytes, flags: int, basicsize: int) -> bool:
    """Whether these fields can be a ready type's: a printable name, the ready flag and room
    for an object header (what is not a type fails one of them in practice)."""
    return bool(re.fullmatch(rb"[ -~]+", name)) and bool(flags & _TYPE_READY) and 8 <= basicsize < 1 << 20


def plan(mod: Module, names: dict[int, str], memory: bytes, heap_base: int, table: int,
         keep_modules: set[str], keep_compiler: bool, type_type: int,
         entry_points: Iterable[int]) -> Plan:
    """What to remove from a fused module (indices of its defined functions); ``type_type`` is
    the address of ``PyType_Type``, ``entry_points`` the functions the bridges call."""
    result = Plan(entry_points=sorted(set(entry_points)))
    by_name: dict[str, int] = {}
    for i, n in names.items():
        by_name.setdefault(n, i)
    inits = {n[len("PyInit_"):]: i for n, i in by_name.items() if n.startswith("PyInit_")}
    result.inits = inits
    result.modules = sorted(m for m in inits if m not in keep_modules)
    cut = {} if keep_compiler else {
        **{by_name[n]: 0 for n in COMPILER_ENTRY_POINTS if n in by_name},  # NULL: failed
        **{by_name[n]: -1 for n in COMPILER_RUN_ONCE if n in by_name}}
    libraries: list[Collection[int]] = []
    for module in result.modules:
        pattern = BUNDLED_LIBRARIES.get(module)
        if pattern:
            members = [i for i, n in names.items() if re.search(pattern, n)]
            if members:
                libraries.append(range(min(members), max(members) + 1))
        elif module == RUNTIME_MODULE:
            libraries.append(frozenset(i for i in range(len(mod.codes))
                                       if i not in names or _RUNTIME.search(names[i])))
    static_lo = min((d.offset for d in mod.datas if d.offset is not None), default=0)
    g = result.graph = _Graph(mod, names, memory, (static_lo, heap_base), table, libraries)
    if not result.modules and not cut:
        return result

    removed_inits = {inits[m] for m in result.modules}
    seeds = sorted(removed_inits) + [f for lib in libraries for f in lib]
    for c in cut:
        seeds += g.facts[c].calls + g.facts[c].ref_funcs
    candidates, _ = g.closure(seeds, {}, set())
    candidates |= set(seeds)
    candidates -= set(cut)

    init_slots: dict[int, int | None] = {s: None for s, f in enumerate(g.slots) if f in removed_inits}
    result.module_inits = {s: names[g.slots[s]][len("PyInit_"):] for s in init_slots}  # type: ignore[index]
    rest = [f for f in range(len(mod.codes)) if f not in candidates] + result.entry_points
    roots = heap_roots(memory, heap_base, type_type, g.static, g.size)
    rest += sorted({f for s in roots.slots if s not in init_slots and (f := g.slots[s]) is not None})
    root_objects = {o for a in roots.addresses if (o := g.object(a)) is not None}
    while True:
        live, live_objects = g.closure(rest, init_slots, set(cut), root_objects)
        removed = candidates - live
        # the guard: a pointer in an object that directly follows a live one may belong to
        # the live one (objects are cut where code refers, not where they really end)
        guarded: set[int] = set()
        for address in g.reloc_addresses:
            v = g.relocs[address]
            if v < g.size and v not in init_slots and g.slots[v] in removed:
                o = g.object(address)
                f = g.slots[v]
                if f is not None and o is not None and _may_belong_to_live(g, o, live_objects, removed):
                    guarded.add(f)
        if not guarded:
            break
        result.guarded += len(guarded)
        rest += sorted(guarded)
    result.removed = removed
    result.candidates = candidates
    result.compiler = cut
    return result


def code_origins(plan: Plan, kept: Mapping[int, int]) -> dict[str, int]:
    """Bytes of code of the kept functions (function -> bytes of its body) by where they come
    from: each builtin C module the
    plugin uses (what only its ``PyInit`` reaches), componentize-py's runtime, and the rest of
    CPython and libc (what the bridge's calls into the C API reach)."""
    g = plan.graph
    if g is None:
        return {}
    no_inits: dict[int, int | None] = {s: None for s, f in enumerate(g.slots) if f in set(plan.inits.values())}
    core, _ = g.closure(plan.entry_points, no_inits, set(plan.compiler))
    owner: dict[int, str] = {}
    for module, init in sorted(plan.inits.items()):
        if module in plan.modules:
            continue
        own, _ = g.closure([init], {}, core | set(plan.compiler))
        for f in own - core:
            owner[f] = f"builtin module {module}" if f not in owner else "builtin modules (shared)"
    sizes: dict[str, int] = {}
    for f in kept:
        name = g.names.get(f, "")
        origin = ("componentize-py runtime (what CPython or the bridges reach)"
                  if _RUNTIME.search(name) else owner.get(f, "CPython core and libc"))
        sizes[origin] = sizes.get(origin, 0) + kept[f]
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
