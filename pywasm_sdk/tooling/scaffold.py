"""``pywasm new``: a new plugin project that builds and whose tests pass as generated.

A project is a folder that ``pywasm build``, ``pywasm run`` and ``pytest`` all take as is:
``plugin.py`` (the plugin), ``test_<name>.py`` (mock-host tests, natively and as the built
``.wasm``) and ``README.md`` (how to work on it and ship it). The files come from the templates
under ``templates/http`` and ``templates/tcp`` (package data, shipped in the wheel), in which
``{{placeholder}}`` markers are replaced; nothing else is rewritten, so the templates read as
the code they produce.

The test file is named after the project, not ``test_plugin.py``: pytest imports test files
by base name, and two projects tested in one run would otherwise collide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources as importlib_resources
from pathlib import Path

__all__ = ["ScaffoldError", "Project", "create", "template_files"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class ScaffoldError(ValueError):
    """The project cannot be created (bad name, folder in the way); the message says why."""


@dataclass(frozen=True)
class Project:
    folder: Path
    kind: str  # "http" or "tcp"
    files: list[Path]


def template_files(kind: str) -> dict[str, str]:
    """Template name (without ``.tmpl``) -> text, for ``kind`` "http" or "tcp"."""
    root = importlib_resources.files("pywasm_sdk.tooling").joinpath("templates", kind)
    out = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".tmpl"):
            out[entry.name.removesuffix(".tmpl")] = entry.read_text(encoding="utf-8")
    if not out:
        raise ScaffoldError(f"pywasm-sdk is installed without its {kind} project templates; reinstall it")
    return out


def _fill(text: str, values: dict[str, str], template: str) -> str:
    def replace(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise ScaffoldError(f"template {template} uses an unknown placeholder {{{{{key}}}}}")
        return values[key]
    return _PLACEHOLDER.sub(replace, text)


def create(path: str | Path, *, tcp: bool = False) -> Project:
    """Create the project folder ``path``; its base name is the plugin's name.

    Refuses an existing non-empty folder (nothing is overwritten) and a name that could not be
    a Python module, an Envoy plugin name and a Kubernetes resource name at once.
    """
    folder = Path(path)
    name = folder.name
    if not _NAME.fullmatch(name):
        raise ScaffoldError(f"{name!r}: a plugin name starts with a letter and has only letters, digits, "
                            "'_' and '-' (at most 63 characters), e.g. header_filter")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ScaffoldError(f"{folder}: already exists and is not an empty folder; pick another name "
                            "or remove it")
    kind = "tcp" if tcp else "http"
    module = name.replace("-", "_").lower()
    values = {"name": name, "module": module, "k8s_name": module.replace("_", "-"),
              "folder": str(path).rstrip("/") or name}
    rendered = {}
    for template, text in template_files(kind).items():
        target = f"test_{module}.py" if template == "test_plugin.py" else template
        rendered[target] = _fill(text, values, template)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for target, text in rendered.items():
        file = folder / target
        file.write_text(text, encoding="utf-8")
        written.append(file)
    return Project(folder, kind, written)
