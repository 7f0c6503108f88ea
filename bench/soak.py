"""Soak: every example in a real Envoy for a million requests (or connections), memory watched.

    python bench/soak.py [--example NAME ...] [--requests 1000000] [--json out.json]

(from the repository root, with this checkout importable). For each example, two Envoys run side
by side with the same listener, the same helper services and the same traffic: one with the
plugin, one without any wasm (the baseline). Load goes to them in interleaved blocks (ABBA BAAB
...: drift of the machine falls on both alike), and after every block the benchmark reads each
Envoy's RSS (VmRSS, /proc) and its heap in use (tcmalloc's ``server.memory_allocated``: RSS without the wasm
VMs' linear memory, V8's code and freed pages; Envoy 1.40 does not publish a VM's linear memory
size). Every answer is checked against the example's designed one; a run with unexpected
answers says so and exits 1.

Reported per example, after the warm-up (``--warmup``, default 100,000 per Envoy): RSS growth per
100,000 requests for each Envoy (least-squares slope over the blocks), the same for the heap,
and RSS at the end of the warm-up and of the run. The target: no growth beyond the baseline's.

The load: HTTP examples get keep-alive GETs on ``--connections`` connections (8), one request in
flight on each; network examples get one connection per exchange (connect, a line, its echo,
close). The generator is ``wrk`` when it is installed (``--generator wrk``; a Debian package, not
on PyPI) for HTTP examples, else the Python one (pywasm_sdk/tooling/bench/flood.py), which
says so in the report: on 2 cores it shares the machine with Envoy and the services, so the run
takes longer, but the answers are checked one by one. Helper services that an example calls
(its ``services.py``) run as their own processes, as its README runs them.

Everything is on 127.0.0.1; every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pywasm_sdk.tooling import envoy as E  # noqa: E402
from pywasm_sdk.tooling.bench import flood, procfs, starts  # noqa: E402
from pywasm_sdk.tooling.bench.stats import block_order  # noqa: E402
from pywasm_sdk.tooling.bench.upstream import Upstream  # noqa: E402

EXAMPLES = REPO / "examples"
T0 = time.monotonic()
MESSAGE = b"pywasm soak: one line through the filter and back\n"


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ helper services

class Script:
    """An example's ``services.py`` as its own process (its README's local run), stopped by PID.
    Its output goes to a file (a proxy that prints every tunnel must never block on a pipe)."""

    def __init__(self, example: str, args: list[str], folder: Path) -> None:
        self.log = folder / f"{example}-services.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, str(EXAMPLES / example / "services.py"), *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.log.read_text(errors="replace").strip():  # its first line: it is serving
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"examples/{example}/services.py did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


# ------------------------------------------------------------------------------ the examples

@dataclass
class Setup:
    """One example ready to soak: the two bootstraps and how to load a listener."""

    with_plugin: dict[str, Any]
    without: dict[str, Any]
    load: Callable[[int, bool], Any]  # (listener port, with the plugin) -> a generator
    answer: str  # what every answer must be, in words
    stop: list[Callable[[], None]] = field(default_factory=list)


def _http(wasm: Path | None, port: int, upstream: tuple[str, int], *, config: str = "", env: dict[str, str] | None = None,
          clusters: dict[str, tuple[str, int]] | None = None) -> dict[str, Any]:
    return E.http_bootstrap(wasm_path=wasm, plugin_config=config, listener_port=port, upstream=upstream,
                            admin_port=E.free_port(), env=env, extra_clusters=clusters,
                            plugin_name="soak", vm_id="soak")


def _http_load(args: argparse.Namespace, path: str, headers: dict[str, str], status: int,
               in_head: tuple[bytes, ...] = ()) -> Callable[[int, bool], Any]:
    """Keep-alive GETs; every answer must have ``status``, and with the plugin ``in_head`` too."""
    def make(port: int, plugin: bool) -> Any:
        if args.generator == "wrk":
            return flood.WrkFlood(port, path, headers, connections=args.connections)
        return flood.HttpFlood(port, flood.HttpFlood.get(path, headers), connections=args.connections,
                               expect_status=status, expect_in_head=in_head if plugin else ())
    return make


def setup_http_headers(wasm: Path, args: argparse.Namespace, folder: Path) -> Setup:
    upstream = Upstream()
    port = (E.free_port(), E.free_port())
    config = "x-served-by=pywasm-soak\nx-frame-options=DENY"
    return Setup(_http(wasm, port[0], upstream.address, config=config), _http(None, port[1], upstream.address),
                 _http_load(args, "/soak", {}, 200, (b"\r\nx-served-by: pywasm-soak",)),
                 "200 from the upstream with x-served-by added", [upstream.stop])


def setup_authz(wasm: Path, args: argparse.Namespace, folder: Path) -> Setup:
    upstream = Upstream()
    authz_port = E.free_port()
    service = Script("authz", ["--authz-port", str(authz_port), "--backend-port", str(E.free_port())], folder)
    clusters = {"authz": ("127.0.0.1", authz_port)}
    config = json.dumps({"cluster": "authz", "timeout_ms": 5000})
    return Setup(_http(wasm, E.free_port(), upstream.address, config=config, clusters=clusters),
                 _http(None, E.free_port(), upstream.address, clusters=clusters),
                 _http_load(args, "/soak", {"authorization": "Bearer alice-token"}, 200, ()),
                 "200 from the upstream, each request checked with the authorization service",
                 [upstream.stop, service.stop])


def setup_payload_masking(wasm: Path, args: argparse.Namespace, folder: Path) -> Setup:
    interceptor, api = E.free_port(), E.free_port()
    service = Script("payload_masking", ["--interceptor-port", str(interceptor), "--api-port", str(api)], folder)
    env = {"INTERCEPTOR_CLUSTER": "interceptor", "INTERCEPTOR_API_KEY": "demo-key",
           "INTERCEPTOR_CLIENT_ID": "demo-client", "INTERCEPTOR_CLIENT_SECRET": "demo-secret",
           "INTERCEPTOR_TIMEOUT_MS": "5000"}
    clusters = {"interceptor": ("127.0.0.1", interceptor)}
    api_address = ("127.0.0.1", api)
    return Setup(_http(wasm, E.free_port(), api_address, env=env, clusters=clusters),
                 _http(None, E.free_port(), api_address, clusters=clusters),
                 _http_load(args, "/customers", {}, 200, ()),
                 "200, the customers' JSON masked by the interceptor (the plugin) or as is (baseline)",
                 [service.stop])


def setup_rate_limit(wasm: Path, args: argparse.Namespace, folder: Path) -> Setup:
    upstream = Upstream()
    # a limit no run reaches: every request takes a token (compare-and-swap in shared data)
    config = json.dumps({"key": "source_ip", "max_tokens": 1_000_000_000,
                         "tokens_per_fill": 1_000_000_000, "fill_interval_ms": 1})
    return Setup(_http(wasm, E.free_port(), upstream.address, config=config),
                 _http(None, E.free_port(), upstream.address),
                 _http_load(args, "/soak", {}, 200, ()), "200 from the upstream (a token taken per request)",
                 [upstream.stop])


def setup_tcp_egress(wasm: Path, args: argparse.Namespace, folder: Path) -> Setup:
    echo = Upstream(tcp=True)
    clusters = {"egress-router1": echo.address, "egress-router2": echo.address, "upstream": echo.address}

    def bootstrap(module: Path | None) -> dict[str, Any]:
        return E.tcp_bootstrap(wasm_path=module, listener_port=E.free_port(), admin_port=E.free_port(),
                               clusters=clusters, default_cluster="upstream", plugin_name="soak", vm_id="soak")

    def load(port: int, plugin: bool) -> flood.TcpFlood:  # an even and an odd last octet: both routers
        return flood.TcpFlood(port, MESSAGE, MESSAGE, sources=("127.0.0.2", "127.0.0.3"),
                              connections=args.connections)

    return Setup(bootstrap(wasm), bootstrap(None), load,
                 "the line echoed through egress-router1 or -2 (the plugin) or the default cluster",
                 [echo.stop])


def setup_egress_tunnel(wasm: Path, args: argparse.Namespace, folder: Path) -> Setup:
    from tests.test_examples_helpers import local_envoy_config, wasm_plugin_configs  # the example's envoy.yaml

    ports = {"listen": E.free_port(), "proxy-a": E.free_port(), "proxy-b": E.free_port(), "direct": E.free_port()}
    service = Script("egress_tunnel", ["--listen-port", str(ports["listen"]), "--proxy-a-port", str(ports["proxy-a"]),
                                       "--proxy-b-port", str(ports["proxy-b"]), "--direct-port", str(ports["direct"])],
                     folder)
    clusters = {name: ("127.0.0.1", ports[name]) for name in ("direct", "proxy-a", "proxy-b")}

    def bootstrap(module: Path | None) -> dict[str, Any]:
        config = local_envoy_config("egress_tunnel", wasm, listeners={"egress": ports["listen"]},
                                    admin_port=E.free_port(), clusters=clusters)
        listener = config["static_resources"]["listeners"][0]
        listener["enable_reuse_port"] = False
        filters = listener["filter_chains"][0]["filters"]
        if module is None:  # the same tunnel through proxy-a, without the plugin choosing it
            filters[:] = [f for f in filters if f["name"] != "envoy.filters.network.wasm"]
            filters[0]["typed_config"]["cluster"] = "proxy-a"
        else:
            plugin = wasm_plugin_configs(config)[0]
            plugin["name"] = plugin["vm_config"]["vm_id"] = "soak"
            plugin["configuration"] = E.any_value(json.dumps(
                {"routes": [{"destination": "127.0.0.10", "tunnel": "proxy-a"}], "default": {"direct": True}}))
        return config

    # the two Envoys cannot both listen on 127.0.0.10:port: the baseline gets a port of its own
    # and asks proxy-a for the same destination by name
    with_plugin = bootstrap(wasm)
    without = bootstrap(None)
    base_port = E.free_port()
    listener = without["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = base_port
    for extra in listener.get("additional_addresses", []):
        extra["address"]["socket_address"]["port_value"] = base_port
    listener["filter_chains"][0]["filters"][0]["typed_config"]["tunneling_config"]["hostname"] = \
        f"127.0.0.10:{ports['listen']}"
    greeting = f"hello from 127.0.0.10:{ports['listen']}\n".encode()

    def load(port: int, plugin: bool) -> flood.TcpFlood:
        return flood.TcpFlood(port, MESSAGE, greeting + MESSAGE, destination="127.0.0.10",
                              connections=args.connections)

    return Setup(with_plugin, without, load, "the destination's greeting and the line echoed, through proxy-a",
                 [service.stop])


SETUPS: dict[str, Callable[[Path, argparse.Namespace, Path], Setup]] = {
    "http_headers": setup_http_headers, "authz": setup_authz, "payload_masking": setup_payload_masking,
    "rate_limit": setup_rate_limit, "tcp_egress": setup_tcp_egress, "egress_tunnel": setup_egress_tunnel,
}


# ------------------------------------------------------------------------------ measuring

def listener_port(config: dict[str, Any]) -> int:
    return int(config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"])


def heap_bytes(envoy: E.Envoy) -> int:
    """Envoy's heap in use (tcmalloc's ``server.memory_allocated``): RSS without the wasm VMs'
    linear memory, V8's code and what tcmalloc keeps free, so it says where a growth is."""
    text = envoy.admin_get("/stats?filter=^server\\.memory_allocated$")
    return int(text.split(": ", 1)[1])


