"""``pywasm bench``: what a plugin costs, against the same Envoy without it, in one run.

:func:`bench_plugin` builds the plugin through the build cache (as ``pywasm run`` does), decides
HTTP or network filter from its exports, and hands the module to :func:`bench_module`, which:

1. reads the module's size by part (code, data, names, other);
2. starts Envoy ``starts`` times with the plugin and as often without any wasm, interleaved,
   and keeps start-to-ready, Envoy's CPU time to start, and RSS after start (medians);
3. in the last plugin Envoy, which has a second listener without the filter in front of the
   same upstream, measures the added latency (p50/p90/p99/mean) and Envoy CPU per request (HTTP)
   or per connection (TCP) in interleaved blocks (:mod:`.load`), and the RSS after that load.

The result is a plain dict (what ``--json`` prints); :func:`to_text` renders the table.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import envoy as E
from ..wasm_file import filter_type as decide_filter_type
from . import load, procfs, starts
from .modules import SIZE_PARTS, section_sizes, size_text, wasm_from_wat
from .stats import ratio
from .upstream import Upstream

__all__ = ["DEFAULTS", "bench_module", "bench_plugin", "to_json_text", "to_text"]

Progress = Callable[[str], None]
Check = Callable[[int, int], None]

#: the defaults of ``pywasm bench`` (documented in docs/workflow.md)
DEFAULTS = {"requests": 20000, "block": 200, "warmup": 1000, "starts": 3, "concurrency": 1,
            "path": "/bench"}
PLUGIN_NAME = VM_ID = "pywasm"


def bench_plugin(plugin: str | os.PathLike[str], *, filter_type: str | None = None,
                 progress: Progress | None = None, **options: Any) -> dict[str, Any]:
    """Build ``plugin`` if needed (a ``.py``, a folder, a ``.wasm``, or a ``.wat``), then
    :func:`bench_module` it. ``filter_type`` ("http"/"network") overrides the exports' verdict."""
    from ..run import cached_build  # the build toolchain only when a plugin is benchmarked

    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="pywasm-bench-") as tmp:
        source: str | os.PathLike[str] = plugin
        if str(plugin).endswith(".wat"):
            source = wasm_from_wat(plugin, tmp)
        wasm, callbacks = cached_build(source, say)
        kind = decide_filter_type(callbacks or [], filter_type, source=str(plugin))
        result = bench_module(wasm, filter_type=kind, progress=say, **options)
    result["plugin"] = str(plugin)
    return result


