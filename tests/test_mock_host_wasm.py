"""The wasm runner on small hand-written modules: imports generated from the ABI, out-pointers and
allocation like Envoy, WASI, restricted phases, load errors, traps and the compiled-module cache."""

from __future__ import annotations

import struct

import pytest
import wasmtime

from pywasm_sdk._abi import LogLevel, Status
from pywasm_sdk.testing import (MockHost, ModuleCache, PluginLoadError, PluginTrap, UnsupportedByMockHost,
                                VmFailedError, WasmGuest)

REQUEST = [(":method", "GET"), (":path", "/"), (":authority", "a"), ("x-key", "value"), ("x-empty", "")]

#: memory[0..4) counts allocations; the heap starts at 4096
PRELUDE = """
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
"""


def wat(body: str, imports: str = "", prelude: str = PRELUDE) -> bytes:
    return wasmtime.wat2wasm(f"(module {imports} {prelude} {body})")


@pytest.fixture
def cache(tmp_path):
    return ModuleCache(tmp_path / "cache")


def run(module: bytes, cache: ModuleCache, **options) -> tuple[MockHost, WasmGuest]:
    guest = WasmGuest(module, cache=cache)
    return MockHost.from_guest(guest, **options), guest


def u32(memory, ptr: int) -> int:
    return struct.unpack("<I", memory.read(ptr, 4))[0]


def test_outputs_are_allocated_with_the_plugins_allocator(cache):
    module = wat("""
      (data (i32.const 64) "x-keyx-emptyx-none")
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (i32.store (i32.const 200) (call $get (i32.const 0) (i32.const 64) (i32.const 5) (i32.const 128) (i32.const 132)))
        (i32.store (i32.const 204) (call $get (i32.const 0) (i32.const 69) (i32.const 7) (i32.const 136) (i32.const 140)))
        (i32.store (i32.const 208) (call $get (i32.const 0) (i32.const 76) (i32.const 6) (i32.const 144) (i32.const 148)))
        ;; a key pointer outside the memory: INVALID_MEMORY_ACCESS, as in Envoy
        (i32.store (i32.const 212) (call $get (i32.const 0) (i32.const 0x7ffffff0) (i32.const 64) (i32.const 144) (i32.const 148)))
        (i32.const 0))
    """, imports='(import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))')
    host, guest = run(module, cache)
    host.http_stream().send_request_headers(REQUEST)
    memory = guest.memory
    assert [u32(memory, 200 + 4 * i) for i in range(4)] == [
        Status.OK, Status.OK, Status.NOT_FOUND, Status.INVALID_MEMORY_ACCESS]
    ptr, size = u32(memory, 128), u32(memory, 132)
    assert memory.read(ptr, size) == b"value" and ptr >= 4096
    assert (u32(memory, 136), u32(memory, 140)) == (0, 0)  # zero length: no allocation, ptr 0
    assert u32(memory, 0) == 1  # exactly one allocation


def test_malloc_is_preferred_to_proxy_on_memory_allocate(cache):
    module = wat("""
      (func (export "malloc") (param $n i32) (result i32)
        (i32.store (i32.const 4) (i32.add (i32.load (i32.const 4)) (i32.const 1)))
        (i32.const 8192))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $pairs (i32.const 0) (i32.const 128) (i32.const 132)))
    """, imports='(import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))')
    host, guest = run(module, cache)
    host.http_stream().send_request_headers(REQUEST)
    assert u32(guest.memory, 4) == 1 and u32(guest.memory, 0) == 0 and u32(guest.memory, 128) == 8192


def test_wasi_functions_answer_like_envoy(cache):
    module = wat("""
      (data (i32.const 64) "to stdout\\n")
      (data (i32.const 80) "to stderr")
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        ;; iovec at 96: (64, 10); fd 1 and fd 2, then a bad fd
        (i32.store (i32.const 96) (i32.const 64)) (i32.store (i32.const 100) (i32.const 10))
        (i32.store (i32.const 300) (call $fd_write (i32.const 1) (i32.const 96) (i32.const 1) (i32.const 104)))
        (i32.store (i32.const 96) (i32.const 80)) (i32.store (i32.const 100) (i32.const 9))
        (i32.store (i32.const 304) (call $fd_write (i32.const 2) (i32.const 96) (i32.const 1) (i32.const 104)))
        (i32.store (i32.const 308) (call $fd_write (i32.const 7) (i32.const 96) (i32.const 1) (i32.const 104)))
        (i32.store (i32.const 312) (call $clock (i32.const 0) (i64.const 1) (i32.const 400)))
        (i32.store (i32.const 316) (call $clock (i32.const 2) (i64.const 1) (i32.const 408)))
        (i32.store (i32.const 320) (call $random (i32.const 500) (i32.const 16)))
        (i32.store (i32.const 324) (call $random (i32.const 500) (i32.const 65537)))
        (i32.store (i32.const 328) (call $env_sizes (i32.const 600) (i32.const 604)))
        (i32.store (i32.const 332) (call $env_get (i32.const 608) (i32.const 640)))
        (i32.store (i32.const 336) (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0)
                                         (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)))
        (i32.const 1))
    """, imports="""
      (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
    """)
    host, guest = run(module, cache, env={"A": "1", "BB": "22"}, start_time_ns=123_456_789)
    memory = guest.memory
    assert [u32(memory, 300 + 4 * i) for i in range(10)] == [0, 0, 8, 0, 58, 0, 28, 0, 0, 44]
    assert [(r.level, r.message, r.source) for r in host.logs] == [
        (LogLevel.INFO, "to stdout", "stdout"), (LogLevel.ERROR, "to stderr", "stderr")]
    assert struct.unpack("<Q", memory.read(400, 8))[0] == 123_456_789
    assert (u32(memory, 600), u32(memory, 604)) == (2, 10)
    assert memory.read(u32(memory, 608), 4) == b"A=1\0" and memory.read(u32(memory, 612), 6) == b"BB=22\0"


