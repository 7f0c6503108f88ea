"""bench/soak.py runs as its README says (a smoke run: two small blocks per Envoy), every answer is
the designed one, and the JSON has the figures the report is made of."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.envoy
def test_soak_smoke_run(tmp_path, pywasm_build):
    pywasm_build(REPO / "examples" / "http_headers")  # the build the script finds in the cache
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, "bench/soak.py", "--example", "http_headers", "--requests", "2000",
                          "--block", "1000", "--warmup", "0", "--generator", "python", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "load: the Python generator" in run.stderr
    assert "RSS/100k" in run.stdout and "http_headers" in run.stdout
    [example] = json.loads(out.read_text())["examples"]
    for envoy in ("plugin", "no_wasm"):
        figures = example[envoy]
        assert (figures["requests"], figures["unexpected"], figures["errors"]) == (2000, 0, 0)
        assert len(figures["samples"]) == 4 and figures["samples"][-1]["requests"] == 2000
        assert figures["rss_kb_end"] > 0 and "rss_growth_kb_per_100k" in figures
    assert example["plugin"]["rss_kb_end"] > example["no_wasm"]["rss_kb_end"]  # the VM is in there
