"""The runtime part of the SDK (compiled into every plugin) stays small: what it imports is in
every plugin's memory snapshot."""

from __future__ import annotations

import json
import subprocess
import sys

#: stdlib modules the runtime must not pull in on its own (a plugin may import them itself)
HEAVY = ("dataclasses", "inspect", "typing", "logging", "threading", "ast", "dis", "asyncio",
         "traceback", "tokenize", "re", "textwrap")  # traceback: see pywasm_sdk/_traceback.py


def test_the_runtime_imports_no_heavy_stdlib_module():
    code = ("import sys; import pywasm_sdk, pywasm_sdk._entry; loaded = sorted(sys.modules); "
            "import json; print(json.dumps(loaded))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-I", "-c", code], capture_output=True,
                                           text=True, check=True).stdout))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
