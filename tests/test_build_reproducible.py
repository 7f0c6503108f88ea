"""Builds you can pin: a build leaves the plugin's folder as it was, and the same sources built
elsewhere give the same module (docs/build.md, "Reproducible builds").

One fresh build of a copy of examples/http_headers in another folder, compared with the
session's build of the original (the build cache's, which the key says is the same build).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from pywasm_sdk.tooling.build import build, preflight, resolve_plugin

from .conftest import EXAMPLES, PLUGINS

#: wasm section ids -> names, for messages
_NAMES = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
          7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "datacount"}


def tree(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: its kind, content and modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        content = path.read_bytes() if path.is_file() else None
        found[path.relative_to(folder).as_posix()] = (path.is_dir(), content, stat.st_mtime_ns)
    found["."] = (True, None, folder.stat().st_mtime_ns)
    return found


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def sections(module: bytes) -> dict[str, bytes]:
    """Section name (custom sections by their own name) -> payload."""
    found, pos = {}, 8
    while pos < len(module):
        size, start = _leb(module, pos + 1)
        body = module[start:start + size]
        name = _NAMES.get(module[pos], str(module[pos]))
        if module[pos] == 0:
            length, at = _leb(body, 0)
            name = "custom " + body[at:at + length].decode()
        found[name] = body
        pos = start + size
    return found


def types(body: bytes) -> list[bytes]:
    """The entries of a type section (function types only, as our modules have)."""
    count, pos = _leb(body, 0)
    entries = []
    for _ in range(count):
        start = pos
        assert body[pos] == 0x60, "a non-function type"
        pos += 1
        for _ in range(2):  # params, results: one byte per value type
            n, pos = _leb(body, pos)
            pos += n
        entries.append(body[start:pos])
    return entries


def test_the_check_writes_nothing_into_the_plugin_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    folder = shutil.copytree(PLUGINS / "folder_plugin", tmp_path / "folder_plugin")
    before = tree(folder)
    assert preflight(resolve_plugin(folder))["ok"]
    assert tree(folder) == before


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> tuple[Path, dict, dict, bytes]:
    """(the copy's folder, its tree before and after a fresh build, the module built)."""
    tmp = tmp_path_factory.mktemp("elsewhere")
    folder = shutil.copytree(EXAMPLES / "http_headers", tmp / "src" / "http_headers")
    before = tree(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        build(folder, tmp / "plugin.wasm")
    return folder, before, tree(folder), (tmp / "plugin.wasm").read_bytes()


def test_a_build_leaves_the_plugin_folder_as_it_was(elsewhere):
    _, before, after, _ = elsewhere
    assert after == before


def test_the_same_sources_built_elsewhere_give_the_same_module(elsewhere, pywasm_build):
    folder, _, _, fresh = elsewhere
    session = pywasm_build(EXAMPLES / "http_headers").read_bytes()
    # where the sources and the build were must not be in the module
    for module in (fresh, session):
        for place in (folder, EXAMPLES / "http_headers", EXAMPLES.parent, Path.home()):
            if len(place.parts) > 2:  # "/" or "/root" could be in any module by chance
                assert str(place).encode() not in module, f"{place} is in a built module"
        assert b"pywasm-build-" not in module  # the build's temporary folder
    if hashlib.sha256(fresh).digest() == hashlib.sha256(session).digest():
        return
    ours, theirs = sections(fresh), sections(session)
    assert list(ours) == list(theirs)
    # what componentize-py's randomness can reach (docs/build.md): the order of function types,
    # the type indices in imports and functions, the function table's layout, the heap's
    # snapshot and so how many pages it grew to. Everything else is ours and must be the same.
    allowed = {"type", "import", "function", "global", "element", "data", "datacount", "memory"}
    differ = sorted(name for name in ours if ours[name] != theirs[name])
    assert set(differ) <= allowed, f"sections that differ: {differ}"
    assert sorted(types(ours["type"])) == sorted(types(theirs["type"]))  # the same types, reordered
    pytest.xfail(f"two builds differ in {', '.join(differ)}: componentize-py 0.25.1 pre-initialises "
                 "with an unseeded string hash and HashMap-ordered WASI stubs (docs/build.md, "
                 "'Reproducible builds')")
