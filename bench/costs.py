"""Where a Python plugin's per-request time goes, in a real Envoy: per entry, callback, hostcall.

    python bench/costs.py [--requests 20000] [--block 200] [--wasmtime-streams 2000] [--json out.json]

(from the repository root, with the package installed or ``PYTHONPATH`` pointing at it). It
generates small HTTP plugins that differ in one thing each (the stages of
:mod:`pywasm_sdk.tooling.bench.costs`: an HTTP context that implements nothing, one empty
callback, two, one header added, five), each as a Python plugin (built through the build cache,
so a second run builds nothing) and as a hand-written WAT twin, and measures them all in one
Envoy: one listener per variant, each module in its own VM, next to a listener without wasm and
one with bench/reference_filter.wat, in interleaved rounds of blocks
(:func:`pywasm_sdk.tooling.bench.load.measure_rounds`, the method of bench/http_headers.py).
Each cost is a difference of two variants' Envoy CPU per request; the WAT twin's difference is
Envoy's own share of it, and the rest is Python's (interpreter, SDK, bridge).

Then, unless ``--wasmtime-streams 0``, the same modules run in wasmtime through the mock host, as
a cross-check of the Python share (clearly not V8). Progress goes to stderr, the tables to
stdout, every figure (per variant and per round) to ``--json``. Loopback only; Envoy and the
upstream are stopped by PID, even after an error.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pywasm_sdk.tooling import envoy as E  # noqa: E402
from pywasm_sdk.tooling.bench import costs, load, procfs, profile, starts  # noqa: E402
from pywasm_sdk.tooling.bench.modules import wasm_from_wat  # noqa: E402
from pywasm_sdk.tooling.bench.plugin import finish_run  # noqa: E402
from pywasm_sdk.tooling.bench.upstream import Upstream  # noqa: E402
from pywasm_sdk.tooling.build_cache import cached_build  # noqa: E402

REFERENCE_WAT = REPO / "bench" / "reference_filter.wat"
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def make_modules(folder: Path) -> dict[str, Path | None]:
    """Every variant's module (None for no wasm): Python stages built through the cache."""
    modules: dict[str, Path | None] = {costs.NONE: None,
                                       costs.REFERENCE: wasm_from_wat(REFERENCE_WAT, folder)}
    for stage in costs.STAGES:
        source = folder / f"costs_{stage.key}.py"
        source.write_text(costs.python_source(stage))
        say(f"py:{stage.key}: {stage.label}")
        modules[f"py:{stage.key}"], _ = cached_build(source, lambda m: say(f"  build: {m}"))
        wat = folder / f"costs_wat_{stage.key}.wat"
        wat.write_text(costs.wat_source(stage))
        modules[f"wat:{stage.key}"] = wasm_from_wat(wat, folder)
    return {name: modules[name] for name in costs.variant_names()}


def check(ports: dict[str, int]) -> None:
    """Every listener answers 200 and its variant adds exactly the headers it should."""
    every = {h for name in ports for h in costs.expected_headers(name)}
    for name, port in ports.items():
        status, headers, _ = E.http_request(port, "/check")
        added = sorted(h for h in headers if h in every)
        if status != 200 or added != sorted(costs.expected_headers(name)):
            raise RuntimeError(f"{name}: status {status}, added {added}, expected 200 and "
                               f"{costs.expected_headers(name)}")


def measure_envoy(modules: dict[str, Path | None], args: argparse.Namespace) -> dict[str, Any]:
    names = list(modules)
    with Upstream() as upstream:
        say(f"upstream (HTTP 200) on 127.0.0.1:{upstream.port}, pid {upstream.pid}")
        ports = {name: E.free_port() for name in names}
        config = E.http_variants_bootstrap(variants=modules, ports=ports, upstream=upstream.address,
                                           admin_port=E.free_port())
        say(f"starting one Envoy with {len(names)} listeners "
            f"({sum(1 for n in names if n.startswith('py:'))} Python VMs to compile)")
        envoy = starts.quiet_envoy(config, args.concurrency, say).start()
        profiles: dict[str, Any] = {}
        try:
            assert envoy.pid is not None
            say(f"  ready in {envoy.ready_seconds:.1f} s")
            check(ports)
            clients = [load.HttpClient(ports[name]) for name in names]
            try:
                figures = load.measure_rounds(envoy.pid, clients, count=args.requests,
                                              block=args.block, warmup=args.warmup,
                                              other_pids=[upstream.pid], progress=say)
            finally:
                for c in clients:
                    c.close()
            statuses = {name: c.outcome() for name, c in zip(names, clients)}
            if args.profile:
                profiles = profile_envoy(envoy.pid, ports, args)
        finally:
            envoy.stop()
            say("Envoy stopped")
    variants = dict(zip(names, figures.pop("clients")))
    for name, status in statuses.items():
        if set(status) != {200}:
            raise RuntimeError(f"{name}: statuses {status} during the load, expected only 200")
    figures["variants"] = variants
    figures["costs"] = costs.decompose({n: v["cpu_us"] for n, v in variants.items()})
    figures["costs_rounds"] = costs.decompose_rounds({n: v["block_cpu_us"] for n, v in variants.items()})
    figures["costs_p50"] = costs.decompose({n: v["p50_us"] for n, v in variants.items()})
    if args.profile:
        figures["profile"] = profiles
    return figures


