"""The linker on a small module shaped like meld's output, and on a real plugin."""

from __future__ import annotations

import struct

import pytest
import wasmtime

from pywasm_sdk import _bridge, hostcalls
from pywasm_sdk._abi import CALLBACKS
from pywasm_sdk.tooling import abi as abi_mod
from pywasm_sdk.tooling import checks, inspection, linker, snapshot, wasm_binary, wasm_file
from pywasm_sdk.tooling.wasm_module import Module, function_names

from .conftest import EXAMPLES

ABI = abi_mod.load()
ANCHOR_AT = 0x2000
ENTRY = 0x3000  # a made-up PyObject* for the callbacks' Python entries
BIND = 0x3100
CONTEXT_ENTRIES = [0x3200, 0x3300]  # create_stream_context, forget_contexts

#: what the bridge imports from the interpreter, with the C signatures it relies on
C_API = {
    "malloc": "(param i32) (result i32)", "free": "(param i32)",
    "PyGILState_Ensure": "(result i32)", "PyCFunction_NewEx": "(param i32 i32 i32) (result i32)",
    "PyTuple_New": "(param i32) (result i32)", "PyTuple_SetItem": "(param i32 i32 i32) (result i32)",
    "PyObject_Vectorcall": "(param i32 i32 i32 i32) (result i32)", "Py_DecRef": "(param i32)",
    "PyErr_Occurred": "(result i32)", "PyErr_Clear": "", "PyErr_SetString": "(param i32 i32)",
    "PyErr_WriteUnraisable": "(param i32)", "PyLong_FromLong": "(param i32) (result i32)",
    "PyLong_FromUnsignedLong": "(param i32) (result i32)",
    "PyLong_FromUnsignedLongLong": "(param i64) (result i32)", "PyLong_AsLong": "(param i32) (result i32)",
    "PyLong_AsUnsignedLong": "(param i32) (result i32)", "PyLong_AsLongLong": "(param i32) (result i64)",
    "PyLong_AsUnsignedLongLong": "(param i32) (result i64)", "PyBool_FromLong": "(param i32) (result i32)",
    "PyBytes_AsStringAndSize": "(param i32 i32 i32) (result i32)",
    "PyBytes_FromStringAndSize": "(param i32 i32) (result i32)",
    "PyUnicode_AsUTF8AndSize": "(param i32 i32) (result i32)",
    "PyList_New": "(param i32) (result i32)", "PyList_Append": "(param i32 i32) (result i32)",
    "PyList_Size": "(param i32) (result i32)",
}


def _data(address: int, data: bytes) -> str:
    escaped = "".join("\\%02x" % b for b in data)
    return f'(data (i32.const {address}) "{escaped}")'


#: the function table's size: slots 1-6 hold the library's functions (table base 1)
TABLE_SIZE = 7
TYPE_TYPE = 0x1300  # PyType_Type
#: where CPython 3.14's type object on wasm32 keeps these fields
TP_NAME, TP_BASICSIZE, TP_FLAGS, TP_TRAVERSE, TP_INIT = 12, 16, 84, 92, 148
NAMES = b"type\0ast.Load\0"  # at 0x1400: the types' names


