"""The guide's code runs: every complete plugin in docs/*.md imports and registers.

A complete plugin is a fenced block whose info string is exactly ``python plugin``. Each one is
written to a file and put through the build's native check (``preflight``: the plugin is
imported in a child process with no host, as the build would), so a snippet with a syntax
error, a wrong import, a hostcall at import time or no ``register(...)`` fails here, named by
page and block. The shorter ``python`` snippets must at least parse.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pywasm_sdk.tooling.build import BuildError, preflight, resolve_plugin

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: the pages about one area each: every one must carry a complete plugin
AREA_PAGES = ("http", "tcp", "properties", "callouts", "shared-state", "metrics")

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)


def _blocks(page: Path) -> list[tuple[str, str, int]]:
    """(info string, code, line of the opening fence) of each fenced block of a page."""
    text = page.read_text(encoding="utf-8")
    return [(m["info"].strip(), m["code"], text.count("\n", 0, m.start()) + 1)
            for m in _FENCE.finditer(text)]


def _params(kind: str) -> list:
    params = []
    for page in sorted(DOCS.glob("*.md")):
        found = [(code, line) for info, code, line in _blocks(page) if info == kind]
        params += [pytest.param(page, index, code, line, id=f"{page.stem}-{index}")
                   for index, (code, line) in enumerate(found)]
    return params


@pytest.mark.parametrize("page,index,code,line", _params("python plugin"))
def test_plugin_block_imports_and_registers(tmp_path, page, index, code, line):
    module = tmp_path / f"doc_{page.stem.replace('-', '_')}_{index}.py"
    module.write_text(code, encoding="utf-8")
    try:
        found = preflight(resolve_plugin(module))
    except BuildError as exc:
        pytest.fail(f"docs/{page.name}:{line}: plugin block {index} fails the build's check:\n{exc}")
    assert found["callbacks"], f"docs/{page.name}:{line}: the plugin uses no callback"


@pytest.mark.parametrize("page,index,code,line", _params("python"))
def test_snippet_parses(page, index, code, line):
    try:
        ast.parse(code)
    except SyntaxError as exc:
        pytest.fail(f"docs/{page.name}:{line + (exc.lineno or 0)}: snippet {index} does not parse: {exc.msg}")


@pytest.mark.parametrize("stem", AREA_PAGES)
def test_area_page_has_a_complete_plugin(stem):
    page = DOCS / f"{stem}.md"
    assert page.is_file(), f"docs/{stem}.md is missing"
    assert any(info == "python plugin" for info, _, _ in _blocks(page)), (
        f"docs/{stem}.md has no ```python plugin block (a complete, runnable plugin)")


def test_python_fences_use_known_info_strings():
    """A typo such as ```python-plugin would silently skip the check above."""
    for page in sorted(DOCS.glob("*.md")):
        for info, _, line in _blocks(page):
            if info.startswith(("py", "Py")):
                assert info in ("python", "python plugin"), (
                    f"docs/{page.name}:{line}: fence info {info!r}: use 'python' or 'python plugin'")
