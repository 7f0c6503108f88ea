"""`pywasm new`: the generated projects build, their own tests pass, and they run in Envoy.

The generated tests run in a child pytest, exactly as an author runs them. They build their
plugin once (``pywasm build --cache``) into a cache private to this test session, which the
later checks here reuse: each project is built once.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling.cli import main
from pywasm_sdk.tooling.scaffold import template_files

from .conftest import REPO
from .test_cli_helpers import RunningCli, cli_env, run_cli

try:
    import pywasm_sdk.testing  # noqa: F401  (the generated tests need the mock host)
    MOCK_HOST_MISSING = None
except ImportError as exc:  # pragma: no cover - only while the mock host is not there
    MOCK_HOST_MISSING = f"pywasm_sdk.testing cannot be imported: {exc}"

HTTP, TCP = "shop_headers", "egress-probe"


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> tuple[Path, Path]:
    """(folder with both projects, the build cache they share)."""
    root = tmp_path_factory.mktemp("projects")
    assert main(["new", str(root / HTTP)]) == 0
    assert main(["new", str(root / TCP), "--tcp"]) == 0
    return root, root / "build-cache"


def test_files_of_a_new_project(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["new", "my-filter"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "created my-filter/ (HTTP filter):"
    assert "python -m pytest my-filter" in out and "pywasm run my-filter" in out
    names = sorted(p.name for p in (tmp_path / "my-filter").iterdir())
    assert names == ["README.md", "plugin.py", "test_my_filter.py"]
    for path in (tmp_path / "my-filter").iterdir():
        text = path.read_text()
        assert "{{" not in text and "}}" not in text, f"unfilled placeholder in {path.name}"
    readme = (tmp_path / "my-filter" / "README.md").read_text()
    assert readme.startswith("# my-filter\n")
    assert "python -m pytest my-filter" in readme and "pywasm run my-filter" in readme
    assert "oci://REGISTRY/my-filter:0.1.0" in readme
    compile((tmp_path / "my-filter" / "plugin.py").read_text(), "plugin.py", "exec")


def test_new_refuses_to_overwrite_and_bad_names(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main(["new", str(tmp_path / "taken")]) == 1
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    for bad in ("1st", "has space", "dots.not.ok", "x" * 64):
        assert main(["new", str(tmp_path / bad)]) == 1
        assert "a plugin name starts with a letter" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["new", str(tmp_path / "empty")]) == 0  # an empty folder is fine


def test_templates_are_package_data():
    """The templates ship inside the package (hatchling includes every file under pywasm_sdk/)."""
    for kind in ("http", "tcp"):
        assert set(template_files(kind)) == {"README.md", "plugin.py", "test_plugin.py"}


@pytest.fixture(scope="module")
def generated_tests(projects) -> subprocess.CompletedProcess[str]:
    """The generated projects' own tests, run once by a child pytest (which builds each project)."""
    if MOCK_HOST_MISSING:
        pytest.skip(MOCK_HOST_MISSING)
    root, cache = projects
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(root / HTTP), str(root / TCP), "-v", "-p", "no:cacheprovider"],
        cwd=root, capture_output=True, text=True, timeout=900, env=cli_env(PYWASM_CACHE_DIR=str(cache)))


def test_generated_projects_build_and_their_tests_pass(projects, generated_tests):
    root, cache = projects
    out = generated_tests.stdout + generated_tests.stderr
    assert generated_tests.returncode == 0, out
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"failed|error|skipped", summary), summary
    for project, module in ((HTTP, HTTP), (TCP, TCP.replace("-", "_"))):
        for mode in ("native", "wasm"):
            assert re.search(rf"{project}/test_{module}\.py::\w+\[{mode}\S*\] PASSED", out), (project, mode)
    assert len(list((cache / "builds").glob("*.wasm"))) == 2  # one build per project


def test_generated_projects_are_the_filters_they_say(projects, generated_tests, tmp_path):
    """After the generated tests: `pywasm build --cache` reuses their build; inspect agrees."""
    root, cache = projects
    for project, kind in ((HTTP, "HTTP filter"), (TCP, "network (TCP) filter")):
        wasm = tmp_path / f"{project}.wasm"
        built = run_cli("build", root / project, "-o", wasm, "--cache", PYWASM_CACHE_DIR=str(cache))
        assert built.returncode == 0, built.stderr
        assert "sources unchanged: using the cached build" in built.stderr
        inspected = run_cli("inspect", wasm)
        assert inspected.returncode == 0, inspected.stdout + inspected.stderr
        assert f"filter type:  {kind}" in inspected.stdout


@pytest.mark.envoy
def test_generated_tcp_project_runs_as_its_readme_says(projects, generated_tests):
    root, cache = projects
    port = E.free_port()
    run = RunningCli("run", root / TCP, "--port", port, PYWASM_CACHE_DIR=str(cache))
    try:
        run.wait_for("plugin log")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            banner = b""
            while not banner.endswith(b"\n"):
                banner += client.recv(1024)
            client.sendall(b"hello\n")
            assert client.recv(1024) == b"hello\n"
        run.wait_for(rf"^  \[info\] {TCP}: observing$")
        run.wait_for(r"^  \[info\] connection from 127\.0\.0\.1:\d+$")
        run.wait_for(r"^  \[info\] connection closed after 6 byte\(s\) from the client$")
    finally:
        assert run.stop(signal.SIGTERM) == 0
    assert any("sources unchanged: using the cached build" in line for line in run.stderr)


def test_new_works_from_an_installed_wheel(tmp_path):
    """The templates are package data: `pywasm new` works from the wheel, away from this checkout."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("pywasm_sdk-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import sys; from pywasm_sdk.tooling.cli import main; sys.exit(main(['new', 'from_wheel', '--tcp']))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from_wheel" / "plugin.py").read_text().startswith('"""from_wheel: an Envoy/Istio network')
