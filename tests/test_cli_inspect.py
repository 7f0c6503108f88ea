"""`pywasm inspect`: ABI, callbacks, imports (provided by Envoy or not), sizes; text and JSON."""

from __future__ import annotations

import json

import pytest
import wasmtime

from pywasm_sdk.tooling import wasm_file
from pywasm_sdk.tooling.cli import main

from .conftest import EXAMPLES
from .test_cli_helpers import write_module


def inspect_json(capsys, path) -> tuple[int, dict]:
    status = main(["inspect", str(path), "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_json_report_of_an_http_module(tmp_path, capsys):
    path = write_module(tmp_path, "http")
    status, report = inspect_json(capsys, path)
    assert status == 0
    assert report["abi_version"] == "0.2.1" and report["abi_versions"] == ["0.2.1"]
    assert report["filter_type"] == "http"
    assert report["loads_in_envoy"] is True and report["problems"] == []
    assert report["size"] == path.stat().st_size
    assert "proxy_on_request_headers" in report["callbacks"]
    exports = {e["name"]: e for e in report["exports"]}
    assert exports["memory"]["kind"] == "memory"
    assert exports["proxy_on_request_headers"]["signature"] == "(i32, i32, i32) -> (i32)"
    imports = {f"{i['module']}.{i['name']}": i for i in report["imports"]}
    assert imports["env.proxy_log"]["provided_by_envoy"] is True
    assert imports["wasi_snapshot_preview1.fd_write"]["signature"] == "(i32, i32, i32, i32) -> (i32)"
    sections = {s["name"]: s["size"] for s in report["sections"]}
    assert {"type", "import", "function", "memory", "export", "code"} <= set(sections)
    # the sections plus their headers make up the whole file
    assert sum(sections.values()) < report["size"] < sum(sections.values()) + 8 + 6 * len(sections)


def test_tcp_module_is_a_network_filter(tmp_path, capsys):
    status, report = inspect_json(capsys, write_module(tmp_path, "tcp"))
    assert status == 0 and report["filter_type"] == "network"


def test_module_with_both_kinds_of_callbacks_is_ambiguous(tmp_path, capsys):
    status, report = inspect_json(capsys, write_module(tmp_path, "both"))
    assert status == 0 and report["filter_type"] == "ambiguous"
    status = main(["inspect", str(tmp_path / "both.wasm")])
    assert "choose with --type" in capsys.readouterr().out


def test_imports_envoy_does_not_provide_are_named(tmp_path, capsys):
    path = write_module(tmp_path, "bad")
    status, report = inspect_json(capsys, path)
    assert status == 1 and report["loads_in_envoy"] is False
    imports = {f"{i['module']}.{i['name']}": i for i in report["imports"]}
    assert imports["env.not_a_hostcall"]["provided_by_envoy"] is False
    assert "not provided by Envoy" in imports["env.not_a_hostcall"]["problem"]
    assert imports["env.proxy_log"]["provided_by_envoy"] is False  # wrong signature
    assert "signature" in imports["env.proxy_log"]["problem"]
    assert any("proxy_on_memory_allocate" in p for p in report["problems"])

    assert main(["inspect", str(path)]) == 1
    text = capsys.readouterr().out
    assert "would NOT load it" in text
    assert "env.not_a_hostcall" in text and "NOT PROVIDED" in text


def test_module_without_abi_marker(tmp_path, capsys):
    path = tmp_path / "nomarker.wasm"
    path.write_bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1))'))
    status, report = inspect_json(capsys, path)
    assert status == 1 and report["abi_version"] is None and report["abi_versions"] == []
    assert main(["inspect", str(path)]) == 1
    assert "none declared" in capsys.readouterr().out


def test_text_report_lists_everything(tmp_path, capsys):
    path = write_module(tmp_path, "http")
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{path}: ")
    assert "ABI:          proxy-wasm 0.2.1 (export proxy_abi_version_0_2_1)" in text
    assert "filter type:  HTTP filter" in text
    assert "Envoy:        loads it" in text
    for heading in ("exports (", "imports (", "size by section:"):
        assert heading in text
    assert "env.proxy_log" in text and " ok" in text


def test_a_built_plugin(pywasm_build, capsys):
    """The real thing: a built example reports ABI 0.2.1, loads, and is mostly code and data."""
    wasm = pywasm_build(EXAMPLES / "tcp_egress")
    status, report = inspect_json(capsys, wasm)
    assert status == 0
    assert report["abi_version"] == "0.2.1" and report["filter_type"] == "network"
    assert all(i["provided_by_envoy"] for i in report["imports"])
    assert "proxy_on_new_connection" in report["callbacks"]
    assert "proxy_on_request_headers" not in report["callbacks"]
    sections = {s["name"]: s["size"] for s in report["sections"]}
    assert sections["code"] > 1_000_000 and sections["data"] > 1_000_000
    assert report["sha256"] == wasm_file.load(wasm).sha256


def test_filter_type_rules():
    f = wasm_file.filter_type
    assert f(["proxy_on_response_headers", "proxy_on_tick"]) == "http"
    assert f(["proxy_on_new_connection"]) == "network"
    assert f(["proxy_on_vm_start"]) == "http"  # root callbacks only: Envoy's/Istio's default
    assert f(["proxy_on_new_connection", "proxy_on_request_headers"], "tcp") == "network"
    with pytest.raises(wasm_file.ModuleFileError, match="--type http or --type network"):
        f(["proxy_on_new_connection", "proxy_on_request_headers"])
    with pytest.raises(wasm_file.ModuleFileError, match="expected http or network"):
        f([], "udp")


def test_callback_sets_are_callbacks_of_the_abi():
    from pywasm_sdk.tooling import abi

    callbacks = set(abi.load().callbacks)
    assert wasm_file.HTTP_CALLBACKS <= callbacks and wasm_file.TCP_CALLBACKS <= callbacks
