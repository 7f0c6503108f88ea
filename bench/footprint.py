"""Footprint of plugin modules in Envoy: size, start time, memory; several modules side by side.

    python bench/footprint.py [MODULE ...] [--starts 3] [--config TEXT] [--no-reference] [--json out.json]

(from the repository root, with the package installed or ``PYTHONPATH`` pointing at it).
``MODULE`` is a ``.wasm``, a ``.wat``, or a plugin's sources (a folder or ``.py``, built through
the build cache as ``pywasm run`` does); the default is examples/http_headers. In one run:

1. each module's size by part: code (what V8 compiles at start), data (the pre-initialised
   memory), names (the name section), other;
2. Envoy start-to-ready and Envoy's CPU time to start, at ``--concurrency 1`` and ``2``, for
   an Envoy without wasm, the hand-written reference bench/reference_filter.wat (when present,
   unless ``--no-reference``) and each module, started in interleaved rounds (forward, then
   backward) ``--starts`` times each; medians;
3. Envoy's RSS right after start at both concurrencies (so the cost of one extra worker is
   their difference), and the admin ``/memory`` breakdown at ``--concurrency 1``: tcmalloc's
   ``allocated``, the page heap's free bytes, the thread caches, and the rest of RSS (V8's code
   space, the VMs' linear memories, tcmalloc's own overhead);
4. the same RSS by kind of mapping (``/proc/PID/smaps``): the envoy executable as far as it
   was touched, other files, compiled code (anonymous executable memory: V8's code space), the
   wasm memories (how many: one per VM) and the rest of the anonymous memory (tcmalloc's heap,
   stacks, V8's own heap).

No traffic is sent: every Envoy has one listener (the module's filter type: HTTP, or network)
and is stopped by PID once measured. Memory figures are in MB of 1000 /proc kB (1 kB = 1024
bytes), the unit of every earlier figure in bench/README.md; ``/memory``'s bytes are converted
to the same unit so that the parts add up to RSS. Progress goes to stderr, the tables to
stdout, every start's figures to ``--json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pywasm_sdk.tooling import envoy as E  # noqa: E402
from pywasm_sdk.tooling.bench import procfs, starts  # noqa: E402
from pywasm_sdk.tooling.bench.modules import SIZE_PARTS, section_sizes, size_text, wasm_from_wat  # noqa: E402
from pywasm_sdk.tooling.bench.plugin import finish_run  # noqa: E402
from pywasm_sdk.tooling.run import cached_build  # noqa: E402
from pywasm_sdk.tooling.wasm_file import load  # noqa: E402

DEFAULT_MODULE = REPO / "examples" / "http_headers"
REFERENCE = REPO / "bench" / "reference_filter.wat"
NO_WASM = "no wasm"
REFERENCE_LABEL = "reference (WAT)"
DEFAULT_CONFIG = "x-served-by=pywasm-bench\n"  # bench/http_headers.py's job: one response header
CONCURRENCIES = (1, 2)
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def prepare(spec: str, tmp: Path) -> tuple[Path, str]:
    """(the .wasm to load, its filter type) for a MODULE argument."""
    if spec.endswith(".wat"):
        wasm = wasm_from_wat(spec, tmp)
    else:
        wasm, _ = cached_build(spec, lambda m: say(f"  {m}"))
    return wasm, load(wasm).filter_type()


def short_label(spec: str, specs: list[str]) -> str:
    """A module's name in the tables: its file or folder name, or the whole argument when
    another module has the same name."""
    name = Path(spec).name or spec
    return name if [Path(s).name for s in specs].count(name) == 1 and name not in (NO_WASM, REFERENCE_LABEL) else spec


def bootstrap(wasm: Path | None, kind: str, config: str) -> Callable[[], dict[str, Any]]:
    """A factory of one-listener bootstraps (new ports each time); no traffic reaches the cluster."""
    def make() -> dict[str, Any]:
        nowhere = ("127.0.0.1", E.free_port())
        if kind == "network":
            return E.tcp_bootstrap(wasm_path=wasm, plugin_config=config, listener_port=E.free_port(),
                                   admin_port=E.free_port(), clusters={"upstream": nowhere},
                                   default_cluster="upstream")
        return E.http_bootstrap(wasm_path=wasm, plugin_config=config, listener_port=E.free_port(),
                                upstream=nowhere, admin_port=E.free_port())
    return make


def derive(entry: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    """The figures a reader wants from the raw medians: MB, per extra worker, /memory parts."""
    c1, c2 = entry["c1"], entry["c2"]
    mem = c1.get("memory") or {}
    to_mb = 1 / 1024 / 1000  # bytes -> MB of 1000 /proc kB
    parts = {"allocated": mem.get("allocated", 0) * to_mb,
             "pageheap_free": mem.get("pageheap_free", 0) * to_mb,
             "thread_caches": mem.get("total_thread_cache", 0) * to_mb}
    rss = c1["rss_kb"] / 1e3
    return {"ready_seconds_c1": c1["ready_seconds"], "ready_seconds_c2": c2["ready_seconds"],
            "cpu_seconds_c1": c1["cpu_seconds"],
            "rss_mb_c1": rss, "rss_mb_c2": c2["rss_kb"] / 1e3, "hwm_mb_c1": c1["hwm_kb"] / 1e3,
            "per_extra_worker_mb": (c2["rss_kb"] - c1["rss_kb"]) / 1e3,
            "added_rss_mb_c1": (c1["rss_kb"] - bare["c1"]["rss_kb"]) / 1e3,
            "memory_mb_c1": {**parts, "rest_of_rss": rss - sum(parts.values())},
            "mappings_mb_c1": {k: v / 1e3 for k, v in (c1.get("mappings") or {}).items()},
            "wasm_memories_c1": c1.get("wasm_memories")}


def report(r: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    names = list(r["variants"])
    w = max(12, *(len(n) for n in names)) + 2
    add(f"footprint: {', '.join(names)}; Envoy {r['envoy_version']}; {r['machine']}; {r['date']}")
    add(f"(medians of {r['starts']} interleaved starts per variant and concurrency; "
        f"plugin configuration {r['config']!r})")
    add("")
    add("module size".ljust(w) + "".join(f"{h:>10}" for h in ("total", *SIZE_PARTS)))
    for name in names:
        sec = r["variants"][name]["sections"]
        if sec:
            add(name.ljust(w) + "".join(f"{size_text(sec[k]):>10}" for k in ("total", *SIZE_PARTS)))
    add("")
    add("Envoy start".ljust(w) + f"{'ready c1 (s)':>14}{'ready c2 (s)':>14}{'CPU c1 (s)':>12}"
        "   each start to ready at c1 (s)")
    for name in names:
        v = r["variants"][name]
        d = v["derived"]
        each = ", ".join(f"{s['ready_seconds']:.2f}" for s in v["c1"]["starts"])
        add(name.ljust(w) + f"{d['ready_seconds_c1']:>14.2f}{d['ready_seconds_c2']:>14.2f}"
            f"{d['cpu_seconds_c1']:>12.2f}   {each}")
    add("")
    add("RSS after start (MB)".ljust(w) + f"{'c1':>9}{'c2':>9}{'per worker':>12}"
        f"{'added c1':>10}{'peak c1':>9}")
    for name in names:
        d = r["variants"][name]["derived"]
        add(name.ljust(w) + f"{d['rss_mb_c1']:>9.1f}{d['rss_mb_c2']:>9.1f}{d['per_extra_worker_mb']:>+12.1f}"
            f"{d['added_rss_mb_c1']:>+10.1f}{d['hwm_mb_c1']:>9.1f}")
    add("")
    add("/memory at c1 (MB)".ljust(w) + f"{'allocated':>11}{'pageheap free':>15}"
        f"{'thread caches':>15}{'rest of RSS':>13}")
    for name in names:
        m = r["variants"][name]["derived"]["memory_mb_c1"]
        add(name.ljust(w) + f"{m['allocated']:>11.1f}{m['pageheap_free']:>15.1f}"
            f"{m['thread_caches']:>15.1f}{m['rest_of_rss']:>13.1f}")
    add("")
    add("RSS by mapping at c1 (MB)".ljust(w) + "".join(f"{k:>17}" for k in procfs.MAPPING_KINDS))
    for name in names:
        d = r["variants"][name]["derived"]
        m = d["mappings_mb_c1"]
        if m:
            cells = [f"{m[k]:.1f}" + (f" ({d['wasm_memories_c1']:g})" if k == "wasm memories" else "")
                     for k in procfs.MAPPING_KINDS]
            add(name.ljust(w) + "".join(f"{c:>17}" for c in cells))
    noise = r["noise"]
    add("")
    add(f"noise: during the {noise['seconds']:.0f} s of starts other processes used "
        f"{noise['other_processes_cores']:.2f} cores, steal {noise['steal_cores']:.2f}; load average "
        f"{r['loadavg_before'][0]:.2f} before, {r['loadavg_after'][0]:.2f} after")
    if noise["other_processes_cores"] > 0.2:
        add("       the machine was busy: start times are inflated; repeat on a quiet machine")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help=".wasm, .wat, or plugin sources (built through the cache); "
                             "default examples/http_headers")
    parser.add_argument("--starts", type=int, default=3,
                        help="starts per variant and concurrency; figures are medians (default 3)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"the plugin configuration given to every module (default {DEFAULT_CONFIG!r})")
    parser.add_argument("--no-reference", action="store_true",
                        help="leave out the hand-written reference bench/reference_filter.wat")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    if args.starts < 1:
        parser.error("--starts must be at least 1")
    specs = args.modules or [str(DEFAULT_MODULE.relative_to(REPO))]

    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "python": platform.python_version(), "envoy_version": starts.envoy_version(),
        "starts": args.starts, "config": args.config, "loadavg_before": list(os.getloadavg()),
    }
    with tempfile.TemporaryDirectory(prefix="pywasm-footprint-") as tmp:
        modules: dict[str, tuple[Path | None, str]] = {NO_WASM: (None, "http")}
        sources: dict[str, str | None] = {NO_WASM: None}
        if REFERENCE.exists() and not args.no_reference:
            modules[REFERENCE_LABEL] = (wasm_from_wat(REFERENCE, tmp), "http")
            sources[REFERENCE_LABEL] = str(REFERENCE.relative_to(REPO))
        if len(set(specs)) < len(specs):
            parser.error("a module is given twice")
        for spec in specs:
            label = short_label(spec, specs)
            say(f"module {spec}")
            modules[label] = prepare(spec, Path(tmp))
            sources[label] = spec
        variants = [starts.Variant(name, bootstrap(wasm, kind, args.config))
                    for name, (wasm, kind) in modules.items()]
        noise = procfs.Noise()
        by_concurrency = {}
        for c in CONCURRENCIES:
            by_concurrency[c], _ = starts.start_rounds(variants, args.starts, concurrency=c,
                                                       memory=True, progress=say, noise=noise)
        results["noise"] = noise.result()
        results["variants"] = {}
        for name, (wasm, kind) in modules.items():
            results["variants"][name] = {
                "source": sources[name], "filter_type": kind if wasm else None,
                "sections": section_sizes(wasm.read_bytes()) if wasm else None,
                **{f"c{c}": starts.summarise(by_concurrency[c][name]) for c in CONCURRENCIES}}
    bare = results["variants"][NO_WASM]
    for entry in results["variants"].values():
        entry["derived"] = derive(entry, bare)
    return finish_run(results, T0, args.json, say, report)


if __name__ == "__main__":
    sys.exit(main())
