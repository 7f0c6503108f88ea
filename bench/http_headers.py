"""Benchmark examples/http_headers end to end: build, Envoy start, added latency and CPU, memory.

    python bench/http_headers.py [--requests N] [--concurrency 1] [--json out.json]

(from the repository root, with ``PYTHONPATH`` pointing at it).  One run measures, against a
baseline measured in the same run:

1. ``pywasm build`` of examples/http_headers: total and per-stage time; module size and the
   sizes of its code, data and name sections;
2. Envoy start-to-ready (admin ``/ready`` = LIVE) with the plugin, and with the same bootstrap
   without any wasm; Envoy's RSS (VmRSS, and peak VmHWM) after start, both ways;
3. the latency the filter adds: one Envoy with two listeners in front of the same minimal
   upstream (bench/upstream.py): one with the wasm filter, one without (the baseline).
   Sequential keep-alive GETs from one http.client connection per listener, after a warm-up,
   in interleaved blocks (order ABBA BAAB ...) so that drift hits both sides alike;
   p50/p90/p99 per listener and the added p50 in us and as a ratio;
4. Envoy CPU time per request for each listener: Envoy's on-CPU time (all threads, ns from
   /proc/PID/task/*/schedstat; utime+stime ticks from /proc/PID/stat as a cross-check) is
   read before and after every block, and each block's delta is charged to its listener.

The plugin configuration is one header (``x-served-by=pywasm-bench``), so the job is "add one
response header", the job the design's performance section uses.  Progress goes to stderr,
the table to stdout, everything (raw figures included) to ``--json``.  Loopback only.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import http.client
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pywasm_sdk.tooling import wasm_binary  # noqa: E402
from pywasm_sdk.tooling.build import build  # noqa: E402
from pywasm_sdk.tooling.envoy import (  # noqa: E402
    Envoy, envoy_binary, free_port, http_bootstrap, http_request,
)

PLUGIN = REPO / "examples" / "http_headers"
HEADER_NAME, HEADER_VALUE = "x-served-by", "pywasm-bench"
PLUGIN_CONFIG = f"{HEADER_NAME}={HEADER_VALUE}\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ /proc readers

def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of a process so far, in ns (schedstat: ns resolution)."""
    total = 0
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended: its time is lost from both readings alike
    return total