def test_initialize_runs_restricted(cache):
    allowed = wat("""
      (data (i32.const 64) "starting")
      (func (export "_initialize") (drop (call $log (i32.const 2) (i32.const 64) (i32.const 8))))
    """, imports='(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))')
    host, _ = run(allowed, cache)
    assert [(r.message, r.context_id) for r in host.logs] == [("starting", 0)]
    forbidden = wat("""
      (func (export "_initialize") (drop (call $level (i32.const 64))))
    """, imports='(import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))')
    with pytest.raises(PluginTrap, match="restricted_callback: env.proxy_get_log_level was called during _initialize"):
        run(forbidden, cache)


def test_the_allocator_runs_restricted(cache):
    module = wat("""
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32)
        (drop (call $level (i32.const 0))) (i32.const 1024))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $pairs (i32.const 0) (i32.const 128) (i32.const 132)))
    """, imports="""
      (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
      (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
    """, prelude="")
    host, _ = run(module, cache)
    with pytest.raises(PluginTrap, match="during proxy_on_memory_allocate"):
        host.http_stream().send_request_headers(REQUEST)


def test_a_trap_names_the_callback_and_the_wasm_frames(cache):
    module = wat("""
      (func $deep_inside unreachable)
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $deep_inside) (i32.const 0))
    """)
    host, _ = run(module, cache)
    stream = host.http_stream()
    with pytest.raises(PluginTrap) as caught:
        stream.send_request_headers(REQUEST)
    assert caught.value.callback == "proxy_on_request_headers"
    assert "deep_inside" in caught.value.wasm_backtrace and "unreachable" in str(caught.value)
    with pytest.raises(VmFailedError):
        stream.complete()


def test_a_host_error_inside_a_hostcall_reaches_the_test(cache):
    module = wat("""
      (data (i32.const 64) "sign")
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $foreign (i32.const 64) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const 128) (i32.const 132)))
    """, imports='(import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))')
    host, _ = run(module, cache)
    with pytest.raises(UnsupportedByMockHost, match="'sign'"):
        host.http_stream().send_request_headers(REQUEST)
    assert isinstance(host.failed, UnsupportedByMockHost)


@pytest.mark.parametrize(("module", "message"), [
    (b"not wasm", "not a valid wasm module"),
    (wasmtime.wat2wasm('(module (memory (export "memory") 1))'), "does not export proxy_abi_version_0_2_1"),
    (wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_0")))'),
     "built for proxy-wasm ABI 0.2.0"),
    (wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))'),
     "exports no allocator"),
    (wat('(func (export "proxy_on_request_headers") (param i32 i32) (result i32) (i32.const 0))'),
     r"export proxy_on_request_headers has signature \(i32 i32\) -> \(i32\)"),
])
def test_modules_envoy_would_refuse(cache, module, message):
    with pytest.raises(PluginLoadError, match=message):
        run(module, cache)


def test_imports_the_host_does_not_provide_are_named(cache):
    module = wat("", imports="""
      (import "env" "proxy_get_configuration" (func (param i32 i32) (result i32)))
      (import "env" "proxy_log" (func (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
      (import "env" "table" (table 1 funcref))
    """)
    with pytest.raises(PluginLoadError) as caught:
        run(module, cache)
    text = str(caught.value)
    assert "import env.proxy_get_configuration (i32 i32) -> (i32): not provided by the host" in text
    assert "import env.proxy_log: signature (i32 i32) -> (i32), the host provides (i32 i32 i32) -> (i32)" in text
    assert "wasi_snapshot_preview1.sock_accept" in text and "imports a TableType" in text


def test_compiled_modules_are_cached_on_disk(tmp_path):
    module = wat('(func (export "proxy_on_tick") (param i32))')
    first = ModuleCache(tmp_path)
    first.load(module)
    assert first.last_source == "compiled"
    first.load(module)
    assert first.last_source == "memory"
    second = ModuleCache(tmp_path)  # a later test session
    second.load(module)
    assert second.last_source == "disk"
    [cached] = tmp_path.glob("wasmtime-*/*.cwasm")
    cached.write_bytes(b"corrupt")
    third = ModuleCache(tmp_path)
    third.load(module)
    assert third.last_source == "compiled" and cached.read_bytes() != b"corrupt"
    nowhere = ModuleCache(None)
    nowhere.load(module)
    assert nowhere.last_source == "compiled"


def test_from_wasm_takes_bytes_or_a_path(cache, tmp_path):
    module = wat('(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))')
    path = tmp_path / "plugin.wasm"
    path.write_bytes(module)
    for source in (module, path, str(path)):
        with MockHost.from_wasm(source, cache=cache) as host:
            assert host.kind == "wasm" and host.started and not host.configured
    with pytest.raises(PluginLoadError, match="cannot read the module"):
        MockHost.from_wasm(tmp_path / "missing.wasm", cache=cache)


def test_wasm_hosts_are_independent(cache):
    module = wat("""
      (global $n (mut i32) (i32.const 0))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n))
    """)
    one, _ = run(module, cache)
    two, _ = run(module, cache)
    assert [one.http_stream().send_request_headers(REQUEST) for _ in range(3)] == [1, 2, 3]
    assert two.http_stream().send_request_headers(REQUEST) == 1
