"""The linker on a small module shaped like meld's output, and on a real plugin."""

from __future__ import annotations

import pytest
import wasmtime

from pywasm_sdk.tooling import abi as abi_mod
from pywasm_sdk.tooling import checks, linker, wasm_binary

from .conftest import EXAMPLES

ABI = abi_mod.load()


def _params(types):
    return " ".join(f"(param {t})" for t in types)


def fused_like_module() -> tuple[bytes, dict]:
    """A module with the shape the linker expects from meld, derived from the ABI.

    Every hostcall is imported under its WIT name with its lowered signature and plugged into
    an import table, as wit-component does; one WASI stub (wall-clock now) traps; the callback
    `proxy-on-request-headers` reads a header through the table and returns status * 1000 +
    length of the value; `_initialize` and what only it calls must disappear.
    """
    calls = list(ABI.hostcalls.values())
    imports, elems, trampolines = [], [], []
    for slot, call in enumerate(calls):
        params, results = call.lowered_signature()
        res = f"(result {results[0]})" if results else ""
        imports.append(f'(import "{call.wit_name}" "" (func $imp{slot} {_params(params)} {res}))')
        elems.append(f"$imp{slot}")
        args = " ".join(f"(local.get {i})" for i in range(len(params)))
        trampolines.append(
            f"(func ${call.wit_name} {_params(params)} {res} {args} (i32.const {slot}) "
            f"(call_indirect $imports (type $t{slot})))")
    types = [f"(type $t{n} (func {_params(c.lowered_signature()[0])} "
             f"{'(result i32)' if c.lowered_signature()[1] else ''}))" for n, c in enumerate(calls)]
    wall = len(calls)
    elems.append("$wall_stub")
    get = next(n for n, c in enumerate(calls) if c.name == "proxy_get_header_map_value")
    wat = f"""(module
      {' '.join(types)}
      (type $twall (func (param i32)))
      {' '.join(imports)}
      (memory (export "memory") 2)
      (global $sp (mut i32) (i32.const 65536))
      (table $imports (export "$imports") {len(elems)} {len(elems)} funcref)
      (table $fns 2 funcref)
      (elem (table $imports) (i32.const 0) func {' '.join(elems)})
      (elem (table $fns) (i32.const 0) func $kept_by_table)
      (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
        (global.set $sp (i32.add (global.get $sp) (i32.const 64)))
        (i32.sub (global.get $sp) (i32.const 64)))
      (func $malloc (export "malloc") (param i32) (result i32)
        (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get 0)))
      (func $free (export "free") (param i32))
      (func $wall_stub (param i32) unreachable)
      (func $__wasm_import_wall_clock_now (param i32) (local.get 0) (i32.const {wall})
        (call_indirect $imports (type $twall)))
      {' '.join(trampolines)}
      (func $init_helper (result i32) (i32.const 7))
      (func $_initialize (export "_initialize") (drop (call $init_helper)))
      (func $kept_by_table (result i32) (i32.const 1))
      (func $on_request_headers (export "proxy-on-request-headers") (param i32 i32 i32) (result i32)
        (local $ret i32)
        (local.set $ret (i32.const 1024))
        (call $proxy-get-header-map-value (i32.const 0) (i32.const 2048) (i32.const 5) (local.get $ret))
        (call $__wasm_import_wall_clock_now (i32.const 4096))
        (i32.add (i32.mul (i32.load (local.get $ret)) (i32.const 1000))
                 (i32.load offset=8 (local.get $ret))))
      (func (export "cabi_post_proxy-on-request-headers") (param i32))
      (data (i32.const 2048) ":path")
    )"""
    wasm = wasmtime.wat2wasm(wat)
    realloc_index = len(calls)  # first function defined after the imports
    return wasm, {"version": 2, "imports": [{"module": c.wit_name, "realloc": {"func": realloc_index}}
                                            for c in calls if not c.direct]}


def link_small(callbacks=("proxy_on_request_headers",)):
    wasm, import_map = fused_like_module()
    return linker.link(wasm, import_map, list(callbacks))


