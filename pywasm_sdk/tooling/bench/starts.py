"""Envoy starts as a measurement: start-to-ready, CPU to start, RSS, and admin ``/memory``.

Start time of a wasm plugin is mostly V8 compiling the module's code (TurboFan, no Liftoff), so
it is both the noisiest figure (it stretches when another process takes a core) and the one
every sidecar pays. Each start therefore records Envoy's own on-CPU time until ready next to
the wall time: CPU time barely moves when the machine is shared, wall time does. Several
variants (no wasm, a reference module, the plugin) are started in interleaved rounds
(:func:`.stats.round_order`) and each figure is the median over the rounds.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..envoy import Envoy, envoy_binary
from . import procfs
from .stats import round_order

__all__ = ["StartSample", "Variant", "envoy_version", "quiet_envoy", "sample", "start_rounds",
           "summarise", "tcmalloc_memory"]

Progress = Callable[[str], None]

#: the admin ``/memory`` fields kept (bytes; tcmalloc's view of Envoy's heap)
MEMORY_FIELDS = ("allocated", "heap_size", "pageheap_unmapped", "pageheap_free",
                 "total_thread_cache", "total_physical_bytes")


@dataclass(frozen=True)
class Variant:
    """One thing to start: a name and a bootstrap factory (a fresh one per start: new ports)."""

    name: str
    config: Callable[[], dict[str, Any]]


@dataclass
class StartSample:
    """One Envoy start, read right after admin ``/ready`` said LIVE."""

    ready_seconds: float  # launch until LIVE, wall time
    cpu_seconds: float  # Envoy's on-CPU time until then, all threads
    rss_kb: int  # VmRSS
    hwm_kb: int  # VmHWM, the peak so far (compilation scratch included)
    memory: dict[str, int] | None  # admin /memory (bytes) when asked for
    #: resident kB by kind of mapping (procfs.MAPPING_KINDS), when memory is asked for
    mappings: dict[str, int] | None = None
    wasm_memories: int | None = None  # how many wasm memories (one per VM), likewise


def envoy_version() -> str:
    """``1.40.0`` from ``envoy --version``, or what it printed, or "unknown"."""
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


def quiet_envoy(config: dict[str, Any], concurrency: int = 1, progress: Progress | None = None) -> Envoy:
    """An Envoy that logs only warnings: nothing per request in the log, whatever the listener."""
    say = progress or (lambda _m: None)

    def waiting(message: str) -> None:  # the harness's "waiting for envoy: N s" during long starts
        if message.startswith("waiting"):
            say(f"  {message}")

    return Envoy(config, concurrency=concurrency, log_level="warning", component_log_level=None,
                 progress=waiting)


def tcmalloc_memory(envoy: Envoy) -> dict[str, int]:
    """Envoy's admin ``/memory``: tcmalloc's counters, in bytes."""
    raw = json.loads(envoy.admin_get("/memory"))
    return {key: int(raw[key]) for key in MEMORY_FIELDS if key in raw}


def sample(envoy: Envoy, *, memory: bool = False) -> StartSample:
    """The figures of a just-started Envoy (CPU and RSS first: the admin request costs a little)."""
    assert envoy.pid is not None and envoy.ready_seconds is not None, "start the Envoy first"
    cpu = procfs.cpu_ns(envoy.pid) / 1e9
    rss = procfs.rss_kb(envoy.pid)
    if not memory:
        return StartSample(envoy.ready_seconds, cpu, rss["VmRSS"], rss["VmHWM"], None)
    mappings, wasm_memories = procfs.memory_map(envoy.pid)
    return StartSample(envoy.ready_seconds, cpu, rss["VmRSS"], rss["VmHWM"], tcmalloc_memory(envoy),
                       mappings, wasm_memories)


def start_rounds(variants: Sequence[Variant], rounds: int, *, concurrency: int = 1,
                 memory: bool = False, keep: str | None = None, progress: Progress | None = None,
                 noise: procfs.Noise | None = None) -> tuple[dict[str, list[StartSample]], Envoy | None]:
    """Start every variant ``rounds`` times, interleaved; one :class:`StartSample` per start.

    Each Envoy is stopped (by PID) once sampled, except the last start of the variant named
    ``keep``, which is returned still running (the caller stops it) so a load phase can follow
    without one more start. ``noise`` gets each Envoy's CPU time as ours.
    """
    say = progress or (lambda _m: None)
    by_name = {v.name: v for v in variants}
    if keep is not None and keep not in by_name:
        raise ValueError(f"keep={keep!r} is not one of the variants {sorted(by_name)}")
    samples: dict[str, list[StartSample]] = {v.name: [] for v in variants}
    order = round_order([v.name for v in variants], rounds, last=keep)
    kept: Envoy | None = None
    for n, name in enumerate(order):
        say(f"starting Envoy: {name}, --concurrency {concurrency} (start {n + 1}/{len(order)})")
        envoy = quiet_envoy(by_name[name].config(), concurrency, say).start()
        try:
            samples[name].append(sample(envoy, memory=memory))
            last = samples[name][-1]
            say(f"  ready in {last.ready_seconds:.2f} s, {last.cpu_seconds:.2f} s of CPU, "
                f"RSS {last.rss_kb / 1e3:.1f} MB")
            if noise is not None:
                noise.account(envoy.pid)  # type: ignore[arg-type]
            if name == keep and n == len(order) - 1:
                kept = envoy
        finally:
            if envoy is not kept:
                envoy.stop()
    return samples, kept


def summarise(samples: Sequence[StartSample]) -> dict[str, Any]:
    """Medians over the starts of one variant, and every start's figures (``starts``)."""
    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    out: dict[str, Any] = {
        "ready_seconds": med([s.ready_seconds for s in samples]),
        "cpu_seconds": med([s.cpu_seconds for s in samples]),
        "rss_kb": med([s.rss_kb for s in samples]),
        "hwm_kb": med([s.hwm_kb for s in samples]),
    }
    if samples and all(s.memory is not None for s in samples):
        keys = set.intersection(*(set(s.memory or {}) for s in samples))
        out["memory"] = {k: med([(s.memory or {})[k] for s in samples]) for k in MEMORY_FIELDS if k in keys}
    if samples and all(s.mappings is not None for s in samples):
        out["mappings"] = {k: med([(s.mappings or {})[k] for s in samples]) for k in procfs.MAPPING_KINDS}
        out["wasm_memories"] = med([s.wasm_memories or 0 for s in samples])
    out["starts"] = [asdict(s) for s in samples]
    return out
