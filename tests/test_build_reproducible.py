"""Builds you can pin: a build leaves the plugin's folder as it was, and the same sources built
elsewhere give the same bytes (docs/build.md, "Reproducible builds")."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from pywasm_sdk.tooling.build import build, preflight, resolve_plugin

from .conftest import EXAMPLES, PLUGINS


def tree(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: its kind, content and modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        content = path.read_bytes() if path.is_file() else None
        found[path.relative_to(folder).as_posix()] = (path.is_dir(), content, stat.st_mtime_ns)
    found["."] = (True, None, folder.stat().st_mtime_ns)
    return found


def test_the_check_writes_nothing_into_the_plugin_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    folder = shutil.copytree(PLUGINS / "folder_plugin", tmp_path / "folder_plugin")
    before = tree(folder)
    assert preflight(resolve_plugin(folder))["ok"]
    assert tree(folder) == before


def test_a_build_leaves_the_plugin_folder_as_it_was(pywasm_build, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    folder = shutil.copytree(EXAMPLES / "http_headers", tmp_path / "elsewhere" / "http_headers")
    before = tree(folder)
    build(folder, tmp_path / "plugin.wasm")
    assert tree(folder) == before
