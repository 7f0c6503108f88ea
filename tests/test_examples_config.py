"""The configurations shipped with the examples: Envoy accepts them, Istio's parse."""

from __future__ import annotations

import pytest
import yaml

from pywasm_sdk.tooling import envoy as E

from .conftest import EXAMPLES


@pytest.mark.envoy
def test_http_headers_envoy_config_is_valid(pywasm_build, tmp_path):
    wasm = pywasm_build(EXAMPLES / "http_headers")
    text = (EXAMPLES / "http_headers" / "envoy.yaml").read_text()
    assert "/tmp/http_headers.wasm" in text
    config = tmp_path / "envoy.yaml"
    config.write_text(text.replace("/tmp/http_headers.wasm", str(wasm)))
    E.validate_config(config)  # compiles the module and runs on_vm_start/on_configure


def test_http_headers_istio_manifests_parse():
    folder = EXAMPLES / "http_headers" / "istio"
    plugin = yaml.safe_load((folder / "wasmplugin.yaml").read_text())
    assert plugin["kind"] == "WasmPlugin" and plugin["spec"]["type"] == "HTTP"
    assert plugin["spec"]["pluginConfig"] == {"x-frame-options": "DENY", "x-served-by": "python"}
    envoy_filter = yaml.safe_load((folder / "envoyfilter.yaml").read_text())
    patch = envoy_filter["spec"]["configPatches"][0]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["patch"]["operation"] == "INSERT_BEFORE"
    assert patch["patch"]["value"]["typed_config"]["config"]["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"


@pytest.mark.envoy
def test_tcp_egress_envoy_config_is_valid(pywasm_build, tmp_path):
    wasm = pywasm_build(EXAMPLES / "tcp_egress")
    text = (EXAMPLES / "tcp_egress" / "envoy.yaml").read_text()
    config = tmp_path / "envoy.yaml"
    config.write_text(text.replace("/tmp/tcp_egress.wasm", str(wasm)))
    E.validate_config(config)


def test_tcp_egress_istio_manifests_parse():
    folder = EXAMPLES / "tcp_egress" / "istio"
    plugin = yaml.safe_load((folder / "wasmplugin.yaml").read_text())
    assert plugin["kind"] == "WasmPlugin" and plugin["spec"]["type"] == "NETWORK"
    assert len(plugin["spec"]["pluginConfig"]["egress_clusters"]) == 2
    patch = yaml.safe_load((folder / "envoyfilter.yaml").read_text())["spec"]["configPatches"][0]
    assert patch["applyTo"] == "NETWORK_FILTER"
    assert patch["match"]["context"] == "SIDECAR_OUTBOUND"
    assert patch["match"]["listener"]["filterChain"]["filter"]["name"] == "envoy.filters.network.tcp_proxy"
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
