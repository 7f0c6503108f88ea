"""json in the .wasm behaves as json natively: deep nesting raises, bytes in any UTF decode.

**Deep nesting.** Deeply nested JSON raises RecursionError in the .wasm instead of killing the VM.

CPython stops runaway C recursion by comparing stack addresses. Compiled to wasm, those
addresses are in the shadow stack in linear memory, while the calls themselves use the engine's
own call stack, which is much smaller: json's C scanner recurses once per nesting level and
exhausts V8's stack (about 2,000-3,000 levels in Envoy, fewer under wasmtime) before CPython
notices. That is a trap, and the VM is dead; a plugin configuration or a request body of
``[[[[...`` would be enough. So a document with more than ``MAX_C_BRACKETS`` brackets is decoded
by json's pure-Python scanner: its recursion is Python calls, which use no engine stack, and it
ends in RecursionError like any Python recursion. Other documents keep the C scanner; the test
costs two ``str.count`` per decode.

**Encodings.** ``json.loads(bytes)`` guesses UTF-8, -16 or -32 from the first bytes and decodes
with that codec. A codec is a module found on first use, and the .wasm has no files to find it
in: a configuration or a body starting ``b"{\\x00"`` raised LookupError (``unknown encoding:
utf-16-le``) instead of a JSON error. The codecs json may ask for are looked up at build time,
so they are in the snapshot.

Installed when a plugin is built (only if the plugin imported json); never in native runs,
where CPython's own guard works and every codec can be imported.
"""

from __future__ import annotations

import codecs
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # the runtime imports no typing
    from collections.abc import Callable
    from typing import Any

    Scanner = Callable[[str, int], tuple[Any, int]]

#: the codecs json.detect_encoding may name
JSON_CODECS = ("utf-16", "utf-16-be", "utf-16-le", "utf-32", "utf-32-be", "utf-32-le")
#: more brackets than this and a document might nest deeper than the engine's stack allows
MAX_C_BRACKETS = 512


def install() -> None:
    scanner = sys.modules.get("json.scanner")
    if scanner is None:
        return
    for name in JSON_CODECS:
        codecs.lookup(name)  # imported now, kept in the codec registry's cache
    if scanner.c_make_scanner is None:
        return
    fast_scanner, slow_scanner = scanner.c_make_scanner, scanner.py_make_scanner

    def make_scanner(context: object) -> Scanner:
        fast: Scanner = fast_scanner(context)
        slow: Scanner = slow_scanner(context)

        def scan_once(string: str, idx: int) -> tuple[Any, int]:
            if string.count("[", idx) + string.count("{", idx) > MAX_C_BRACKETS:
                return slow(string, idx)
            return fast(string, idx)

        return scan_once

    setattr(scanner, "make_scanner", make_scanner)  # noqa: B010 - json looks it up there
    json = sys.modules["json"]
    # the decoder json.loads uses by default was made with the C scanner when json was imported
    setattr(json, "_default_decoder", json.JSONDecoder())  # noqa: B010
