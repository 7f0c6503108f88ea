"""json in the .wasm (pywasm_sdk._json_guard, installed at build time): deeply nested JSON raises
RecursionError instead of trapping the VM, shallow JSON decodes as before, and bytes in UTF-16
or UTF-32 decode as they do natively instead of raising LookupError."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pywasm_sdk.testing import MockHost

from .conftest import EXAMPLES

GUARDED = """
import json
from pywasm_sdk import _json_guard
_json_guard.install()
documents = [{"a": [1, 2.5, None, True, "x" * 10]}, [[[]]], "é\\u00e9", [[[[{"k": []}]]]] * 200]
deep_but_fine = [[]]
for _ in range(300):  # 602 brackets: the pure-Python scanner, well within the recursion limit
    deep_but_fine = [deep_but_fine]
for doc in documents + [deep_but_fine]:
    assert json.loads(json.dumps(doc)) == doc
for deep in ("[" * 5000 + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000):
    try:
        json.loads(deep)
    except RecursionError:
        pass
    else:
        raise AssertionError("5000 levels decoded")
try:
    json.loads("[" + "[]," * 600 + "]")  # many brackets, shallow, one comma too many
except json.JSONDecodeError as exc:
    assert exc.msg == "Expecting value", exc
else:
    raise AssertionError("malformed JSON decoded")
print("ok")
"""


def test_guard_keeps_shallow_json_and_turns_deep_json_into_recursion_error():
    done = subprocess.run([sys.executable, "-c", GUARDED], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("shape", ["[", '{"a":'])
def test_deeply_nested_configuration_is_rejected_not_a_trap(pywasm_build, shape):
    close = "]" if shape == "[" else "}"
    config = shape * 100_000 + "1" + close * 100_000
    with MockHost.from_wasm(pywasm_build(EXAMPLES / "http_headers"), plugin_config=config) as host:
        assert host.started and not host.configured
        [line] = host.logs.find("configuration rejected")
        assert line.message.endswith("the JSON is nested too deeply")


def test_json_bytes_in_utf16_decode_in_the_wasm_as_natively(pywasm_build):
    """json.loads(bytes) picks the codec from the first bytes; the .wasm has the UTF codecs."""
    config = '{"egress_clusters": ["a"]}'.encode("utf-16-le")
    with MockHost.from_wasm(pywasm_build(EXAMPLES / "tcp_egress"), plugin_config=config) as host:
        assert host.configured, host.logs.text()
    with MockHost.from_wasm(pywasm_build(EXAMPLES / "tcp_egress"), plugin_config=b"i\x00abc") as host:
        [line] = host.logs.find("configuration rejected")
        assert "the configuration is not JSON" in line.message
