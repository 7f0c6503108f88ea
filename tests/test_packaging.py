"""A non-editable install carries everything the tooling needs (WIT/WAT/ABI files)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from .conftest import REPO


def test_wheel_contains_package_data_and_the_cli(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True)
    (wheel,) = tmp_path.glob("pywasm_sdk-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("pywasm_sdk/_data/abi/proxy_wasm.yaml", "pywasm_sdk/_data/build/wasi_bridge.wat",
                     "pywasm_sdk/_abi.py", "pywasm_sdk/tooling/linker.py",
                     "pywasm_sdk/py.typed"):  # PEP 561: type checkers use the SDK's hints
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pywasm = pywasm_sdk.tooling.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith(("tests/", "examples/")) for n in names)


def test_installed_layout_finds_its_data(tmp_path):
    """Unpack the wheel and use it from there, as site-packages would."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO)],
                   check=True)
    (wheel,) = tmp_path.glob("pywasm_sdk-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from pywasm_sdk.tooling import resources, abi; "
            "print(resources.abi_dir()); print(len(abi.load().hostcalls))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert out.splitlines()[0] == str(site / "pywasm_sdk" / "_data" / "abi")
    assert int(out.splitlines()[1]) >= 39
