"""The pytest plugin (fixtures mock_host, host_mode, pywasm_build), tested with pytester."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
# Installed, pywasm-sdk enables its plugin through the pytest11 entry point (what plugin authors
# get); naming it again with -p would register it twice.
_INSTALLED = any(ep.value == "pywasm_sdk.testing.pytest_plugin"
                 for ep in metadata.entry_points(group="pytest11"))
PLUGIN_ARGS = (() if _INSTALLED else ("-p", "pywasm_sdk.testing.pytest_plugin")) + ("-p", "no:cacheprovider")


@pytest.fixture(autouse=True)
def importable_sdk(monkeypatch):
    """The inner pytest runs in a subprocess: let it import pywasm_sdk from this checkout."""
    import os

    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))

SCRIPTED_CALLOUT = '''
from pathlib import Path
import pytest

PLUGIN = Path(r"{plugin}")
REQUEST = [(":method", "GET"), (":path", "/auth"), (":authority", "a")]


def test_answered(mock_host):
    host = mock_host(PLUGIN, clusters=["auth"])
    host.http_stream().send_request_headers(REQUEST)
    host.http_calls[0].respond(200)


def test_unanswered(mock_host):
    host = mock_host(PLUGIN, clusters=["auth"])
    host.http_stream().send_request_headers(REQUEST)


@pytest.mark.mock_host(allow_pending_calls=True)
def test_unanswered_allowed(mock_host):
    host = mock_host(PLUGIN, clusters=["auth"])
    host.http_stream().send_request_headers(REQUEST)


def test_hosts_are_closed_after_each_test(mock_host):
    # a native host from an earlier test would make this fail with "still open"
    mock_host(PLUGIN)
    mock_host(PLUGIN)  # the fixture closes this test's earlier native host itself
'''


def test_mock_host_fixture_closes_hosts_and_checks_pending_calls(pytester):
    plugin = REPO / "tests" / "plugins" / "mock_host_probe"
    pytester.makepyfile(SCRIPTED_CALLOUT.format(plugin=plugin))
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-q")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_unanswered*",
        "*the plugin dispatched calls the test never answered:*",
        "*HttpCall(token=4, cluster='auth'*",
        "*@pytest.mark.mock_host(allow_pending_calls=True)*",
    ])


BUILD_AND_MODES = '''
import types
import wasmtime
import pywasm_sdk.tooling.build_cache as cache_module

BUILDS = []
MODULE = wasmtime.wat2wasm("""(module (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))""")


def fake_build(plugin, output, **kwargs):
    BUILDS.append(plugin)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(MODULE)
    return types.SimpleNamespace(callbacks=[])


cache_module.build = fake_build  # the real build takes ~20 s; the fixture's caching is what counts


def test_modes(mock_host, host_mode, tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text("from pywasm_sdk import register\\nregister()\\n")
    host = mock_host(plugin, mode=host_mode)
    assert host.kind == host_mode and host.configured


def test_built_once(pywasm_build, tmp_path):
    plugin = tmp_path / "plugin.py"
    # (not test_modes's source: the cache would give its build, wherever the file is)
    plugin.write_text("from pywasm_sdk import register\\nregister()  # built once\\n")
    first, second = pywasm_build(plugin), pywasm_build(plugin)
    assert first == second and first.suffix == ".wasm" and BUILDS.count(plugin.resolve()) == 1


def test_bad_mode(mock_host):
    import pytest
    with pytest.raises(ValueError, match="mode must be one of"):
        mock_host("x.py", mode="v8")
'''


@pytest.fixture
def private_build_cache(monkeypatch, tmp_path):
    """The inner sessions' fake builds go to a cache of their own, never the user's."""
    monkeypatch.setenv("PYWASM_CACHE_DIR", str(tmp_path / "cache"))


def test_host_mode_and_pywasm_build(pytester, private_build_cache):
    pytester.makepyfile(BUILD_AND_MODES)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_modes?native? PASSED*", "*test_modes?wasm? PASSED*"])


def test_the_marker_is_registered(pytester):
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.mock_host(allow_pending_calls=False)*"])


RELATIVE = BUILD_AND_MODES.split("def test_modes")[0] + '''
from pathlib import Path
import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def built(pywasm_build):
    return pywasm_build("plugin.py")  # relative to this file, from a module-scoped fixture


def test_native_host_finds_the_plugin_beside_the_test(mock_host):
    assert mock_host("plugin.py").configured


def test_wasm_host_builds_the_plugin_beside_the_test(mock_host, built):
    assert mock_host("plugin.py", mode="wasm").kind == "wasm"
    assert mock_host(built, mode="wasm").kind == "wasm"
    assert BUILDS == [HERE / "plugin.py"]


def test_relative_wasm_path(mock_host, built):
    (HERE / "copy.wasm").write_bytes(built.read_bytes())
    assert mock_host("copy.wasm").kind == "wasm"


def test_a_missing_plugin_is_looked_for_beside_the_test(mock_host):
    with pytest.raises(Exception, match=str(HERE / "elsewhere.py")):
        mock_host("elsewhere.py")
'''


def test_relative_plugin_paths_resolve_against_the_test_file(pytester, private_build_cache):
    suite = pytester.mkdir("suite")
    (suite / "test_relative.py").write_text(RELATIVE)
    (suite / "plugin.py").write_text("from pywasm_sdk import HttpContext, register\n"
                                     "register(http=HttpContext)\n")
    # started from the folder above: a path relative to the working directory would not be found
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-q", "suite")
    result.assert_outcomes(passed=4)