def fused_like_module(*, anchor: bool = True, c_api: dict[str, str] | None = None,
                      extra: str = "", heap_type: bool = True, type_size: int = 468) -> bytes:
    """A module with the shape the linker expects from meld.

    A "library" with memory base 0x1000 and table base 1 holds a builtin module `gone` nobody
    imported: `PyInit_gone` cites its module definition (static data at 0x1100), whose
    relocated words point at `gone_method` (slot 2); the interpreter's table of builtin modules
    (0x1200) points at `PyInit_gone` (slot 1); `kept_by_table` (slot 3) is cited by live code
    (`import_builtin`, slot 4).
    `_initialize` and what only it calls must disappear.

    componentize-py's runtime: `PyInit_componentize_py_runtime`, and the component's export
    `pywasm-unused` reaching the runtime's dispatch, which live code does not reach; live code
    calls one of its functions (`pyo3::convert`).

    The compiler, as CPython's: live code calls the entry point `_PyAST_Compile`, which calls
    `init_types`; that makes the AST node types, citing their slots `ast_traverse` (5) and
    `ast_type_init` (6), and calls `add_ast_annotations`; `ast_type_init` calls `init_types`
    again (it runs once). With ``heap_type``, the snapshot's heap holds one such type.
    """
    api = c_api if c_api is not None else C_API
    funcs = [f'(func ${n} (export "{n}") {sig} unreachable)' for n, sig in api.items()]
    anchor_bytes = _bridge.anchor_bytes([ENTRY] * len(CALLBACKS), BIND, CONTEXT_ENTRIES, 0,
                                        len(hostcalls.RAW_NAMES), [])
    return wasmtime.wat2wasm(f"""(module
      (type $t_wall (func (param i32)))
      (memory (export "memory") 2)
      (global $sp (export "__stack_pointer") (mut i32) (i32.const 65536))
      (global (export "__heap_base") (mut i32) (i32.const 0x8000))
      (global $mb i32 (i32.const 0x1000))
      (global $tb i32 (i32.const 1))
      ;; a library exports data symbols relative to its memory base; the resolved, absolute
      ;; addresses are exported as "<library>:<symbol>" (mutable, like a GOT entry)
      (global (export "PyExc_TypeError") i32 (i32.const 0x100))
      (global (export "libpython3.14.so:PyExc_TypeError") (mut i32) (i32.const 0x1100))
      (global (export "libpython3.14.so:PyExc_ImportError") (mut i32) (i32.const 0x1104))
      (global (export "libpython3.14.so:PyUnicode_Type") (mut i32) (i32.const 0x1108))
      (global (export "libpython3.14.so:PyType_Type") (mut i32) (i32.const {TYPE_TYPE}))
      (table $imports (export "$imports") 1 1 funcref)
      (table $fns (export "__indirect_function_table") {TABLE_SIZE} funcref)
      (elem (table $imports) (i32.const 0) func $wall_stub)
      (elem (table $fns) (i32.const 1) func $PyInit_gone $gone_method $kept_by_table $import_builtin
        $ast_traverse $ast_type_init)
      {' '.join(funcs)}
      (func $wall_stub (param i32) unreachable)
      (func $__wasm_import_wall_clock_now (param i32) (local.get 0) (i32.const 0)
        (call_indirect $imports (type $t_wall)))
      (func $PyInit_gone (result i32) (i32.add (global.get $mb) (i32.const 0x100)))
      (func $gone_method (result i32) (i32.const 7))
      (func $kept_by_table (result i32) (i32.const 1))
      (func $import_builtin (param i32) (result i32)
        (call $__wasm_import_wall_clock_now (i32.const 0))
        (drop (call $_PyAST_Compile (i32.const 0)))
        (drop (call $pyo3::convert))
        (drop (i32.add (global.get $tb) (i32.const 2)))
        (i32.load (i32.add (i32.add (global.get $mb) (i32.const 0x200)) (local.get 0))))
      (func $__wasm_apply_data_relocs
        (i32.store (i32.add (i32.const 0x104) (global.get $mb)) (i32.add (global.get $tb) (i32.const 1)))
        (i32.store (i32.add (i32.const 0x200) (global.get $mb)) (i32.add (global.get $tb) (i32.const 0))))
      (func $_PyAST_Compile (param i32) (result i32) (drop (call $init_types (i32.const 0))) (i32.const 0))
      (func $init_types (param i32) (result i32)
        (drop (i32.add (global.get $tb) (i32.const 4)))
        (drop (i32.add (global.get $tb) (i32.const 5)))
        (call $add_ast_annotations))
      (func $add_ast_annotations (result i32) (i32.const 0))
      (func $ast_traverse (param i32 i32 i32) (result i32) (i32.const 0))
      (func $ast_type_init (param i32 i32 i32) (result i32) (call $init_types (i32.const 0)))
      (func $PyInit_componentize_py_runtime (result i32) (call $componentize_py_runtime::init))
      (func $componentize_py_runtime::init (result i32) (i32.const 0))
      (func $componentize_py_runtime::dispatch (drop (call $pyo3::convert)))
      (func $pyo3::convert (result i32) (i32.const 0))
      (func $pywasm-unused (export "pywasm-unused") (call $componentize_py_runtime::dispatch))
      (func $init_helper (result i32) (i32.const 7))
      (func $_initialize (export "_initialize") (drop (call $init_helper)) (call $__wasm_apply_data_relocs))
      {extra}
      {_data(0x1100, struct.pack("<4I", 0x70000000, 2, 0, 0))}
      {_data(0x1200, struct.pack("<I", 1))}
      {_data(TYPE_TYPE, _type(TYPE_TYPE, 0x1400, type_size, (1 << 31) | (1 << 12)))}
      {_data(0x1400, NAMES)}
      {_data(0x8008, _heap(heap_type))}
      {_data(ANCHOR_AT, anchor_bytes) if anchor else ""}
    )""")


def _type(meta: int, name: int, basicsize: int, flags: int, slots: dict[int, int] | None = None) -> bytes:
    """A type object (468 bytes, PyHeapTypeObject's size) of metatype ``meta``; ``slots`` maps
    a field's offset to the table slot it holds."""
    words = bytearray(468)
    fields = {4: meta, TP_NAME: name, TP_BASICSIZE: basicsize, TP_FLAGS: flags, **(slots or {})}
    for at, value in fields.items():
        struct.pack_into("<I", words, at, value)
    return bytes(words)