def profile_envoy(pid: int, ports: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """perf record of Envoy while one listener takes ``--profile-requests`` requests, for the
    profiled stage's Python plugin, its WAT twin and no wasm: Envoy's CPU per request split by
    where the samples fell (:mod:`pywasm_sdk.tooling.bench.profile`)."""
    out: dict[str, Any] = {}
    for name in (costs.NONE, f"wat:{args.profile}", f"py:{args.profile}"):
        client = load.HttpClient(ports[name])
        try:
            for _ in range(200):
                client.once()
            say(f"profile: perf record of Envoy during {args.profile_requests} requests to {name}")
            data = Path(args.tmp) / f"envoy-{name.replace(':', '-')}.perf"
            with profile.PerfRecord(pid, data):
                c0 = procfs.cpu_ns(pid)
                for _ in range(args.profile_requests):
                    client.once()
                c1 = procfs.cpu_ns(pid)
        finally:
            client.close()
        rows = profile.report(data)
        cpu_us = (c1 - c0) / 1e3 / args.profile_requests
        shares = profile.split_by_class(rows)
        out[name] = {"cpu_us": cpu_us, "samples": sum(r["samples"] for r in rows),
                     "shares": shares, "us": {k: v * cpu_us for k, v in shares.items()},
                     "top": rows[:15]}
    return out


def profile_wasmtime(args: argparse.Namespace) -> dict[str, Any]:
    """The profiled stage's Python plugin, built with names (``--debug``, cached), in wasmtime
    under perf: the module's functions by share."""
    stage = next(s for s in costs.STAGES if s.key == args.profile)
    source = Path(args.tmp) / f"costs_{stage.key}.py"  # written by make_modules
    wasm, _ = cached_build(source, lambda m: say(f"  build (--debug): {m}"), debug=True)
    return costs.wasmtime_profile(wasm, streams=args.profile_streams, folder=Path(args.tmp),
                                  progress=say)


def measure_wasmtime(modules: dict[str, Path | None], args: argparse.Namespace) -> dict[str, Any]:
    wasm = {name: path for name, path in modules.items() if path is not None}
    figures = costs.wasmtime_rounds(wasm, streams=args.wasmtime_streams,
                                    block=min(args.block, args.wasmtime_streams), progress=say)
    figures["costs"] = costs.decompose(figures["cpu_us"])
    figures["costs_rounds"] = costs.decompose_rounds(figures["rounds_cpu_us"])
    figures["costs_fuel"] = costs.decompose(figures["fuel"])
    figures["costs_fuel_rounds"] = costs.decompose_rounds(figures["rounds_fuel"])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Decompose a Python plugin's per-request cost in a real Envoy: per entry into "
                    "Python, per exported callback, per hostcall (bench/README.md).")
    parser.add_argument("--requests", type=int, default=20000,
                        help="measured requests per variant, rounded up to whole blocks (default 20000)")
    parser.add_argument("--block", type=int, default=200, help="requests per block (default 200)")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up requests per variant (default 500)")
    parser.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads (default 1)")
    parser.add_argument("--wasmtime-streams", type=int, default=4000,
                        help="streams per variant of the wasmtime cross-check; 0 leaves it out "
                             "(default 4000)")
    parser.add_argument("--wasmtime-only", action="store_true",
                        help="only the wasmtime cross-check: no Envoy (a quick look, not the figures)")
    parser.add_argument("--profile", choices=[s.key for s in costs.STAGES],
                        help="also profile this stage with perf: Envoy's CPU by binary (its Python "
                             "plugin, WAT twin and no wasm), and the plugin's functions in wasmtime")
    parser.add_argument("--profile-requests", type=int, default=5000,
                        help="requests per Envoy profile (default 5000)")
    parser.add_argument("--profile-streams", type=int, default=20000,
                        help="streams of the wasmtime profile (default 20000: the module runs a "
                             "small part of that process's time)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    if args.requests < 1 or args.block < 1 or args.warmup < 0 or args.concurrency < 1 \
            or args.wasmtime_streams < 0 or (args.wasmtime_only and not args.wasmtime_streams) \
            or args.profile_requests < 1 or args.profile_streams < 1:
        parser.error("--requests, --block and --concurrency must be positive, --warmup and "
                     "--wasmtime-streams not negative (positive with --wasmtime-only), "
                     "--profile-requests and --profile-streams positive")
    if args.profile and (why := profile.available()):
        parser.error(f"--profile: {why}")
    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "python": platform.python_version(), "envoy_version": starts.envoy_version(),
        "concurrency": args.concurrency, "loadavg_before": list(os.getloadavg()),
        "stages": {s.key: s.label for s in costs.STAGES},
        "costs_defined": {c.key: {"label": c.label, "plus": c.plus, "minus": c.minus, "per": c.per}
                          for c in costs.COSTS},
    }
    with tempfile.TemporaryDirectory(prefix="pywasm-costs-") as tmp:
        args.tmp = tmp
        modules = make_modules(Path(tmp))
        result["modules"] = {name: (str(p) if p else None) for name, p in modules.items()}
        if not args.wasmtime_only:
            result["envoy"] = measure_envoy(modules, args)
        if args.wasmtime_streams:
            result["wasmtime"] = measure_wasmtime(modules, args)
        if args.profile:
            result["wasmtime_profile"] = profile_wasmtime(args)
    return finish_run(result, T0, args.json, say, costs.to_text)


if __name__ == "__main__":
    sys.exit(main())
