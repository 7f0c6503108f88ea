"""The binary-level pieces of the linker: module model, instruction walker, snapshot tools."""

from __future__ import annotations

import struct

import pytest
import wasmtime

from pywasm_sdk.tooling import snapshot, wasm_code
from pywasm_sdk.tooling.wasm_module import Data, Module, function_names


def module(body: str, extra: str = "") -> Module:
    return Module.parse(wasmtime.wat2wasm(f"(module (memory 1) (global $g i32 (i32.const 4096)) "
                                          f"(global $t i32 (i32.const 7)) {extra} {body})"))


def test_a_module_survives_a_round_trip():
    wasm = wasmtime.wat2wasm("""(module
      (type $t (func (param i32) (result i32)))
      (import "env" "f" (func $f (type $t)))
      (memory (export "memory") 1)
      (table 3 funcref)
      (global $g (mut i32) (i32.const 5))
      (elem (i32.const 1) func $f $h)
      (func $h (export "h") (type $t) (call $f (local.get 0)))
      (data (i32.const 16) "hello"))""")
    mod = Module.parse(wasm)
    again = Module.parse(mod.encode())
    assert again.types == mod.types and again.codes == mod.codes and again.datas == mod.datas
    assert [(e.table, e.offset_value, e.items) for e in again.elems] == [(0, 1, [0, 1])]
    wasmtime.Module(wasmtime.Engine(), mod.encode())
    assert function_names(mod) == {0: "f", 1: "h"}


def test_null_element_items_are_written_as_expressions():
    mod = module('(table 2 funcref) (func $a) (elem (i32.const 0) func $a $a)')
    mod.elems[0].items[1] = None
    again = Module.parse(mod.encode())
    assert again.elems[0].items == [0, None]
    wasmtime.Module(wasmtime.Engine(), mod.encode())


def test_facts_find_calls_and_global_relative_constants():
    mod = module("""
      (func $callee)
      (func $f (local i32)
        (call $callee)
        (drop (i32.add (global.get $g) (i32.const 12)))      ;; base + K
        (drop (i32.add (i32.const 20) (global.get $g)))      ;; K + base
        (drop (i32.add (local.tee 0 (global.get $g)) (i32.const 8)))  ;; kept on the stack
        (drop (i32.add (local.get 0) (i32.const 44)))        ;; through a local alias
        (local.set 0 (i32.const 99))                         ;; no longer an alias
        (drop (i32.add (local.get 0) (i32.const 55))))""")
    facts = wasm_code.facts(mod.codes[1])
    assert facts.calls == [0]
    assert {(0, 12), (0, 20), (0, 8)} <= set(facts.global_offsets)
    assert facts.derived_offsets == [(0, 44)]


def test_rewrite_renumbers_only_what_changed():
    mod = module('(func $a) (func $b (call $a) (call $a) (drop (global.get $t)))')
    body = mod.codes[1]
    assert wasm_code.rewrite(body, funcs=lambda i: i) == body
    renumbered = wasm_code.rewrite(body, funcs=lambda i: i + 300, globals_=lambda i: 0)
    assert wasm_code.facts(renumbered).calls == [300, 300]
    assert wasm_code.facts(renumbered).global_offsets == [(0, 0)]


def test_an_unknown_opcode_is_named():
    with pytest.raises(wasm_code.CodeError, match="opcode 0xfd"):
        wasm_code.facts(b"\x00\xfd\x0c" + bytes(16) + b"\x0b")


def test_trampolines_and_relocation_functions_are_recognised():
    mod = module("""
      (type $t (func (param i32)))
      (table 4 funcref)
      (func $tramp (param i32) (local.get 0) (i32.const 3) (call_indirect (type $t)))
      (func $relocs
        (i32.store (i32.add (i32.const 16) (global.get $g)) (i32.add (global.get $t) (i32.const 2)))
        (i32.store offset=4 (i32.const 100) (global.get $g)))""")
    assert wasm_code.trampoline_slot(mod.codes[0]) == (3, 0)
    assert wasm_code.trampoline_slot(mod.codes[1]) is None
    stores = wasm_code.straight_line_stores(mod.codes[1], mod.global_initial)
    assert stores == [(4096 + 16, 9), (104, 4096)]
    with pytest.raises(wasm_code.CodeError, match="relocation function"):
        wasm_code.straight_line_stores(mod.codes[0], mod.global_initial)


def _chunk(size: int) -> bytes:
    return struct.pack("<II", 0, size | 1)  # prev_foot, head (previous chunk in use)


def test_free_heap_chunks_are_found_and_zeroed_keeping_the_allocators_fields():
    heap = 0x100 - 8  # the first chunk's payload is 16-aligned
    data = bytearray(0x100)
    used = bytearray(_chunk(0x40) + b"U" * 0x38)
    free = bytearray(_chunk(0x80) + b"F" * 0x78)
    after = bytearray(_chunk(0x40) + b"A" * 0x38)
    struct.pack_into("<I", after, 4, 0x40)  # PINUSE clear: the chunk before is free
    top = bytearray(_chunk(0x40) + bytes(0x38))
    memory = snapshot.Memory([Data(0, bytes(data[:heap]) + used + free + after + top)])
    chunks = snapshot.free_chunks(memory, heap, heap + 0x140 + 16)
    assert chunks == [(heap + 0x40, 0x80), (heap + 0x100, 0x40)]
    snapshot.zero_free(memory, chunks)
    freed = memory.bytes[heap + 0x40:heap + 0xC0]
    # a small chunk (< 256 bytes) keeps head and list links; stale bytes after them (a time, a
    # path) would make two builds differ for nothing
    assert freed[:16] == free[:16] and not any(freed[16:])
    assert memory.bytes[heap + 0xC0:heap + 0x100] == after


def test_a_large_free_chunk_keeps_its_tree_links():
    heap = 0x100 - 8
    used = _chunk(0x40) + b"U" * 0x38
    large = _chunk(0x140) + b"L" * 0x138  # 320 bytes: a tree-bin chunk in dlmalloc
    after = bytearray(_chunk(0x40) + b"A" * 0x38)
    struct.pack_into("<I", after, 4, 0x40)
    top = _chunk(0x40) + bytes(0x38)
    memory = snapshot.Memory([Data(0, bytes(heap) + used + large + bytes(after) + top)])
    chunks = snapshot.free_chunks(memory, heap, heap + 0x200 + 16)
    assert chunks[0] == (heap + 0x40, 0x140)
    snapshot.zero_free(memory, chunks)
    freed = memory.bytes[heap + 0x40:heap + 0x180]
    assert freed[:32] == large[:32] and not any(freed[32:])


def test_a_heap_that_does_not_walk_is_left_alone():
    memory = snapshot.Memory([Data(0, bytes(64) + b"\xff" * 64)])
    assert snapshot.free_chunks(memory, 64, 65536) == []
    top_beyond_memory = snapshot.Memory([Data(0, bytes(56) + _chunk(0x10000) + b"x")])
    assert snapshot.free_chunks(top_beyond_memory, 56, 0x1000) == []


def test_data_is_packed_around_long_zero_runs():
    memory = snapshot.Memory([Data(10, b"ab" + bytes(8) + b"cd" + bytes(100) + b"ef")])
    segments = snapshot.pack(memory, gap=64)
    assert [(d.offset, d.data) for d in segments] == [(10, b"ab" + bytes(8) + b"cd"), (122, b"ef")]
