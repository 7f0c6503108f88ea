"""Benchmark examples/http_headers end to end: build, Envoy start, added latency and CPU, memory.

    python bench/http_headers.py [--requests N] [--concurrency 1] [--json out.json] [--wasm FILE]

(from the repository root, with the package installed or ``PYTHONPATH`` pointing at it). It is
``pywasm bench`` (:mod:`pywasm_sdk.tooling.bench.plugin`, the same code) applied to one plugin,
with two additions:

1. a timed fresh build of examples/http_headers (``pywasm_sdk.tooling.build.build``, no cache):
   total and per-stage time; ``--wasm FILE`` (``.wasm``, or ``.wat`` such as
   bench/reference_filter.wat) measures a module you already have instead, without build figures;
2. the job is fixed, "add one response header" (configuration ``x-served-by=pywasm-bench``, the
   job of the design's performance section), and the run stops unless the listener with the
   plugin adds that header and the one without does not.

Progress goes to stderr, the table to stdout, every figure (each start included) to ``--json``.
Loopback only; Envoy and the upstream are stopped by PID, even after an error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pywasm_sdk.tooling.bench.modules import wasm_from_wat  # noqa: E402
from pywasm_sdk.tooling.bench.plugin import bench_module, to_json_text, to_text  # noqa: E402
from pywasm_sdk.tooling.build import build  # noqa: E402
from pywasm_sdk.tooling.envoy import http_request  # noqa: E402

PLUGIN = REPO / "examples" / "http_headers"
HEADER_NAME, HEADER_VALUE = "x-served-by", "pywasm-bench"
PLUGIN_CONFIG = f"{HEADER_NAME}={HEADER_VALUE}\n"
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def check_header(filter_port: int, baseline_port: int) -> None:
    """The listener with the plugin adds the header, the one without does not."""
    _, with_filter, _ = http_request(filter_port, "/check")
    _, without, _ = http_request(baseline_port, "/check")
    if with_filter.get(HEADER_NAME) != HEADER_VALUE:
        raise RuntimeError(f"the plugin did not add {HEADER_NAME}: {with_filter}")
    if HEADER_NAME in without:
        raise RuntimeError(f"the listener without the plugin has {HEADER_NAME}: {without}")


def timed_build(wasm_path: Path) -> dict[str, Any]:
    say(f"building {PLUGIN.relative_to(REPO)} (fresh, no cache: the build time is a figure)")
    result = build(PLUGIN, wasm_path, progress=lambda m: say(f"  build: {m}"))
    return {"seconds": result.seconds, "stage_seconds": result.stage_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark examples/http_headers in a real Envoy against a no-wasm baseline.")
    parser.add_argument("--requests", type=int, default=150000,
                        help="measured requests per listener, rounded up to whole blocks (default 150000)")
    parser.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--block", type=int, default=200, help="requests per interleaved block (default 200)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up requests per listener (default 1000)")
    parser.add_argument("--starts", type=int, default=3,
                        help="Envoy starts per variant; start figures are medians (default 3)")
    parser.add_argument("--wasm", type=Path,
                        help="measure this module (.wasm, or .wat such as bench/reference_filter.wat) "
                             "instead of building examples/http_headers (no build figures)")
    args = parser.parse_args()
    if args.requests < 1 or args.block < 1 or args.warmup < 0 or args.starts < 1:
        parser.error("--requests, --block and --starts must be positive, --warmup not negative")

    with tempfile.TemporaryDirectory(prefix="pywasm-bench-") as tmp:
        build_figures = None
        if args.wasm is None:
            wasm = Path(tmp) / "http_headers.wasm"
            build_figures = timed_build(wasm)
        elif args.wasm.suffix == ".wat":
            wasm = wasm_from_wat(args.wasm, tmp)
        else:
            wasm = args.wasm
        results = bench_module(wasm, config=PLUGIN_CONFIG, requests=args.requests, block=args.block,
                               warmup=args.warmup, starts_per_variant=args.starts,
                               concurrency=args.concurrency, check=check_header, progress=say)
    results["plugin"] = str(args.wasm) if args.wasm else "examples/http_headers"
    results["build"] = build_figures
    if args.json:
        args.json.write_text(to_json_text(results) + "\n")
        say(f"wrote {args.json}")
    say(f"done in {time.monotonic() - T0:.0f} s")
    if build_figures:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in build_figures["stage_seconds"].items())
        print(f"build {build_figures['seconds']:.1f} s ({stages})")
    print(to_text(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
