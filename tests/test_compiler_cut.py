"""CPython's compiler in a built plugin: kept when the plugin compiles source text where the
build sees it, removed otherwise, and then every way into it (compile, exec and eval of a
string) raises ImportError naming --keep-compiler instead of trapping the VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from pywasm_sdk.testing import MockHost
from pywasm_sdk.tooling import envoy as E

PLUGINS = Path(__file__).parent / "plugins" / "compiler"
REQUEST = [(":method", "GET"), (":path", "/"), (":authority", "a"), (":scheme", "http")]


def _request_header(wasm: Path, name: str) -> str | None:
    with MockHost.from_wasm(wasm) as host:
        stream = host.http_stream()
        stream.send_request_headers(REQUEST)
        return stream.request_header(name)


def test_a_plugin_that_evaluates_source_keeps_the_compiler(pywasm_build):
    assert _request_header(pywasm_build(PLUGINS / "plugin_eval.py"), "x-eval") == "42"


def test_without_the_compiler_source_text_raises_import_error(pywasm_build):
    wasm = pywasm_build(PLUGINS / "plugin_hidden.py")
    assert _request_header(wasm, "x-compiler") == (
        "compile:ImportError:True,exec:ImportError:True,eval:ImportError:True")


def test_objects_the_compiler_made_before_the_snapshot_survive_a_full_collection(pywasm_build):
    """The AST node types exist in the snapshot's heap, so the garbage collector calls their
    slots even though the compiler is gone (a trap here once took the VM down)."""
    assert _request_header(pywasm_build(PLUGINS / "plugin_gc.py"), "x-gc") == "True,True"


@pytest.mark.envoy
def test_a_full_collection_leaves_the_vm_alive_in_envoy(pywasm_build):
    """The same plugin in Envoy's V8: the collection over the AST types runs, and the VM serves
    the next request too."""
    wasm = pywasm_build(PLUGINS / "plugin_gc.py")
    with E.EchoUpstream() as upstream:
        port = E.free_port()
        config = E.http_bootstrap(wasm_path=wasm, listener_port=port, upstream=upstream.address,
                                  admin_port=E.free_port())
        with E.Envoy(config):
            for _ in range(2):
                status, _headers, _body = E.http_request(port, "/")
                assert status == 200 and upstream.requests[-1]["headers"]["x-gc"] == "True,True"
