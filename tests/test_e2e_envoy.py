"""End-to-end: plugins built by `pywasm build`, served by the real Envoy on 127.0.0.1."""

from __future__ import annotations

import json
import re

import pytest

from pywasm_sdk.tooling import envoy as E

from .conftest import EXAMPLES, PLUGINS

pytestmark = pytest.mark.envoy


def serve(wasm, plugin_config, upstream):
    config = E.http_bootstrap(wasm_path=wasm, plugin_config=plugin_config,
                              listener_port=E.free_port(), upstream=upstream.address,
                              admin_port=E.free_port())
    return E.Envoy(config), config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]


@pytest.fixture(scope="module")
def upstream():
    with E.EchoUpstream() as server:
        yield server


@pytest.mark.parametrize("config", [
    "x-frame-options=DENY\nx-served-by=python",
    json.dumps({"x-frame-options": "DENY", "x-served-by": "python"}),
], ids=["lines", "json"])
def test_http_headers_adds_configured_headers(pywasm_build, upstream, config):
    wasm = pywasm_build(EXAMPLES / "http_headers")
    envoy, port = serve(wasm, config, upstream)
    with envoy:
        status, headers, body = E.http_request(port, "/some/path?x=1")
        assert status == 200
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-served-by"] == "python"
        assert json.loads(body)["path"] == "/some/path?x=1"  # the upstream answered
        envoy.wait_for_log(r"http_headers: adding 2 response header\(s\): x-frame-options, x-served-by")


@pytest.mark.parametrize("config,message", [
    ("x-ok=1\nno equals sign here", r"line 2: 'no equals sign here' has no '='"),
    ('["x-a", "1"]', r"JSON configuration must be an object of strings"),
    ("bad name=1", r"'bad name' is not a valid header name"),
])
def test_http_headers_bad_configuration_is_rejected(pywasm_build, upstream, config, message):
    wasm = pywasm_build(EXAMPLES / "http_headers")
    envoy, _ = serve(wasm, config, upstream)
    with pytest.raises(E.EnvoyError) as failed:
        envoy.start()
    log = failed.value.args[0] if failed.value.args else ""
    text = envoy.log_text() + str(log)
    assert re.search(r"on_configure: configuration rejected: " + message, text), text[-3000:]
    assert "Unable to create Wasm plugin" in text
    assert not envoy.running


def test_exception_in_callback_is_logged_and_request_still_answered(pywasm_build, upstream):
    wasm = pywasm_build(PLUGINS / "probe.py")
    envoy, port = serve(wasm, "", upstream)
    with envoy:
        status, headers, _ = E.http_request(port, "/raise")
        assert status == 200 and headers["x-probe"] == "1"
        match = envoy.wait_for_log(r"on_request_headers raised \(context \d+\):")
        tail = envoy.log_text()[match.start():]
        assert "Traceback (most recent call last):" in tail
        # the traceback names the plugin's file (relative to its folder) and shows its source line
        assert re.search(r'File "probe\.py", line \d+, in explode', tail)
        assert 'raise RuntimeError(f"deliberate failure for {path}")' in tail
        assert "RuntimeError: deliberate failure for /raise" in tail
        # the VM is still alive: later requests run the plugin normally
        status, headers, _ = E.http_request(port, "/after")
        assert status == 200 and headers["x-probe"] == "1"
        envoy.wait_for_log(r"probe: request /after")
        # the same exception again and again: counted, not logged again (summarized per minute)
        for _ in range(20):
            assert E.http_request(port, "/raise")[0] == 200
        assert E.http_request(port, "/last")[0] == 200
        envoy.wait_for_log(r"probe: request /last")
        assert envoy.log_text().count("on_request_headers raised") == 1


def test_print_and_logging_reach_the_proxy_log(pywasm_build, upstream):
    wasm = pywasm_build(PLUGINS / "probe.py")
    envoy, port = serve(wasm, "", upstream)
    with envoy:
        assert E.http_request(port, "/print")[0] == 200
        assert E.http_request(port, "/logging")[0] == 200
        envoy.wait_for_log(r"\[info\]\[wasm\].*probe: hello from print\(\)")
        envoy.wait_for_log(r"\[warning\]\[wasm\].*probe: probe: hello from logging")


def test_two_plugin_configurations_share_one_vm_and_each_stream_finds_its_root(pywasm_build, upstream):
    """Two wasm filters with the same code and vm_id: Envoy runs both plugins in one VM, two root
    contexts. The bridge does not enter Python when a stream is created; with more than one root
    it must tell Python which root the stream belongs to before its first callback."""
    wasm = pywasm_build(EXAMPLES / "http_headers")
    config = E.http_bootstrap(wasm_path=wasm, plugin_config="x-first=1", listener_port=E.free_port(),
                              upstream=upstream.address, admin_port=E.free_port())
    listener = config["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    second = json.loads(json.dumps(filters[0]))
    second["typed_config"]["config"]["configuration"] = E.any_value("x-second=2")
    filters.insert(1, second)
    port = listener["address"]["socket_address"]["port_value"]
    with E.Envoy(config) as envoy:
        envoy.wait_for_log(r"adding 1 response header\(s\): x-first")
        envoy.wait_for_log(r"adding 1 response header\(s\): x-second")
        for n in range(60):  # past the bridge's batch of deleted streams (32), twice
            status, headers, _ = E.http_request(port, f"/{n}")
            assert (status, headers.get("x-first"), headers.get("x-second")) == (200, "1", "2"), headers
        assert " raised " not in envoy.log_text() and "never created" not in envoy.log_text()