def bench_module(wasm: str | os.PathLike[str], *, filter_type: str = "http", config: bytes | str = b"",
                 requests: int = DEFAULTS["requests"], block: int = DEFAULTS["block"],
                 warmup: int = DEFAULTS["warmup"], starts_per_variant: int = DEFAULTS["starts"],
                 concurrency: int = DEFAULTS["concurrency"], path: str = DEFAULTS["path"],
                 headers: dict[str, str] | None = None, check: Check | None = None,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Measure the module ``wasm`` against the same Envoy without it (see the module docstring).

    ``check(filter_port, baseline_port)``, if given, runs before the load and raises if the
    plugin does not do its job (a benchmark of a plugin that does nothing measures nothing).
    """
    if filter_type not in ("http", "network"):
        raise ValueError(f"filter_type {filter_type!r}: expected http or network")
    if requests < 1 or block < 1 or warmup < 0 or starts_per_variant < 1 or concurrency < 1:
        raise ValueError("requests, block, starts and concurrency must be positive, warmup not negative")
    say = progress or (lambda _m: None)
    t0 = time.monotonic()
    tcp = filter_type == "network"
    wasm = Path(wasm)
    data = wasm.read_bytes()
    result: dict[str, Any] = {
        "plugin": str(wasm), "wasm": str(wasm), "filter_type": filter_type,
        "unit": "connection" if tcp else "request", "path": None if tcp else path,
        "config": config.decode("utf-8", "replace") if isinstance(config, bytes) else config,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "python": platform.python_version(), "envoy_version": starts.envoy_version(),
        "concurrency": concurrency, "loadavg_before": list(os.getloadavg()),
        "module": {"size": len(data), "sections": section_sizes(data)},
    }
    with Upstream(tcp=tcp) as upstream:
        say(f"upstream ({'TCP echo' if tcp else 'HTTP 200'}) on 127.0.0.1:{upstream.port}, pid {upstream.pid}")

        def bootstrap(module: Path | None) -> Callable[[], dict[str, Any]]:
            return lambda: _bootstrap(module, config, upstream.address, tcp)

        variants = [starts.Variant("no wasm", bootstrap(None)), starts.Variant("plugin", bootstrap(wasm))]
        samples, envoy = starts.start_rounds(variants, starts_per_variant, concurrency=concurrency,
                                             keep="plugin", progress=say)
        assert envoy is not None and envoy.pid is not None
        try:
            plugin_start, bare_start = starts.summarise(samples["plugin"]), starts.summarise(samples["no wasm"])
            result["start"] = {"plugin": plugin_start, "no_wasm": bare_start, "added": {
                key: plugin_start[key] - bare_start[key]
                for key in ("ready_seconds", "cpu_seconds", "rss_kb", "hwm_kb")}}
            filter_port, baseline_port = _ports(envoy.config)
            result["check"] = _tcp_check(filter_port, baseline_port) if tcp else \
                _http_check(filter_port, baseline_port, path, headers or {})
            if check is not None:
                check(filter_port, baseline_port)
            clients: list[load.Client]
            if tcp:
                clients = [load.TcpClient(filter_port), load.TcpClient(baseline_port)]
            else:
                clients = [load.HttpClient(filter_port, path, headers),
                           load.HttpClient(baseline_port, path, headers)]
            try:
                figures = load.measure_interleaved(envoy.pid, clients, count=requests, block=block,
                                                   warmup=warmup, other_pids=[upstream.pid],
                                                   progress=say)
            finally:
                for c in clients:
                    c.close()
            figures["added"] = {key: figures["filter"][key] - figures["baseline"][key]
                                for key in figures["filter"]}
            figures[clients[0].outcome_name] = {"filter": clients[0].outcome(),
                                                "baseline": clients[1].outcome()}
            result["load"] = figures
            result["rss_after_load_kb"] = procfs.rss_kb(envoy.pid)["VmRSS"]
        finally:
            envoy.stop()
            say("Envoy stopped")
    result["loadavg_after"] = list(os.getloadavg())
    result["seconds_total"] = time.monotonic() - t0
    return result


def _bootstrap(wasm: Path | None, config: bytes | str, upstream: tuple[str, int], tcp: bool) -> dict[str, Any]:
    """Two listeners, the plugin on the first only; ``wasm=None`` is the same Envoy without wasm."""
    ports = {"listener_port": E.free_port(), "baseline_port": E.free_port(), "admin_port": E.free_port()}
    if tcp:
        return E.tcp_bootstrap(wasm_path=wasm, plugin_config=config, clusters={"upstream": upstream},
                               default_cluster="upstream", plugin_name=PLUGIN_NAME, vm_id=VM_ID, **ports)
    return E.http_bootstrap(wasm_path=wasm, plugin_config=config, upstream=upstream,
                            plugin_name=PLUGIN_NAME, vm_id=VM_ID, **ports)


def _ports(config: dict[str, Any]) -> tuple[int, int]:
    """(filter listener port, baseline listener port) of a bootstrap from :func:`_bootstrap`."""
    listeners = config["static_resources"]["listeners"]
    return (listeners[0]["address"]["socket_address"]["port_value"],
            listeners[1]["address"]["socket_address"]["port_value"])


def _http_check(filter_port: int, baseline_port: int, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """One request to each listener: the statuses, and the response headers the plugin added or
    removed (by name), so the table shows that the plugin did something."""
    f_status, f_headers, _ = E.http_request(filter_port, path, headers=headers)
    b_status, b_headers, _ = E.http_request(baseline_port, path, headers=headers)
    return {"filter_status": f_status, "baseline_status": b_status,
            "headers_added": sorted(set(f_headers) - set(b_headers)),
            "headers_removed": sorted(set(b_headers) - set(f_headers))}


def _tcp_check(filter_port: int, baseline_port: int) -> dict[str, Any]:
    """One connection to each listener: did the line come back through the echo upstream?"""
    def echoed(port: int) -> bool:
        try:
            return load.TcpClient(port).exchange() == load.TCP_MESSAGE
        except OSError:
            return False

    result = {"filter_echoed": echoed(filter_port), "baseline_echoed": echoed(baseline_port)}
    if not result["baseline_echoed"]:
        raise E.EnvoyError("the listener without the plugin did not echo through the upstream")
    return result


# ------------------------------------------------------------------------------ the outputs

def to_json_text(result: dict[str, Any]) -> str:
    """The result as JSON; a figure that could not be computed (NaN) is ``null``, so any JSON
    parser reads it."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(result), indent=2)


def finish_run(result: dict[str, Any], started: float, json_path: Path | None,
               say: Callable[[str], None], render: Callable[[dict[str, Any]], str]) -> int:
    """The end every benchmark script shares: the run's load average and duration recorded,
    every figure written to ``json_path`` when given, the table (``render(result)``) printed.
    Returns 0."""
    result["loadavg_after"] = list(os.getloadavg())
    result["seconds_total"] = time.monotonic() - started
    if json_path:
        json_path.write_text(to_json_text(result) + "\n")
        say(f"wrote {json_path}")
    say(f"done in {result['seconds_total']:.0f} s")
    print(render(result), flush=True)
    return 0


def _mb(kb: float) -> float:
    return kb / 1e3


def to_text(r: dict[str, Any]) -> str:
    """The table ``pywasm bench`` prints at the end."""
    lines: list[str] = []
    add = lines.append
    unit = r["unit"]
    kind = "network (TCP) filter" if r["filter_type"] == "network" else "HTTP filter"
    add(f"pywasm bench: {r['plugin']} ({kind}); Envoy {r['envoy_version']}, --concurrency "
        f"{r['concurrency']}; {r['machine']}; {r['date']}")
    sec = r["module"]["sections"]
    add(f"module {size_text(sec['total'])}: " + ", ".join(f"{p} {size_text(sec[p])}" for p in SIZE_PARTS))
    add("")
    w = 13

    def head(a: str, b: str) -> None:
        add(f"{'':26}{a:>{w}}{b:>{w}}{'added':>{w}}{'ratio':>{w - 4}}")

    def row(label: str, a: float, b: float, fmt: str) -> None:
        add(f"{label:26}{a:>{w}{fmt}}{b:>{w}{fmt}}{a - b:>+{w}{fmt}}{ratio(a, b):>{w - 5}.2f}x")

    st = r["start"]
    p, n = st["plugin"], st["no_wasm"]
    add(f"Envoy start, median of {len(p['starts'])} (interleaved with as many starts without wasm):")
    head("with plugin", "no wasm")
    row("start to ready (s)", p["ready_seconds"], n["ready_seconds"], ".2f")
    row("Envoy CPU to start (s)", p["cpu_seconds"], n["cpu_seconds"], ".2f")
    row("RSS after start (MB)", _mb(p["rss_kb"]), _mb(n["rss_kb"]), ".1f")
    row("peak RSS, VmHWM (MB)", _mb(p["hwm_kb"]), _mb(n["hwm_kb"]), ".1f")
    add(f"{'':26}each start to ready (s): plugin "
        + ", ".join(f"{s['ready_seconds']:.2f}" for s in p["starts"]) + "; no wasm "
        + ", ".join(f"{s['ready_seconds']:.2f}" for s in n["starts"]))
    add(f"{'':26}RSS of the plugin Envoy after the load: {_mb(r['rss_after_load_kb']):.1f} MB")
    add("")
    lo = r["load"]
    how = (f"sequential keep-alive GETs of {r['path']}" if unit == "request"
           else "sequential connections: connect, one line echoed, the upstream closes")
    add(f"per {unit}: one Envoy, a listener with the plugin and one without, {lo['count']} "
        f"{unit}s each in interleaved blocks of {lo['block']} ({how}):")
    head("with plugin", "without")
    f, b = lo["filter"], lo["baseline"]
    for key, label in (("p50_us", "latency p50 (us)"), ("p90_us", "latency p90 (us)"),
                       ("p99_us", "latency p99 (us)"), ("mean_us", "latency mean (us)"),
                       ("cpu_us", f"Envoy CPU/{unit} (us)"), ("cpu_ticks_us", "  same, from ticks (us)")):
        row(label, f[key], b[key], ".1f")
    pairs = lo["added_p50_block_pairs_us"]
    add(f"added p50 per block pair: median {pairs['median']:+.1f} us, "
        f"IQR [{pairs['q25']:+.1f}, {pairs['q75']:+.1f}] us over {pairs['pairs']} pairs")
    add(_check_line(r))
    noise = lo["noise"]
    add(f"noise: during the {noise['seconds']:.0f} s load other processes used "
        f"{noise['other_processes_cores']:.2f} cores, steal {noise['steal_cores']:.2f} cores; load "
        f"average {r['loadavg_before'][0]:.2f} before, {r['loadavg_after'][0]:.2f} after; "
        f"whole run {r['seconds_total']:.0f} s")
    if noise["other_processes_cores"] > 0.2:
        add("        the machine was busy: compare the added figures, not the absolute ones, "
            "and repeat on a quiet machine")
    return "\n".join(lines)


def _check_line(r: dict[str, Any]) -> str:
    c = r["check"]
    if r["filter_type"] == "network":
        if c["filter_echoed"]:
            return "check: the line came back through both listeners"
        return ("check: the line did NOT come back unchanged through the plugin's listener "
                f"({r['load']['incomplete_echoes']['filter']} incomplete echoes during the load)")
    parts = [f"check: status {c['filter_status']} with the plugin, {c['baseline_status']} without"]
    if c["headers_added"]:
        parts.append(f"response headers added: {', '.join(c['headers_added'])}")
    if c["headers_removed"]:
        parts.append(f"removed: {', '.join(c['headers_removed'])}")
    if not c["headers_added"] and not c["headers_removed"] and c["filter_status"] == c["baseline_status"]:
        parts.append("no response header added or removed")
    return "; ".join(parts)
