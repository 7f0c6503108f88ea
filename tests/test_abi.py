"""The ABI is written down once: everything derived from abi/proxy_wasm.yaml must agree with it."""

from __future__ import annotations

from importlib import metadata

import pytest

from pywasm_sdk import _abi, _dispatch
from pywasm_sdk.tooling import abi as abi_mod
from pywasm_sdk.tooling import linker, resources
from pywasm_sdk.tooling.wat import Module

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


def test_hostcalls_without_outputs_lower_directly():
    for call in ABI.hostcalls.values():
        assert call.direct == (not call.returns), call.name


def test_result_layout_follows_canonical_alignment():
    layout = {p.name: off for p, off in abi_mod.result_layout(ABI.hostcalls["proxy_get_shared_data"])}
    assert layout == {"value": 4, "cas": 12}
    layout = {p.name: off for p, off in abi_mod.result_layout(ABI.hostcalls["proxy_get_metric"])}
    assert layout == {"value": 8}  # a u64 is 8-aligned after the u32 status


def test_callback_signatures():
    assert ABI.callbacks["proxy_on_request_headers"].core_signature() == (["i32"] * 3, ["i32"])
    assert ABI.callbacks["proxy_on_log"].core_signature() == (["i32"], [])


def test_wit_world_mentions_every_hostcall_and_callback():
    world = abi_mod.wit_world()
    for call in ABI.hostcalls.values():
        assert f"import {call.wit_name}: func(" in world
    for cb in ABI.callbacks.values():
        assert f"export {cb.wit_name}: func(" in world


def test_adapter_modules_are_valid_wat():
    Module.from_text(linker.hostcall_adapters(ABI))
    Module.from_text(linker.module_exports(ABI, list(ABI.callbacks)))
    Module.from_text((resources.build_dir() / "wasi_bridge.wat").read_text())


@pytest.mark.parametrize("distribution,version", [("componentize-py", "0.25.1"), ("meld-cli", "0.65.1")])
def test_pinned_tool_versions(distribution, version):
    # The linker depends on the shape of these tools' output: upgrading them needs a review.
    assert metadata.version(distribution) == version
