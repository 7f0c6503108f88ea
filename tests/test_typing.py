"""Type checkers see the SDK (PEP 561 ``py.typed``): ``mypy --strict`` passes on the public API
(``pywasm_sdk`` and ``pywasm_sdk.testing``), on every example plugin and on the plugins that
``pywasm new`` writes, as a plugin author would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pywasm_sdk.tooling import scaffold

from .conftest import EXAMPLES, REPO


def mypy(tmp_path: Path, *targets: str | Path) -> str:
    """mypy's complaints ("" when it passes), run where a plugin author would: the SDK is an
    installed package whose types are used."""
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config),
                           "--cache-dir", str(tmp_path.parent / "mypy-cache"), *map(str, targets)],
                          capture_output=True, text=True, cwd=tmp_path)
    return proc.stdout + proc.stderr if proc.returncode else ""


def test_the_package_is_typed():
    assert (REPO / "pywasm_sdk" / "py.typed").is_file()


def test_public_api_passes_mypy_strict(tmp_path):
    # every file named: mypy does not report errors in modules it only follows into an installed
    # (or editable) package, which is what pywasm_sdk is in the test environment
    sdk = REPO / "pywasm_sdk"
    problems = mypy(tmp_path, *sorted(sdk.glob("*.py")), sdk / "testing")
    assert not problems, problems


@pytest.mark.parametrize("plugin", sorted(EXAMPLES.glob("*/plugin.py")), ids=lambda p: p.parent.name)
def test_example_passes_mypy_strict(tmp_path, plugin):
    problems = mypy(tmp_path, plugin)
    assert not problems, problems


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_pywasm_new_plugin_passes_mypy_strict(tmp_path, kind):
    project = scaffold.create(tmp_path / f"typed_{kind}", tcp=kind == "tcp")
    problems = mypy(tmp_path, project.folder / "plugin.py")
    assert not problems, problems


def test_mypy_finds_a_wrong_use_of_the_api(tmp_path):
    """The check can fail: a header map's value is ``str | None``, not ``str``."""
    plugin = tmp_path / "wrong.py"
    plugin.write_text("from pywasm_sdk import HttpContext\n\n\nclass F(HttpContext):\n"
                      "    def on_request_headers(self, num_headers: int, end_of_stream: bool) -> None:\n"
                      "        path: str = self.request_headers.get(':path')\n")
    problems = mypy(tmp_path, plugin)
    assert 'Incompatible types in assignment (expression has type "str | None", variable has type "str")' in problems