def system_ticks() -> tuple[int, int]:
    """(busy, steal) CPU ticks of the whole machine from /proc/stat; busy excludes idle and steal."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all threads) in clock ticks, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the full line


# ------------------------------------------------------------------------------ helpers

def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def section_sizes(data: bytes) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, size in wasm_binary.read(data).sections:
        sizes[name] = sizes.get(name, 0) + size
    return sizes


def envoy_version() -> str:
    try:
        out = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    for part in out.split("/"):
        if part[:1].isdigit() and part.count(".") == 2:
            return part
    return out.strip() or "unknown"


class Upstream:
    """bench/upstream.py in its own process; stopped by PID."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("upstream.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError("bench/upstream.py did not report its port")
        self.port = int(line)
        self.address = ("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Client:
    """One keep-alive http.client connection to a listener; ``get()`` returns its latency in ns."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self) -> int:
        conn = self.conn
        t = time.perf_counter_ns()
        conn.request("GET", "/bench")
        resp = conn.getresponse()
        resp.read()
        elapsed = time.perf_counter_ns() - t
        if resp.status != 200:
            raise RuntimeError(f"request failed: {resp.status}")
        return elapsed

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------------------ phases

def phase_build(wasm_path: Path) -> dict[str, Any]:
    say(f"building {PLUGIN.relative_to(REPO)}")
    result = build(PLUGIN, wasm_path, progress=lambda m: say(f"  build: {m}"))
    sizes = section_sizes(wasm_path.read_bytes())
    return {"seconds": result.seconds, "stage_seconds": result.stage_seconds, "size": result.size,
            "sections": sizes, "callbacks": result.callbacks}


def make_config(wasm_path: Path | None, upstream: Upstream) -> dict[str, Any]:
    return http_bootstrap(wasm_path=wasm_path, plugin_config=PLUGIN_CONFIG,
                          listener_port=free_port(), baseline_port=free_port(),
                          upstream=upstream.address, admin_port=free_port())


def ports(config: dict[str, Any]) -> tuple[int, int]:
    """(filter listener port, baseline listener port) of a bootstrap from make_config."""
    listeners = config["static_resources"]["listeners"]
    return tuple(lst["address"]["socket_address"]["port_value"] for lst in listeners)  # type: ignore[return-value]


def new_envoy(config: dict[str, Any], concurrency: int) -> Envoy:
    # No debug logging: nothing per request in the log, for both listeners alike.
    return Envoy(config, concurrency=concurrency, log_level="warning", component_log_level=None,
                 progress=lambda m: say(f"  {m}"))


def phase_start_baseline(upstream: Upstream, concurrency: int, starts: int) -> dict[str, Any]:
    """Start the same bootstrap without wasm ``starts`` times: ready seconds and RSS."""
    ready, rss = [], []
    for i in range(starts):
        say(f"starting Envoy without wasm ({i + 1}/{starts})")
        with new_envoy(make_config(None, upstream), concurrency) as envoy:
            assert envoy.pid is not None and envoy.ready_seconds is not None
            ready.append(envoy.ready_seconds)
            rss.append(rss_kb(envoy.pid))
    return {"ready_seconds": ready, "rss_kb": rss}


def check_header(filter_port: int, baseline_port: int) -> None:
    """The filter listener adds the header, the baseline listener does not."""
    _, with_filter, _ = http_request(filter_port, "/check")
    _, without, _ = http_request(baseline_port, "/check")
    if with_filter.get(HEADER_NAME) != HEADER_VALUE:
        raise RuntimeError(f"the plugin did not add {HEADER_NAME}: {with_filter}")
    if HEADER_NAME in without:
        raise RuntimeError(f"the baseline listener has {HEADER_NAME}: {without}")


def block_order(blocks_each: int) -> list[int]:
    """0 = filter, 1 = baseline; ABBA BAAB ABBA ...: every pair of neighbours is balanced."""
    order: list[int] = []
    quad = [0, 1, 1, 0]
    while len(order) < 2 * blocks_each:
        order += quad
        quad = [1 - x for x in quad]
    order = order[: 2 * blocks_each]
    return order


def phase_load(envoy: Envoy, upstream: Upstream, filter_port: int, baseline_port: int,
               requests: int, block: int, warmup: int) -> dict[str, Any]:
    assert envoy.pid is not None
    pid = envoy.pid
    clients = [Client(filter_port), Client(baseline_port)]
    try:
        say(f"warm-up: {warmup} requests per listener")
        for _ in range(math.ceil(warmup / 50)):  # alternating runs of 50
            for c in clients:
                for _ in range(50):
                    c.get()
        blocks_each = max(1, math.ceil(requests / block))
        order = block_order(blocks_each)
        lat: list[list[int]] = [[], []]
        cpu = [0, 0]
        ticks = [0, 0]
        block_p50: list[list[float]] = [[], []]  # per-block median, for the spread of the added p50
        say(f"measuring: {blocks_each} blocks of {block} requests per listener, interleaved")
        gc.collect()
        gc.disable()
        ours = (pid, upstream.proc.pid, os.getpid())
        (busy0, steal0), ours0 = system_ticks(), sum(cpu_ticks(p) for p in ours)
        wall0 = time.monotonic()
        try:
            last_report = time.monotonic()
            for n, which in enumerate(order):
                get = clients[which].get
                c0, k0 = cpu_ns(pid), cpu_ticks(pid)
                samples = [get() for _ in range(block)]
                c1, k1 = cpu_ns(pid), cpu_ticks(pid)
                cpu[which] += c1 - c0
                ticks[which] += k1 - k0
                lat[which] += samples
                block_p50[which].append(statistics.median(samples))
                if time.monotonic() - last_report > 5:
                    say(f"  {n + 1}/{len(order)} blocks")
                    last_report = time.monotonic()
                    gc.collect()  # between blocks only
        finally:
            gc.enable()
        wall = time.monotonic() - wall0
        busy1, steal1 = system_ticks()
        others = (busy1 - busy0) - (sum(cpu_ticks(p) for p in ours) - ours0)
    finally:
        for c in clients:
            c.close()
    # Neighbouring blocks pair up (the order is balanced): per-pair difference of block medians.
    pair_diffs = [f - b for f, b in zip(block_p50[0], block_p50[1])]
    out: dict[str, Any] = {"requests_per_listener": len(lat[0]), "block": block, "warmup": warmup,
                           "seconds": wall,
                           # CPU used by other processes meanwhile, in cores (0 = quiet machine)
                           "other_processes_cores": max(0, others) / CLK_TCK / wall,
                           # CPU the hypervisor gave to someone else, in cores
                           "steal_cores": (steal1 - steal0) / CLK_TCK / wall}
    for which, name in enumerate(("filter", "baseline")):
        s = sorted(lat[which])
        out[name] = {
            "p50_us": percentile(s, 50) / 1e3, "p90_us": percentile(s, 90) / 1e3,
            "p99_us": percentile(s, 99) / 1e3, "mean_us": statistics.fmean(s) / 1e3,
            "cpu_us_per_request": cpu[which] / 1e3 / len(s),
            "cpu_ticks_us_per_request": ticks[which] * 1e6 / CLK_TCK / len(s),
        }
    q = statistics.quantiles(pair_diffs, n=4) if len(pair_diffs) >= 2 else [math.nan] * 3
    out["added_p50_block_pairs_us"] = {"median": statistics.median(pair_diffs) / 1e3,
                                       "q25": q[0] / 1e3, "q75": q[2] / 1e3,
                                       "pairs": len(pair_diffs)}
    return out


# ------------------------------------------------------------------------------ report

def size_text(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def report(r: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    b = r["build"]
    what = r["module"]["path"] or "examples/http_headers"
    add(f"pywasm-sdk benchmark: {what} ({r['date']}, {r['machine']}, "
        f"Envoy {r['envoy_version']}, --concurrency {r['concurrency']})")
    add("")
    if b:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in b["stage_seconds"].items())
        add(f"build          {b['seconds']:8.1f} s  ({stages})")
    s = r["module"]
    sec = s["sections"]
    add(f"module         {size_text(s['size']):>10}  (code {size_text(sec.get('code', 0))}, "
        f"data {size_text(sec.get('data', 0))}, name {size_text(sec.get('custom:name', 0))})")
    add("")
    st = r["start"]
    lat = r["load"]
    f, base = lat["filter"], lat["baseline"]
    w = 14
    add("two Envoys, same bootstrap, with the plugin and without any wasm:")
    add(f"{'':24}{'with plugin':>{w}}{'no wasm':>{w}}{'added':>{w}}{'ratio':>{w - 4}}")

    def row(label: str, a: float, bb: float, fmt: str) -> None:
        add(f"{label:24}{a:>{w}{fmt}}{bb:>{w}{fmt}}{a - bb:>+{w}{fmt}}{ratio(a, bb):>{w - 5}.2f}x")

    row(f"start to ready (s) [{len(st['plugin_ready_all'])}]", st["plugin_ready_seconds"],
        st["baseline_ready_seconds"], ".2f")
    add(f"{'':24}(plugin starts: {', '.join(f'{x:.2f}' for x in st['plugin_ready_all'])} s; "
        f"no wasm: {', '.join(f'{x:.2f}' for x in st['baseline_ready_all'])} s)")
    row("RSS after start (MB)", st["plugin_rss_kb"] / 1e3, st["baseline_rss_kb"] / 1e3, ".1f")
    row("peak RSS, VmHWM (MB)", st["plugin_hwm_kb"] / 1e3, st["baseline_hwm_kb"] / 1e3, ".1f")
    add(f"{'':24}(RSS of the plugin Envoy after the load run: "
        f"{st['plugin_rss_after_load_kb'] / 1e3:.1f} MB)")
    add("")
    add(f"one Envoy, two listeners, {lat['requests_per_listener']} sequential keep-alive requests "
        f"each, interleaved blocks of {lat['block']}:")
    add(f"{'':24}{'filter':>{w}}{'baseline':>{w}}{'added':>{w}}{'ratio':>{w - 4}}")
    for key, label in (("p50_us", "latency p50 (us)"), ("p90_us", "latency p90 (us)"),
                       ("p99_us", "latency p99 (us)"), ("mean_us", "latency mean (us)"),
                       ("cpu_us_per_request", "Envoy CPU/request (us)"),
                       ("cpu_ticks_us_per_request", "  same, from ticks (us)")):
        row(label, f[key], base[key], ".1f")
    pairs = lat["added_p50_block_pairs_us"]
    add("")
    add(f"added p50 per block pair: median {pairs['median']:+.1f} us, "
        f"IQR [{pairs['q25']:+.1f}, {pairs['q75']:+.1f}] us over {pairs['pairs']} pairs")
    add(f"noise: during the {lat['seconds']:.0f} s load phase other processes used "
        f"{lat['other_processes_cores']:.2f} cores, steal {lat['steal_cores']:.2f} cores; "
        f"load average before {r['loadavg_before'][0]:.2f}, "
        f"after {r['loadavg_after'][0]:.2f}; whole run {r['seconds_total']:.0f} s")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main

def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark examples/http_headers in a real Envoy against a no-wasm baseline.")
    parser.add_argument("--requests", type=int, default=150000,
                        help="measured requests per listener, rounded up to whole blocks (default 150000)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="Envoy worker threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--block", type=int, default=200,
                        help="requests per interleaved block (default 200)")
    parser.add_argument("--warmup", type=int, default=1000,
                        help="warm-up requests per listener (default 1000)")
    parser.add_argument("--starts", type=int, default=3,
                        help="Envoy starts per variant; start time and RSS are medians (default 3)")
    parser.add_argument("--wasm", type=Path,
                        help="measure this module (.wasm, or .wat such as bench/reference_filter.wat) "
                             "instead of building examples/http_headers (no build figures)")
    args = parser.parse_args()
    if args.requests < 1 or args.block < 1 or args.warmup < 0 or args.starts < 1:
        parser.error("--requests, --block and --starts must be positive, --warmup not negative")

    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "python": platform.python_version(), "envoy_version": envoy_version(),
        "concurrency": args.concurrency, "plugin_config": PLUGIN_CONFIG,
        "loadavg_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="pywasm-bench-") as tmp:
        if args.wasm:
            wasm_path = args.wasm.resolve()
            if wasm_path.suffix == ".wat":  # e.g. bench/reference_filter.wat
                import wasmtime
                wasm_path = Path(tmp) / (wasm_path.stem + ".wasm")
                wasm_path.write_bytes(wasmtime.wat2wasm(args.wasm.read_text()))
            results["build"] = None
        else:
            wasm_path = Path(tmp) / "http_headers.wasm"
            results["build"] = phase_build(wasm_path)
        data = wasm_path.read_bytes()
        results["module"] = {"path": str(args.wasm) if args.wasm else None, "size": len(data),
                             "sections": section_sizes(data)}

        with Upstream() as upstream:
            say(f"upstream (bench/upstream.py) on 127.0.0.1:{upstream.port}, pid {upstream.proc.pid}")
            base = phase_start_baseline(upstream, args.concurrency, args.starts)
            plugin_ready: list[float] = []
            plugin_rss: list[dict[str, int]] = []
            for i in range(args.starts):
                say(f"starting Envoy with the plugin ({i + 1}/{args.starts})")
                config = make_config(wasm_path, upstream)
                envoy = new_envoy(config, args.concurrency).start()
                try:
                    assert envoy.pid is not None and envoy.ready_seconds is not None
                    plugin_ready.append(envoy.ready_seconds)
                    plugin_rss.append(rss_kb(envoy.pid))
                    if i + 1 < args.starts:
                        continue
                    filter_port, baseline_port = ports(config)
                    check_header(filter_port, baseline_port)
                    results["load"] = phase_load(envoy, upstream, filter_port, baseline_port,
                                                 args.requests, args.block, args.warmup)
                    rss_after = rss_kb(envoy.pid)
                finally:
                    envoy.stop()
                    say("Envoy stopped")

    results["start"] = {
        "plugin_ready_seconds": statistics.median(plugin_ready),
        "baseline_ready_seconds": statistics.median(base["ready_seconds"]),
        "plugin_ready_all": plugin_ready, "baseline_ready_all": base["ready_seconds"],
        "plugin_rss_kb": statistics.median(r["VmRSS"] for r in plugin_rss),
        "plugin_hwm_kb": statistics.median(r["VmHWM"] for r in plugin_rss),
        "baseline_rss_kb": statistics.median(r["VmRSS"] for r in base["rss_kb"]),
        "baseline_hwm_kb": statistics.median(r["VmHWM"] for r in base["rss_kb"]),
        "plugin_rss_after_load_kb": rss_after["VmRSS"],
    }
    results["loadavg_after"] = os.getloadavg()
    results["seconds_total"] = time.monotonic() - T0
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        say(f"wrote {args.json}")
    say(f"done in {results['seconds_total']:.0f} s")
    print(report(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