def _heap(heap_type: bool = True) -> bytes:
    """dlmalloc chunks from __heap_base (0x8000): one in use, one in use holding a type object
    (ast.Load, whose tp_traverse and tp_init are slots 5 and 6) unless ``heap_type`` is false,
    one freed with garbage left in it, and the top chunk up to the end of memory (2 pages) less
    dlmalloc's footer."""
    used = struct.pack("<II", 0, 0x40 | 1) + b"heap object".ljust(0x38, b"!")
    made = (_type(TYPE_TYPE, 0x1405, 16, 1 << 12, {TP_TRAVERSE: 5, TP_INIT: 6}) if heap_type
            else bytes(468)).ljust(0x1E0 - 8, b"\0")
    typed = struct.pack("<II", 0, 0x1E0 | 1) + made
    freed = struct.pack("<II", 0, 0x80 | 1) + b"garbage!" * 15
    top = struct.pack("<II", 0x80, (0x20000 - 0x38 - 0x8008 - 0xC0 - 0x1E0) & ~7)  # PINUSE clear
    return used + typed + freed + top


def link_small(callbacks=("proxy_on_request_headers",), **kwargs):
    return linker.link(fused_like_module(**kwargs), list(callbacks), keep_names=True)


def test_data_symbols_resolve_to_their_absolute_address():
    link = linker._Linker(fused_like_module(), ABI)
    resolved = link.data_symbol("PyExc_TypeError")
    assert link.mod.global_initial(resolved) == 0x1100  # not the library-relative 0x100
    assert link.data_symbol("__stack_pointer") == link.export("__stack_pointer", 3)


def test_small_module_links_into_a_module_envoy_accepts():
    out, report = link_small()
    assert checks.problems(out) == []
    info = wasm_binary.read(out)
    assert {e.name for e in info.exports} == {
        "memory", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_request_headers"}
    imported = {(i.module, i.name) for i in info.imports}
    assert {("env", name) for name in ABI.hostcalls} <= imported
    assert ("wasi_snapshot_preview1", "clock_time_get") in imported  # the bridged wall clock
    assert report.bridged == ["__wasm_import_wall_clock_now"]
    assert report.raw_hostcalls == len(hostcalls.RAW_NAMES)


def test_unused_builtin_modules_and_startup_code_are_removed():
    out, report = link_small()
    assert report.removed_modules == ["componentize_py_runtime", "gone"]
    names = set(function_names(Module.parse(out)).values())
    assert {"kept_by_table", "import_builtin", "malloc", "PyObject_Vectorcall"} <= names
    assert not {"PyInit_gone", "gone_method", "_initialize", "init_helper", "wall_stub"} & names


def test_componentize_py_runtime_goes_but_what_live_code_calls():
    out, report = link_small()
    names = set(function_names(Module.parse(out)).values())
    assert "componentize_py_runtime" in report.removed_modules
    assert "pyo3::convert" in names
    assert not {"pywasm-unused", "componentize_py_runtime::dispatch", "componentize_py_runtime::init",
                "PyInit_componentize_py_runtime"} & names


def test_a_removed_module_raises_importerror_where_its_init_was():
    mod = Module.parse(link_small()[0])
    table = next(e for e in mod.elems if e.table == 1 and e.offset_value == 1)
    init, method, kept = table.items[:3]
    assert method is None  # a null slot: nothing can reach it
    assert function_names(mod).get(kept) == "kept_by_table"
    assert init is not None and mod.function_type(init) == (b"", b"\x7f")  # () -> PyObject*


def test_raw_hostcalls_get_method_records_in_the_anchor():
    mod = Module.parse(link_small()[0])
    memory = bytearray(0x10000)
    for d in mod.datas:
        memory[d.offset:d.offset + len(d.data)] = d.data
    found = snapshot.Anchor.find(snapshot.Memory(mod.datas), bytes.fromhex(_bridge.MAGIC_HEX),
                                 _bridge.ANCHOR_FORMAT, len(CALLBACKS), len(_bridge.CONTEXT_ENTRIES))
    assert (found.address, found.bind, found.context_entries) == (ANCHOR_AT, BIND, CONTEXT_ENTRIES)
    defs = found.area
    _, lo, _ = mod.tables[1]
    assert lo == TABLE_SIZE + len(hostcalls.RAW_NAMES)  # the table grew by one slot per raw hostcall
    for n, name in enumerate(hostcalls.RAW_NAMES):
        ml_name, ml_meth, ml_flags, ml_doc = struct.unpack_from("<4I", memory, defs + 16 * n)
        assert memory[ml_name:memory.index(0, ml_name)].decode() == name
        assert ml_meth == TABLE_SIZE + n and ml_flags == 0x80 and ml_doc == 0
    raw_elem = next(e for e in mod.elems if e.offset_value == TABLE_SIZE)
    assert len(raw_elem.items) == len(hostcalls.RAW_NAMES)


def test_freed_heap_is_zeroed_and_data_packed():
    out, report = link_small()
    mod = Module.parse(out)
    assert report.heap_walked and report.zeroed_bytes == 0x80 - 16  # a small chunk keeps its head and links
    data = b"".join(d.data for d in mod.datas)
    assert b"heap object" in data and b"garbage!" in data and b"garbage!" * 2 not in data
    assert all(d.data[:1] != b"\0" and d.data[-1:] != b"\0" for d in mod.datas)


def test_the_slots_of_a_type_made_before_the_snapshot_are_kept():
    """The compiler's AST types live in the heap: the garbage collector calls their tp_traverse
    through it. What only init_types reaches goes: it ran before the snapshot, once."""
    out, report = link_small()
    mod = Module.parse(out)
    names = function_names(mod)
    table = next(e for e in mod.elems if e.table == 1 and e.offset_value == 1)
    assert [names.get(f) for f in table.items[4:6]] == ["ast_traverse", "ast_type_init"]
    assert "add_ast_annotations" not in names.values() and report.compiler_removed
    init_types = next(f for f, n in names.items() if n == "init_types")
    body = mod.codes[init_types - len(mod.imported_functions)]
    assert body.endswith(b"\x1a\x41\x7f\x0b")  # the stub's ImportError, then -1: failed


def test_without_such_a_type_its_slots_are_removed():
    table = next(e for e in Module.parse(link_small(heap_type=False)[0]).elems
                 if e.table == 1 and e.offset_value == 1)
    assert table.items[4:6] == [None, None]


def test_type_objects_of_another_layout_are_refused():
    with pytest.raises(linker.LinkError, match="not laid out as CPython 3.14's type object"):
        link_small(type_size=400)


def test_only_requested_callbacks_are_exported():
    out, _ = link_small(callbacks=())
    assert {e.name for e in wasm_binary.read(out).exports} == {
        "memory", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"anchor": False}, "expected one pywasm anchor"),
    ({"c_api": {k: v for k, v in C_API.items() if k != "PyObject_Vectorcall"}},
     "exports 0 functions named 'PyObject_Vectorcall'"),
    ({"c_api": {**C_API, "PyLong_AsLongLong": "(param i32) (result i32)"}},
     "PyLong_AsLongLong: the fused module's function has another type"),
    ({"extra": '(func (export "PyTuple_New") (param i32) (result i32) unreachable)'},
     "exports 2 functions named 'PyTuple_New'"),
])
def test_a_module_of_another_shape_is_refused_with_the_reason(kwargs, message):
    with pytest.raises(linker.LinkError, match=message):
        link_small(**kwargs)


