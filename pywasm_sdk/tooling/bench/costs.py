"""Where a Python plugin's per-request time goes: generated plugin variants and their differences.

bench/costs.py measures small HTTP plugins that differ in one thing each, side by side in one
Envoy, and reads the cost of that one thing off the difference of their Envoy CPU per request.
This module holds what does not need an Envoy: the variants (each a *stage*, written twice:
as a Python plugin and as a hand-written WAT twin that does the same with no interpreter), the
costs as differences of stages, their computation, and the text report.

The WAT twin of every stage is what makes a difference readable: Envoy's own work for one more
exported callback or one more hostcall (V8 calling in, the host function) is the WAT family's
difference; Python's difference minus it is what the interpreter, the SDK and the bridge add.

No I/O here except :func:`wasmtime_rounds`, the optional cross-check in wasmtime (the mock host
runs each module in this process).
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .stats import mean_error, round_order

__all__ = ["COSTS", "FAMILIES", "NONE", "REFERENCE", "STAGES", "Cost", "Stage", "decompose",
           "decompose_rounds", "expected_headers", "python_source", "to_text", "variant_names",
           "wasmtime_rounds", "wat_source"]

#: the variant without any wasm filter, and bench/reference_filter.wat (add one header by hand)
NONE, REFERENCE = "none", "reference"
#: the two implementations of every stage: the Python plugin (built by ``pywasm build``) and its
#: hand-written WAT twin
FAMILIES = ("py", "wat")
HEADER_VALUE = "1"


@dataclass(frozen=True)
class Stage:
    """One variant of the plugin: which stream callbacks it implements, how many headers it adds
    in on_response_headers (each a ``response_headers.add`` hostcall)."""

    key: str
    label: str
    callbacks: tuple[str, ...]  # "request", "response": on_<which>_headers
    adds: int = 0


STAGES = (
    Stage("lifecycle", "an HTTP context that implements no callback", ()),
    Stage("one", "an empty on_response_headers", ("response",)),
    Stage("two", "empty on_request_headers and on_response_headers", ("request", "response")),
    Stage("add1", "on_response_headers adding 1 header", ("response",), 1),
    Stage("add5", "on_response_headers adding 5 headers", ("response",), 5),
)


@dataclass(frozen=True)
class Cost:
    """A cost per request: (stage ``plus`` - stage ``minus``) / ``per``; ``minus`` may be
    :data:`NONE` (no wasm at all)."""

    key: str
    label: str
    plus: str
    minus: str
    per: int = 1


COSTS = (
    Cost("module", "a stream through the module, no callback of the plugin's own "
         "(create and delete exported)", "lifecycle", NONE),
    Cost("first_entry", "the first callback of a stream (Python: the context is made, one entry, "
         "its delete batched)", "one", "lifecycle"),
    Cost("entry", "each further exported callback (Python: one more entry)", "two", "one"),
    Cost("first_hostcall", "the first hostcall (response_headers.add, the map object included)",
         "add1", "one"),
    Cost("hostcall", "each further hostcall (slope from 1 to 5 adds)", "add5", "add1", 4),
    Cost("job", "the whole job, add one response header (= module + first entry + first "
         "hostcall)", "add1", NONE),
)


def variant_names() -> list[str]:
    """Every variant of a run, in the order of the report: none, reference, then each family."""
    return [NONE, REFERENCE, *(f"{family}:{stage.key}" for family in FAMILIES for stage in STAGES)]


def _header_name(n: int) -> str:
    return f"x-cost-{n}"  # all the same length: every add passes the same number of bytes


def expected_headers(variant: str) -> list[str]:
    """The response headers a variant adds (what the run checks before it measures)."""
    if variant == NONE:
        return []
    if variant == REFERENCE:
        return ["x-served-by"]
    stage = _stage(variant.partition(":")[2])
    return [_header_name(n) for n in range(1, stage.adds + 1)]


def _stage(key: str) -> Stage:
    for stage in STAGES:
        if stage.key == key:
            return stage
    raise ValueError(f"no stage {key!r}; stages: {', '.join(s.key for s in STAGES)}")


def python_source(stage: Stage) -> str:
    """The Python plugin of ``stage``."""
    lines = [f'"""bench/costs.py variant py:{stage.key}: {stage.label}."""', "",
             "from pywasm_sdk import HttpContext, RootContext, register", "", "",
             "class Stream(HttpContext):"]
    if "request" in stage.callbacks:
        lines += ["    def on_request_headers(self, num_headers, end_of_stream):", "        pass", ""]
    if "response" in stage.callbacks:
        lines.append("    def on_response_headers(self, num_headers, end_of_stream):")
        if stage.adds:
            lines.append("        headers = self.response_headers")
            lines += [f'        headers.add("{_header_name(n)}", "{HEADER_VALUE}")'
                      for n in range(1, stage.adds + 1)]
        else:
            lines.append("        pass")
        lines.append("")
    if not stage.callbacks:
        lines += ["    pass", ""]
    lines += ["", "class Root(RootContext):", "    http_context = Stream", "", "",
              "register(Root)", ""]
    return "\n".join(lines)


def wat_source(stage: Stage) -> str:
    """The WAT twin of ``stage``: the same exports (create and delete, the stream callbacks) and
    hostcalls, no SDK, no interpreter."""
    names = "".join(_header_name(n) for n in range(1, 6))
    name_at, value_at = 16, 16 + len(names)
    body = []
    if "request" in stage.callbacks:
        body.append('  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)\n'
                    "    (i32.const 0))")
    if "response" in stage.callbacks:
        adds = "".join(
            f"\n    (drop (call $add (i32.const 2) (i32.const {name_at + 8 * (n - 1)}) (i32.const 8)"
            f" (i32.const {value_at}) (i32.const {len(HEADER_VALUE)})))"
            for n in range(1, stage.adds + 1))
        body.append('  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)'
                    f"{adds}\n    (i32.const 0))")
    return "\n".join([
        f";; bench/costs.py variant wat:{stage.key}: {stage.label} (the twin of py:{stage.key})",
        "(module",
        '  (import "env" "proxy_add_header_map_value"',
        "    (func $add (param i32 i32 i32 i32 i32) (result i32)))",
        '  (memory (export "memory") 1)',
        f'  (data (i32.const {name_at}) "{names}{HEADER_VALUE}")',
        '  (func (export "proxy_abi_version_0_2_1"))',
        '  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))',
        '  (func (export "proxy_on_context_create") (param i32 i32))',
        '  (func (export "proxy_on_delete") (param i32))',
        *body, ")", ""])


# ------------------------------------------------------------------------------ the arithmetic

def _family_cost(values: Mapping[str, float], family: str, cost: Cost) -> float:
    def value(stage: str) -> float:
        return values[NONE] if stage == NONE else values[f"{family}:{stage}"]

    return (value(cost.plus) - value(cost.minus)) / cost.per


def decompose(values: Mapping[str, float]) -> dict[str, Any]:
    """Every cost of :data:`COSTS` from per-variant figures (us per request, keyed by variant
    name): ``{cost: {"py": ..., "wat": ..., "python_own": py - wat}}``, and ``reference``, the
    reference filter's figure over no wasm."""
    out: dict[str, Any] = {}
    for cost in COSTS:
        py, wat = (_family_cost(values, family, cost) for family in FAMILIES)
        out[cost.key] = {"py": py, "wat": wat, "python_own": py - wat}
    out[REFERENCE] = values[REFERENCE] - values[NONE]
    return out


