"""CPython's compiler in a built plugin: kept when the plugin compiles source text where the
build sees it, removed otherwise, and then every way into it (compile, exec and eval of a
string) raises ImportError naming --keep-compiler instead of trapping the VM."""

from __future__ import annotations

from pathlib import Path

from pywasm_sdk.testing import MockHost

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