def test_a_fused_module_with_imports_is_refused():
    wasm = wasmtime.wat2wasm('(module (import "x" "y" (func)) (memory (export "memory") 1))')
    with pytest.raises(linker.LinkError, match=r"has imports \(x\.y\)"):
        linker.link(wasm, [])


def test_real_plugin_build_has_the_expected_shape(pywasm_build):
    """Fails loudly when componentize-py or meld change the shape the linker relies on."""
    wasm = pywasm_build(EXAMPLES / "http_headers")
    data = wasm.read_bytes()
    info = wasm_binary.read(data)
    assert checks.problems(data) == []
    wasi = {i.name for i in info.imports if i.module == "wasi_snapshot_preview1"}
    assert wasi == {"clock_time_get", "random_get", "fd_write", "environ_sizes_get", "environ_get"}
    exported = {e.name for e in info.exports}
    per_request = {n for n in exported if n.startswith("proxy_on_") and n not in (
        "proxy_on_memory_allocate", "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick",
        "proxy_on_queue_ready", "proxy_on_http_call_response") and "grpc" not in n}
    # per request, only what the SDK needs and what the plugin overrides
    assert per_request == {"proxy_on_context_create", "proxy_on_response_headers", "proxy_on_delete"}
    sections = dict(info.sections)
    # no names, no dylink, no producers: only what the build recorded of the code's origins
    assert [n for n in sections if n.startswith("custom:")] == ["custom:pywasm.origins"]
    assert sections["code"] < 3_000_000  # unused builtin modules and the compiler are gone
    origins = inspection.inspect_module(wasm_file.load(wasm)).code_origins
    assert {"CPython core and libc", "pywasm bridge"} <= set(origins)
    # every function counted once (the section also holds each body's size prefix)
    assert 0.98 * sections["code"] < sum(origins.values()) < sections["code"]
    # the plugin imports json and re: their C modules stay; zlib was kept only by zipimport,
    # which the proxy has no use for (no files), and the SDK's imports bring no unicode tables
    assert {"builtin module _json", "builtin module _sre"} <= set(origins)
    assert "builtin module zlib" not in origins