def test_small_module_links_into_a_module_envoy_accepts():
    out, report = link_small()
    assert checks.problems(out) == []
    info = wasm_binary.read(out)
    assert {e.name for e in info.exports} == {
        "memory", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_request_headers"}
    modules = {(i.module, i.name) for i in info.imports}
    assert ("env", "proxy_log") in modules and ("env", "proxy_get_header_map_value") in modules
    assert ("wasi_snapshot_preview1", "clock_time_get") in modules
    assert all(m in ("env", "wasi_snapshot_preview1") for m, _ in modules)
    assert "proxy_log" in report.renamed and "proxy-get-header-map-value" in report.bridged
    assert "__wasm_import_wall_clock_now" in report.bridged


def test_unreachable_code_is_removed_and_table_targets_kept():
    out, report = link_small()
    text = linker.Module.from_binary(out).text()
    assert "$_initialize" not in text and "$init_helper" not in text and "$wall_stub" not in text
    assert "$kept_by_table" in text
    assert report.removed_functions >= 3


def test_adapter_passes_host_pointers_into_the_result_area():
    """Run the linked module: the getter's status and value reach the caller in one call."""
    out, _ = link_small()
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, out)
    linker_ = wasmtime.Linker(engine)
    memory = {}
    seen = {}

    def get_header(map_type, key_ptr, key_len, value_ptr_ptr, value_len_ptr):
        mem = memory["m"]
        seen["key"] = bytes(mem.read(store, key_ptr, key_ptr + key_len))
        value = b"/hello"
        ptr = memory["alloc"](store, len(value))
        mem.write(store, value, ptr)
        mem.write(store, ptr.to_bytes(4, "little"), value_ptr_ptr)
        mem.write(store, len(value).to_bytes(4, "little"), value_len_ptr)
        return 0

    def clock(clock_id, precision, out_ptr):
        memory["m"].write(store, (1_700_000_000 * 10**9 + 5).to_bytes(8, "little"), out_ptr)
        return 0

    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    for imp in module.imports:
        if imp.name == "proxy_get_header_map_value":
            linker_.define_func("env", imp.name, wasmtime.FuncType([i32] * 5, [i32]), get_header)
        elif imp.name == "clock_time_get":
            linker_.define_func(imp.module, imp.name, wasmtime.FuncType([i32, i64, i32], [i32]), clock)
        else:
            ty = imp.type
            linker_.define_func(imp.module, imp.name, ty, lambda *a: 1)  # any other call fails
    instance = linker_.instantiate(store, module)
    exports = instance.exports(store)
    memory["m"], memory["alloc"] = exports["memory"], exports["proxy_on_memory_allocate"]
    assert exports["proxy_on_request_headers"](store, 1, 0, 1) == 0 * 1000 + len(b"/hello")
    assert seen["key"] == b":path"
    # the wall clock bridge wrote {seconds, nanoseconds} where the stub would have trapped
    raw = memory["m"].read(store, 4096, 4108)
    assert int.from_bytes(raw[:8], "little") == 1_700_000_000
    assert int.from_bytes(raw[8:], "little") == 5


def test_only_requested_callbacks_are_exported():
    out, _ = link_small(callbacks=())
    assert {e.name for e in wasm_binary.read(out).exports} == {
        "memory", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate"}


def test_a_module_of_another_shape_is_refused_with_the_reason():
    wasm = wasmtime.wat2wasm('(module (memory (export "memory") 1))')
    with pytest.raises(linker.LinkError, match="expected one realloc"):
        linker.link(wasm, {"imports": []}, [])
    wasm, import_map = fused_like_module()
    text = linker.Module.from_binary(wasm).text().replace('(export "$imports" ', '(export "imports" ')
    with pytest.raises(linker.LinkError, match=r"no `\$imports` table"):
        linker.link(linker.Module.parse(text).to_binary(), import_map, [])


def test_real_plugin_build_bridges_the_expected_wasi_functions(pywasm_build):
    """Fails loudly when componentize-py or meld change the shape the linker relies on."""
    wasm = pywasm_build(EXAMPLES / "http_headers")
    info = wasm_binary.read(wasm.read_bytes())
    assert checks.problems(wasm.read_bytes()) == []
    wasi = {i.name for i in info.imports if i.module == "wasi_snapshot_preview1"}
    assert wasi == {"clock_time_get", "random_get", "fd_write", "environ_sizes_get", "environ_get"}
    exported = {e.name for e in info.exports}
    per_request = {n for n in exported if n.startswith("proxy_on_") and n not in (
        "proxy_on_memory_allocate", "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick",
        "proxy_on_queue_ready", "proxy_on_http_call_response") and "grpc" not in n}
    # per request, only what the SDK needs and what the plugin overrides
    assert per_request == {"proxy_on_context_create", "proxy_on_response_headers", "proxy_on_delete"}
    assert {"memory", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate"} <= exported
    names = dict(info.sections)
    assert "custom:component-type" not in names and not any("dylink" in n for n in names)
