"""Where the non-Python files the tooling needs live: ``abi/`` and ``build/``.

In a source checkout they are the top-level folders of the repository; an installed wheel carries
them as ``pywasm_sdk/_data/abi`` and ``pywasm_sdk/_data/build`` (see pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def _data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"pywasm-sdk is installed without its {name}/ folder (looked in {_PACKAGE / '_data'} and "
        f"{_PACKAGE.parent}); reinstall it with `pip install pywasm-sdk`"
    )


def abi_dir() -> Path:
    return _data_dir("abi")


def build_dir() -> Path:
    return _data_dir("build")


def sdk_source_root() -> Path:
    """The folder that contains the ``pywasm_sdk`` package (put on componentize-py's path)."""
    return _PACKAGE.parent
