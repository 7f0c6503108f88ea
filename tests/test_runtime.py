"""The runtime part of the SDK (compiled into every plugin) stays small: what it imports is in
every plugin's memory snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pywasm_sdk

#: stdlib modules the runtime must not pull in on its own (a plugin may import them itself)
HEAVY = ("dataclasses", "inspect", "typing", "logging", "threading", "ast", "dis", "asyncio",
         "traceback", "tokenize", "re", "textwrap")  # traceback: see pywasm_sdk/_traceback.py


def test_the_runtime_imports_no_heavy_stdlib_module():
    # -S: no site, so no .pth file of the environment (a CI runner's may import re or typing)
    # stands in for the runtime; the SDK's own directory is put on the path by hand instead.
    where = str(Path(pywasm_sdk.__file__).resolve().parent.parent)
    code = (f"import sys; sys.path.insert(0, {where!r}); import pywasm_sdk, pywasm_sdk._entry; "
            "loaded = sorted(sys.modules); import json; print(json.dumps(loaded))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-I", "-S", "-c", code],
                                           capture_output=True, text=True, check=True).stdout))
    assert "pywasm_sdk._entry" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
