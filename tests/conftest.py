"""Shared fixtures: every plugin a test session needs is built once and reused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PLUGINS = Path(__file__).resolve().parent / "plugins"


class Builds:
    """Builds plugins on first use and hands out the same .wasm for the rest of the session."""

    def __init__(self, out_dir: Path) -> None:
        self._out = out_dir
        self._built: dict[Path, Path] = {}
        self.results: dict[Path, object] = {}

    def __call__(self, plugin: str | os.PathLike[str]) -> Path:
        from pywasm_sdk.tooling.build import build

        source = Path(plugin).resolve()
        if source not in self._built:
            name = source.stem if source.suffix == ".py" else source.name
            target = self._out / f"{name}-{len(self._built)}.wasm"
            self.results[source] = build(source, target)
            self._built[source] = target
        return self._built[source]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    """``built(path)`` -> the .wasm of a plugin, built at most once per test session."""
    return Builds(tmp_path_factory.mktemp("wasm"))
