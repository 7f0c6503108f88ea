"""`pywasm build` says what is wrong and where, and never leaves a half-written output."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pywasm_sdk.tooling.build import BuildError, build, preflight, resolve_plugin
from pywasm_sdk.tooling.cli import main

from .conftest import PLUGINS


def plugin_file(tmp_path: Path, source: str, name: str = "plugin.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def failing_build(tmp_path: Path, source: str) -> str:
    path = plugin_file(tmp_path, source)
    out = tmp_path / "out.wasm"
    out.write_bytes(b"previous build")
    with pytest.raises(BuildError) as failed:
        build(path, out)
    assert out.read_bytes() == b"previous build", "a failed build must not touch the output"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.wasm")] == []
    return str(failed.value)


def test_syntax_error_names_file_and_line(tmp_path):
    message = failing_build(tmp_path, """\
        from pywasm_sdk import register

        def broken(:
            pass
        """)
    assert f"{tmp_path / 'plugin.py'}:3: syntax error" in message


def test_plugin_without_registration(tmp_path):
    message = failing_build(tmp_path, """\
        from pywasm_sdk import HttpContext

        class Nothing(HttpContext):
            pass
        """)
    assert "registers no root context" in message and "register(" in message


def test_unresolvable_import_names_the_module(tmp_path):
    message = failing_build(tmp_path, """\
        import definitely_not_a_module_xyz
        """)
    assert f"{tmp_path / 'plugin.py'}:1" in message
    assert "cannot import module 'definitely_not_a_module_xyz'" in message


def test_hostcall_at_import_time_explains_the_rule(tmp_path):
    message = failing_build(tmp_path, """\
        from pywasm_sdk import log, register

        log.info("hello at import time")
        register()
        """)
    assert f"{tmp_path / 'plugin.py'}:3" in message
    assert "hostcall at import time" in message and "on_configure" in message


def test_exception_at_import_shows_the_traceback(tmp_path):
    message = failing_build(tmp_path, """\
        CONFIG = {}["missing"]
        """)
    assert f"{tmp_path / 'plugin.py'}:1" in message and "KeyError: 'missing'" in message


def test_module_missing_inside_the_proxy_is_reported_with_the_real_path(tmp_path):
    """An import that fails only inside the proxy (the native check passes): componentize-py fails.
    (Modules the proxy's CPython lacks are refused by the check already: tests/test_packages.py.)"""
    message = failing_build(tmp_path, """\
        import sys
        if sys.platform == "wasi":
            import only_missing_in_the_proxy
        from pywasm_sdk import register
        register()
        """)
    assert "componentize-py failed" in message
    assert "No module named 'only_missing_in_the_proxy'" in message
    assert "CPython inside the proxy has no module" in message
    assert str(tmp_path) in message and '"/1/' not in message


@pytest.mark.parametrize("make,expected", [
    (lambda d: d / "missing.py", "no such file or folder"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "a .py file or a folder"),
    (lambda d: d, "must contain plugin.py"),
    (lambda d: (d / "my-plugin.py").write_text("x") and d / "my-plugin.py", "module name"),
])
def test_bad_plugin_paths(tmp_path, make, expected):
    with pytest.raises(BuildError, match=expected):
        resolve_plugin(make(tmp_path))


def test_folder_plugin_brings_its_helper_modules():
    result = preflight(resolve_plugin(PLUGINS / "folder_plugin"))
    assert result["modules"] == ["helpers", "plugin"]
    assert "proxy_on_response_headers" in result["callbacks"]


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    path = plugin_file(tmp_path, "import nope_nope\n")
    assert main(["build", str(path), "-o", str(tmp_path / "x.wasm"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pywasm build: error: ") and "nope_nope" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.wasm").exists()


def test_async_callback_that_must_answer_at_once_is_refused(tmp_path):
    message = failing_build(tmp_path, """\
        from pywasm_sdk import RootContext, register

        class Root(RootContext):
            async def on_configure(self, plugin_config):
                return True

        register(Root)
        """)
    assert "Root.on_configure cannot be async" in message


def test_async_callback_that_nothing_could_resume_is_refused(tmp_path):
    """Envoy cannot continue upstream data after a pause (continue_stream(UPSTREAM) is
    unimplemented), so an awaiting on_upstream_data would hold the connection forever."""
    message = failing_build(tmp_path, """\
        from pywasm_sdk import StreamContext, register

        class Tcp(StreamContext):
            async def on_upstream_data(self, data_size, end_of_stream):
                await self.http_call("x")

        register(stream=Tcp)
        """)
    assert "Tcp.on_upstream_data cannot be async" in message and "on_downstream_data" in message


def test_preflight_reports_only_the_plugins_own_modules(tmp_path):
    """A virtual environment inside the project folder holds packages that are not the plugin's."""
    site = tmp_path / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    (site / "venvdep.py").write_text("VALUE = 1\n")
    plugin_file(tmp_path, f"""\
        import sys
        sys.path.append({str(site)!r})
        import venvdep
        from pywasm_sdk import register
        register()
        """)
    assert preflight(resolve_plugin(tmp_path / "plugin.py"))["modules"] == ["plugin"]
