"""`pywasm bench` and the scripts in bench/, end to end in a real Envoy, in a very short mode.

These check that the measurement runs and reports every documented figure; they assert no
timing (the figures of a run this short, on a shared machine, mean nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pywasm_sdk.tooling.bench.modules import SIZE_PARTS
from pywasm_sdk.tooling.cli import main

from .conftest import EXAMPLES, REPO
from .test_cli_helpers import cli_env, run_cli, write_module

SHORT = ["--requests", "40", "--block", "20", "--warmup", "10", "--starts", "1"]
LATENCY = {"p50_us", "p90_us", "p99_us", "mean_us", "cpu_us", "cpu_ticks_us"}
START = {"ready_seconds", "cpu_seconds", "rss_kb", "hwm_kb"}


def assert_documented_fields(r: dict, filter_type: str) -> None:
    """The fields docs/workflow.md lists for `pywasm bench --json`, with sane values."""
    assert r["filter_type"] == filter_type
    assert r["unit"] == ("connection" if filter_type == "network" else "request")
    for key in ("plugin", "wasm", "config", "date", "machine", "python", "envoy_version",
                "loadavg_before", "loadavg_after", "seconds_total"):
        assert key in r, key
    assert r["concurrency"] == 1
    sizes = r["module"]["sections"]
    assert r["module"]["size"] == sizes["total"] == sum(sizes[p] for p in SIZE_PARTS)
    for side in ("plugin", "no_wasm"):
        start = r["start"][side]
        assert START <= set(start) and len(start["starts"]) == 1
        assert start["ready_seconds"] > 0 and start["rss_kb"] > 0
    assert set(r["start"]["added"]) == START
    load = r["load"]
    assert load["count"] == 40 and load["block"] == 20 and load["warmup"] == 10
    for side in ("filter", "baseline", "added"):
        assert set(load[side]) == LATENCY, side
    for side in ("filter", "baseline"):
        assert load[side]["cpu_us"] > 0 and load[side]["p50_us"] > 0
    assert load["added_p50_block_pairs_us"]["pairs"] == 2
    assert set(load["noise"]) == {"other_processes_cores", "steal_cores", "seconds"}
    assert r["rss_after_load_kb"] > 0


@pytest.mark.envoy
def test_bench_an_http_plugin_built_through_the_cache(pywasm_build):
    pywasm_build(EXAMPLES / "http_headers")  # the session's build: the command finds it in the cache
    done = run_cli("bench", EXAMPLES / "http_headers", "--config", "x-bench=1", *SHORT, "--json",
                   timeout=300)
    assert done.returncode == 0, done.stderr
    assert "using the cached build" in done.stderr
    assert "starting Envoy: plugin" in done.stderr and "measuring: 2 blocks of 20" in done.stderr
    r = json.loads(done.stdout)  # --json alone: JSON on stdout instead of the table
    assert_documented_fields(r, "http")
    assert r["plugin"] == str(EXAMPLES / "http_headers") and r["config"] == "x-bench=1"
    assert r["check"] == {"filter_status": 200, "baseline_status": 200,
                          "headers_added": ["x-bench"], "headers_removed": []}
    assert r["load"]["statuses"] == {"filter": {"200": 50}, "baseline": {"200": 50}}


@pytest.mark.envoy
def test_bench_a_tcp_filter_per_connection_with_a_table_and_a_json_file(tmp_path):
    module = write_module(tmp_path, "tcp")  # a pass-through network filter: starts in ms
    out = tmp_path / "bench.json"
    done = run_cli("bench", module, *SHORT, "--json", out, "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # -q: no progress
    table = done.stdout
    assert "(network (TCP) filter)" in table
    for line in ("start to ready (s)", "RSS after start (MB)", "latency p50 (us)",
                 "latency p99 (us)", "Envoy CPU/connection (us)", "added p50 per block pair",
                 "check: the line came back through both listeners", "noise: "):
        assert line in table, line
    r = json.loads(out.read_text())
    assert_documented_fields(r, "network")
    assert r["check"] == {"filter_echoed": True, "baseline_echoed": True}
    assert r["load"]["incomplete_echoes"] == {"filter": 0, "baseline": 0}


@pytest.mark.parametrize("argv, expected", [
    (["--requests", "0"], "--requests 0: must be at least 1"),
    (["--starts", "0"], "--starts 0: must be at least 1"),
    (["--warmup", "-1"], "--warmup -1: must not be negative"),
    (["--path", "bench"], "--path 'bench': a request path starts with /"),
    (["--header", "no-colon"], "--header 'no-colon': expected NAME: VALUE"),
    (["--config", "@/nonexistent/c.txt"], "--config @/nonexistent/c.txt: no such file"),
])
def test_bench_option_errors_are_one_line(argv, expected, tmp_path, capsys):
    module = write_module(tmp_path, "http")
    assert main(["bench", str(module), *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"pywasm bench: error: {expected}" in err


def test_bench_a_module_with_both_filter_kinds_asks_which(tmp_path, capsys):
    assert main(["bench", str(write_module(tmp_path, "both"))]) == 1
    assert "--type http or --type network" in capsys.readouterr().err


# -- the repository's benchmark scripts, on the hand-written reference (fast to start) ----------

def run_script(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), stdin=subprocess.DEVNULL)


@pytest.mark.envoy
def test_http_headers_benchmark_runs_on_the_reference_filter(tmp_path):
    out = tmp_path / "hh.json"
    done = run_script("bench/http_headers.py", "--wasm", "bench/reference_filter.wat", *SHORT,
                      "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "check: status 200 with the plugin, 200 without; response headers added: x-served-by" in done.stdout
    r = json.loads(out.read_text())
    assert_documented_fields(r, "http")
    assert r["build"] is None and r["plugin"] == "bench/reference_filter.wat"


@pytest.mark.envoy
def test_footprint_benchmark_compares_modules_side_by_side(tmp_path):
    http, tcp = write_module(tmp_path, "http"), write_module(tmp_path, "tcp")
    out = tmp_path / "fp.json"
    done = run_script("bench/footprint.py", str(http), str(tcp), "--starts", "1", "--config", "",
                      "--json", str(out))
    assert done.returncode == 0, done.stderr
    for heading in ("module size", "Envoy start", "RSS after start (MB)", "/memory at c1 (MB)", "noise: "):
        assert heading in done.stdout, heading
    r = json.loads(out.read_text())
    assert list(r["variants"]) == ["no wasm", "reference (WAT)", "http.wasm", "tcp.wasm"]
    assert r["variants"]["tcp.wasm"]["source"] == str(tcp)
    assert r["variants"]["tcp.wasm"]["filter_type"] == "network"
    assert r["variants"]["no wasm"]["sections"] is None
    for name, v in r["variants"].items():
        for c in ("c1", "c2"):
            assert len(v[c]["starts"]) == 1 and v[c]["rss_kb"] > 0, name
        mem = v["c1"]["memory"]
        assert {"allocated", "pageheap_free", "total_thread_cache"} <= set(mem)
        d = v["derived"]
        parts = d["memory_mb_c1"]
        assert sum(parts.values()) == pytest.approx(d["rss_mb_c1"])
        assert d["per_extra_worker_mb"] == pytest.approx(d["rss_mb_c2"] - d["rss_mb_c1"])