def decompose_rounds(rounds: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """How far each cost can be trusted: per round, the same differences of that round's blocks
    (one per variant), then their mean and its standard error (:func:`.stats.mean_error`).
    ``rounds`` maps each variant to its per-round figures. With blocks of equal size the mean
    over rounds is :func:`decompose` of the whole run's figures."""
    count = min(len(v) for v in rounds.values())
    per_round = [decompose({name: series[r] for name, series in rounds.items()}) for r in range(count)]
    out: dict[str, Any] = {}
    for cost in COSTS:
        out[cost.key] = {part: mean_error([d[cost.key][part] for d in per_round])
                         for part in ("py", "wat", "python_own")}
    out[REFERENCE] = mean_error([d[REFERENCE] for d in per_round])
    return out


# ------------------------------------------------------------------------------ wasmtime

def wasmtime_rounds(modules: Mapping[str, Path], *, streams: int, block: int,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The cross-check in wasmtime: the mock host runs each module (by variant name; not
    :data:`NONE`, whose figures are 0) in this process, ``streams`` streams each, in blocks
    interleaved in rounds. A stream is request headers, response headers, the end
    (``proxy_on_log``, ``proxy_on_done``, ``proxy_on_delete`` where exported), as in Envoy.

    Two figures per stream: ``cpu_us``, this process's CPU (the mock host's own Python runs
    around every callback and hostcall, the same for a module and its WAT twin, so only the
    difference of the two means something), and ``fuel``: wasmtime's fuel, about one unit per
    wasm instruction the module ran; independent of the machine's load, and free of the
    host's share. The engine meters fuel throughout, which slows wasm a little: these are not
    wasmtime's best times."""
    from ...testing import MockHost, WasmGuest  # the mock host only for this cross-check
    from ...testing.cache import ModuleCache, default_directory

    say = progress or (lambda _m: None)
    cache = ModuleCache(default_directory() / "fuel-metered", fuel=FUEL)
    guests, hosts = {}, {}
    try:
        for name, path in modules.items():
            say(f"wasmtime: loading {name}")
            guests[name] = WasmGuest(path, cache=cache, name=name)
            hosts[name] = MockHost.from_guest(guests[name])
        for name, host in hosts.items():  # the job is done, as in Envoy
            added = sorted(n for n, _ in one_stream(host) if n.startswith(("x-cost-", "x-served-by")))
            if added != sorted(expected_headers(name)):
                raise RuntimeError(f"wasmtime: {name} added response headers {added}, "
                                   f"expected {expected_headers(name)}")
            for _ in range(40):  # warm-up: past the first batch of deletes
                one_stream(host)
        rounds = math.ceil(streams / block)
        cpu: dict[str, list[float]] = {name: [] for name in hosts}
        fuel: dict[str, list[float]] = {name: [] for name in hosts}
        say(f"wasmtime: {rounds} rounds of {block} streams per variant")
        gc.collect()
        gc.disable()
        try:
            for name in round_order(list(hosts), rounds):
                host, guest = hosts[name], guests[name]
                f0, t0 = guest.fuel_left, time.process_time_ns()
                for _ in range(block):
                    one_stream(host)
                t1, f1 = time.process_time_ns(), guest.fuel_left
                cpu[name].append((t1 - t0) / 1e3 / block)
                fuel[name].append((f0 - f1) / block)  # type: ignore[operator]
        finally:
            gc.enable()
    finally:
        for host in hosts.values():
            host.close()
    cpu[NONE] = fuel[NONE] = [0.0] * rounds
    return {"streams": rounds * block, "block": block,
            "cpu_us": {name: sum(v) / len(v) for name, v in cpu.items()}, "rounds_cpu_us": cpu,
            "fuel": {name: sum(v) / len(v) for name, v in fuel.items()}, "rounds_fuel": fuel}


def wasmtime_profile(wasm: Path, *, streams: int, folder: Path,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A perf profile of ``streams`` streams through ``wasm`` (a ``--debug`` build, whose function
    names are kept) in wasmtime with its perf map on: the module's functions by their share of
    the module's samples, and the module's share of this process's samples (the rest is the mock
    host's Python and wasmtime's runtime)."""
    import os

    import wasmtime

    from ...testing import MockHost, WasmGuest
    from ...testing.cache import ModuleCache
    from . import profile

    say = progress or (lambda _m: None)
    config = wasmtime.Config()
    config.profiler = "perfmap"  # /tmp/perf-PID.map: what perf names JIT code with
    perf_map = Path(f"/tmp/perf-{os.getpid()}.map")
    had_map = perf_map.exists()
    say(f"wasmtime profile: compiling {wasm.name} with the perf map on")
    host = MockHost.from_guest(WasmGuest(wasm, cache=ModuleCache(None, wasmtime.Engine(config))))
    try:
        for _ in range(100):
            one_stream(host)
        say(f"wasmtime profile: perf record of {streams} streams")
        with profile.PerfRecord(os.getpid(), folder / "wasmtime.perf"):
            for _ in range(streams):
                one_stream(host)
        rows = profile.report(folder / "wasmtime.perf")
    finally:
        host.close()
        if not had_map:
            perf_map.unlink(missing_ok=True)
    total = sum(r["samples"] for r in rows)
    module = [r for r in rows if r["dso"].startswith("[JIT]")]
    in_module = sum(r["samples"] for r in module)
    return {"streams": streams, "samples": total, "module_share": in_module / total if total else 0.0,
            "functions": [{"function": r["symbol"], "share": r["samples"] / in_module, "samples": r["samples"]}
                          for r in module[:_PROFILE_ROWS]] if in_module else []}


#: functions listed of a module's profile
_PROFILE_ROWS = 25


#: fuel each instance starts with: far more than any run uses (about 10^5 per stream)
FUEL = 1 << 62


_REQUEST = [(":method", "GET"), (":path", "/bench"), (":authority", "bench"), (":scheme", "http")]
_RESPONSE = [(":status", "200"), ("content-length", "2")]


def one_stream(host: Any) -> list[tuple[str, str]]:
    """One HTTP stream through a mock host as Envoy runs it (request and response headers, the
    end); the response headers it ended with."""
    stream = host.http_stream()
    stream.send_request_headers(_REQUEST, end_of_stream=True)
    stream.send_response_headers(_RESPONSE, end_of_stream=True)
    stream.complete()
    headers: list[tuple[str, str]] = stream.response_headers
    return headers


# ------------------------------------------------------------------------------ the report

def to_text(result: Mapping[str, Any]) -> str:
    """The tables bench/costs.py prints: the costs, then the per-variant figures they came from."""
    lines: list[str] = []
    add = lines.append
    add(f"Where the time goes: Envoy {result['envoy_version']} (V8), --concurrency "
        f"{result['concurrency']}; {result['machine']}; {result['date']}")
    env = result.get("envoy")
    if env:
        add(f"Envoy CPU per request, us; {env['count']} sequential keep-alive GETs per variant in "
            f"rounds of blocks of {env['block']} (all {len(env['variants'])} variants in one Envoy, "
            "a listener and a VM each)")
        add("")
        _costs_table(add, env["costs"], env["costs_rounds"], "Envoy")
        add("")
        add("per variant (what the costs came from):")
        add(f"  {'variant':16}{'CPU/req':>10}{'added':>10}{'p50':>10}{'added p50':>11}  what it does")
        base = env["variants"][NONE]
        for name in variant_names():
            v = env["variants"][name]
            add(f"  {name:16}{v['cpu_us']:>10.1f}{v['cpu_us'] - base['cpu_us']:>+10.1f}"
                f"{v['p50_us']:>10.1f}{v['p50_us'] - base['p50_us']:>+11.1f}  {_what(name)}")
        noise = env["noise"]
        add(f"noise: during the {noise['seconds']:.0f} s load other processes used "
            f"{noise['other_processes_cores']:.2f} cores, steal {noise['steal_cores']:.2f} cores")
        if noise["other_processes_cores"] > 0.2:
            add("        the machine was busy: these figures are a smoke run, not a measurement")
    else:
        add("(no Envoy in this run: --wasmtime-only)")
    add(f"whole run {result['seconds_total']:.0f} s")
    wt = result.get("wasmtime")
    if wt:
        add("")
        add(f"cross-check in WASMTIME, not V8 (the mock host, in this process), {wt['streams']} "
            "streams per variant:")
        add("CPU per stream, us (the mock host's own Python is in both columns: compare 'Python "
            "own' only; fuel metering on):")
        _costs_table(add, wt["costs"], wt["costs_rounds"], "wasmtime", legend=False)
        add("wasm instructions per stream (wasmtime fuel: the module's own work only, whatever the "
            "machine's load):")
        _costs_table(add, wt["costs_fuel"], wt["costs_fuel_rounds"], "instructions",
                     digits=0, legend=False)
    _profile_text(add, result)
    return "\n".join(lines)


def _profile_text(add: Callable[[str], None], result: Mapping[str, Any]) -> None:
    from .profile import CLASSES

    envoy_profile = (result.get("envoy") or {}).get("profile")
    if envoy_profile:
        add("")
        add("profile (perf) of Envoy, CPU per request by where it ran, us: V8's compiled wasm has "
            "no symbols and the envoy binary is stripped, so by binary only")
        add(f"  {'listener':16}{'CPU/req':>9}" + "".join(f"{c:>{max(11, len(c) + 2)}}" for c in CLASSES))
        rows = list(envoy_profile.items())
        for name, prof in rows:
            add(f"  {name:16}{prof['cpu_us']:>9.1f}"
                + "".join(f"{prof['us'][c]:>{max(11, len(c) + 2)}.1f}" for c in CLASSES))
        none = envoy_profile.get(NONE)
        for name, prof in rows:
            if none is not None and name != NONE:
                add(f"  {name + ' - none':16}{prof['cpu_us'] - none['cpu_us']:>+9.1f}"
                    + "".join(f"{prof['us'][c] - none['us'][c]:>+{max(11, len(c) + 2)}.1f}"
                              for c in CLASSES))
    wt = result.get("wasmtime_profile")
    if wt:
        add("")
        add(f"profile (perf) of the module in WASMTIME, not V8 (a --debug build, wasmtime's perf "
            f"map), {wt['streams']} streams: the module's functions by share of its samples "
            f"(the module ran {100 * wt['module_share']:.0f} % of the process's samples; the "
            "rest is the mock host and wasmtime)")
        for row in wt["functions"]:
            add(f"  {100 * row['share']:5.1f} %  {row['function']}")


def _what(name: str) -> str:
    if name == NONE:
        return "no wasm filter"
    if name == REFERENCE:
        return "bench/reference_filter.wat: adds one header, exports no create/delete"
    family, _, key = name.partition(":")
    stage = _stage(key)
    return f"{'Python plugin' if family == 'py' else 'WAT twin'}: {stage.label}"


def _costs_table(add: Callable[[str], None], costs: Mapping[str, Any], spread: Mapping[str, Any],
                 where: str, *, digits: int = 1, legend: bool = True) -> None:
    def cell(value: float, error: Mapping[str, float]) -> str:
        return f"{value:+.{digits}f} ±{2 * error['se']:.{digits}f}"

    w = 16
    add(f"  {'cost, ' + where:16}{'Python':>{w}}{'WAT twin':>{w}}{'Python own':>{w}}"
        + ("   what it is (= difference of variants)" if legend else ""))
    for cost in COSTS:
        c, s = costs[cost.key], spread[cost.key]
        formula = f"{cost.plus} - {cost.minus}" + (f", / {cost.per}" if cost.per != 1 else "")
        add(f"  {cost.key:16}{cell(c['py'], s['py']):>{w}}{cell(c['wat'], s['wat']):>{w}}"
            f"{cell(c['python_own'], s['python_own']):>{w}}"
            + (f"   {cost.label} (= {formula})" if legend else ""))
    add(f"  {REFERENCE:16}{'':>{w}}{cell(costs[REFERENCE], spread[REFERENCE]):>{w}}{'':>{w}}"
        + ("   bench/reference_filter.wat over no wasm" if legend else ""))
    if legend:
        rounds = spread[COSTS[0].key]["py"]["count"]
        add(f"  (± is two standard errors of the mean over {rounds} rounds; 'Python own' = Python - "
            "WAT twin: what the interpreter, the SDK and the bridge add)")
