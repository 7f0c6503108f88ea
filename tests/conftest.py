"""Shared fixtures: every plugin a test session needs is built once and reused.

The builds come from the pytest plugin pywasm-sdk ships (``pywasm_build``, enabled by its
``pytest11`` entry point): the same fixture plugin authors use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="session")
def built(pywasm_build):
    """``built(path)`` -> the .wasm of a plugin, built at most once per test session."""
    return pywasm_build