def slope_per_100k(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of value against requests, per 100,000 requests (NaN with < 2 points)."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 100_000


def soak(name: str, wasm: Path, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    setup = SETUPS[name](wasm, args, folder)
    result: dict[str, Any] = {"example": name, "answer": setup.answer, "generator": args.generator}
    envoys: list[E.Envoy] = []
    loads: list[Any] = []
    try:
        for which, config in (("plugin", setup.with_plugin), ("no wasm", setup.without)):
            say(f"{name}: starting Envoy {which}")
            envoy = starts.quiet_envoy(config, args.concurrency, say).start()
            envoys.append(envoy)
            loads.append(setup.load(listener_port(config), which == "plugin"))
        pids = [e.pid for e in envoys if e.pid is not None]
        blocks_each = max(1, math.ceil(args.requests / args.block))
        order = block_order(blocks_each)
        totals = [flood.FloodResult(), flood.FloodResult()]
        samples: list[list[dict[str, Any]]] = [[], []]
        noise = procfs.Noise(pids)
        say(f"{name}: {blocks_each} blocks of {args.block} per Envoy, interleaved, with the {args.generator} generator")
        last = time.monotonic()
        for n, which in enumerate(order):
            got = loads[which].run(args.block)
            totals[which].add(got)
            for index, envoy in enumerate(envoys):  # both, after every block: the idle one drifts too
                assert envoy.pid is not None
                samples[index].append({"requests": totals[index].done,
                                       "rss_kb": procfs.rss_kb(envoy.pid)["VmRSS"], "heap_bytes": heap_bytes(envoy)})
            if time.monotonic() - last > 10:
                done = totals[0].done + totals[1].done
                say(f"  {n + 1}/{len(order)} blocks, {done:,} exchanges; RSS with the plugin "
                    f"{samples[0][-1]['rss_kb'] / 1e3:.1f} MB, without {samples[1][-1]['rss_kb'] / 1e3:.1f} MB; "
                    f"unexpected answers {totals[0].unexpected + totals[1].unexpected}")
                last = time.monotonic()
        result["noise"] = noise.result()
        for index, key in enumerate(("plugin", "no_wasm")):
            points = [s for s in samples[index] if s["requests"] >= args.warmup]
            figures: dict[str, Any] = {
                "requests": totals[index].done, "seconds": totals[index].seconds,
                "rate_per_s": totals[index].done / totals[index].seconds if totals[index].seconds else math.nan,
                "unexpected": totals[index].unexpected, "errors": totals[index].errors,
                "unexpected_examples": [e.decode("latin-1") for e in totals[index].examples],
                "rss_kb_after_warmup": points[0]["rss_kb"] if points else None,
                "rss_kb_end": samples[index][-1]["rss_kb"],
                "rss_growth_kb_per_100k": slope_per_100k([(s["requests"], s["rss_kb"]) for s in points]),
                "heap_growth_bytes_per_100k": slope_per_100k([(s["requests"], s["heap_bytes"]) for s in points]),
                "samples": samples[index]}
            result[key] = figures
    finally:
        for load in loads:
            load.close()
        for envoy in envoys:
            envoy.stop()
        for stop in setup.stop:
            stop()
    return result


# ------------------------------------------------------------------------------ report

def report(results: dict[str, Any]) -> str:
    lines = [f"pywasm soak ({results['date']}, {results['machine']}, Envoy {results['envoy_version']}, "
             f"--concurrency {results['concurrency']}; load: {results['generator_note']})",
             f"warm-up: the first {results['warmup']:,} per Envoy; growth is the least-squares slope "
             "over the blocks after it", ""]
    head = f"{'example':16}{'Envoy':9}{'done':>11}{'per s':>8}{'RSS after warm-up':>19}{'RSS end':>9}" \
           f"{'RSS/100k':>11}{'heap/100k':>12}{'wrong':>7}{'failed':>8}"
    lines.append(head)
    lines.append(f"{'':16}(wrong: an answer other than the designed one; failed: a connection refused, "
                 "reset or closed without an answer)")
    for r in results["examples"]:
        if "error" in r:
            lines.append(f"{r['example']:16}not soaked: {r['error']}")
            continue
        for key, label in (("plugin", "plugin"), ("no_wasm", "no wasm")):
            f = r[key]
            after = f["rss_kb_after_warmup"]
            heap = f["heap_growth_bytes_per_100k"]
            heap_text = "n/a" if math.isnan(heap) else f"{heap / 1e3:+.1f} kB"
            lines.append(f"{r['example'] if key == 'plugin' else '':16}{label:9}{f['requests']:>11,}"
                         f"{f['rate_per_s']:>8,.0f}"
                         f"{(f'{after / 1e3:.1f} MB' if after else 'n/a'):>19}{f['rss_kb_end'] / 1e3:>6.1f} MB"
                         f"{f['rss_growth_kb_per_100k'] / 1e3:>+8.2f} MB{heap_text:>12}"
                         f"{f['unexpected']:>7}{f['errors']:>8}")
        noise = r["noise"]
        lines.append(f"{'':16}answers: {r['answer']}; other processes {noise['other_processes_cores']:.2f} "
                     f"cores, steal {noise['steal_cores']:.2f}, {noise['seconds']:.0f} s")
    return "\n".join(lines)


def main() -> int:
    known = sorted(p.name for p in EXAMPLES.iterdir() if (p / "plugin.py").exists())
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--example", action="append", choices=known,
                        help="an example to soak (repeatable; default: every example)")
    parser.add_argument("--requests", type=int, default=1_000_000,
                        help="requests (HTTP) or connections (TCP) per Envoy, rounded up to blocks (default 1000000)")
    parser.add_argument("--block", type=int, default=50_000, help="per block (default 50000)")
    parser.add_argument("--warmup", type=int, default=100_000,
                        help="requests per Envoy before growth is counted (default 100000)")
    parser.add_argument("--connections", type=int, default=8, help="connections in flight (default 8)")
    parser.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads (default 1)")
    parser.add_argument("--generator", choices=("python", "wrk"),
                        help="load generator for HTTP examples (default: wrk when installed, else python)")
    parser.add_argument("--json", type=Path, help="also write every figure, and every sample, here")
    args = parser.parse_args()
    if min(args.requests, args.block, args.connections, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--requests, --block, --connections and --concurrency must be positive, --warmup not negative")
    wrk = flood.wrk_available()
    if args.generator is None:
        args.generator = "wrk" if wrk else "python"
    if args.generator == "wrk" and not wrk:
        parser.error("--generator wrk: wrk is not installed (apt install wrk); the python generator needs nothing")
    note = (f"wrk ({wrk}) for HTTP, the Python generator for TCP" if args.generator == "wrk" else
            "the Python generator (wrk is not installed)" if not wrk else "the Python generator")
    say(f"load: {note}")
    from pywasm_sdk.tooling.run import cached_build  # the build toolchain, only here

    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "python": platform.python_version(), "envoy_version": starts.envoy_version(),
        "concurrency": args.concurrency, "requests": args.requests, "block": args.block, "warmup": args.warmup,
        "connections": args.connections, "generator_note": note, "loadavg_before": list(os.getloadavg()),
        "examples": []}
    failed = False
    with tempfile.TemporaryDirectory(prefix="pywasm-soak-") as tmp:
        for name in args.example or known:
            if name not in SETUPS:
                say(f"{name}: no soak set-up in bench/soak.py (SETUPS): not soaked")
                results["examples"].append({"example": name, "error": "no set-up in bench/soak.py"})
                failed = True
                continue
            wasm, _ = cached_build(EXAMPLES / name, lambda m: say(f"  build: {m}"))
            item = soak(name, wasm, args, Path(tmp))
            item["generator"] = args.generator if SETUPS[name] not in (setup_tcp_egress, setup_egress_tunnel) else "python"
            results["examples"].append(item)
            failed |= any(item[k]["unexpected"] for k in ("plugin", "no_wasm"))
    results["loadavg_after"] = list(os.getloadavg())
    results["seconds_total"] = time.monotonic() - T0
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=lambda v: None) + "\n")
        say(f"wrote {args.json}")
    print(report(results), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
