"""What the kernel says about a process and the machine (Linux ``/proc``).

Envoy's CPU time is read per thread from ``schedstat`` (ns resolution) because a benchmark block
lasts well under a second, where ``utime``/``stime`` (10 ms ticks) cannot resolve a few us per
request; the ticks are kept as a cross-check. :class:`Noise` says how much CPU *other*
processes used while something was measured: the figure that tells a run on a quiet machine
from one that shared it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["CLK_TCK", "MAPPING_KINDS", "Noise", "classify_smaps", "cpu_ns", "cpu_ticks", "memory_map",
           "rss_kb", "system_ticks"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> dict[str, int]:
    """``{"VmRSS": ..., "VmHWM": ...}`` (resident now, and its peak) of a process, in /proc's kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


#: what :func:`memory_map` splits a process's resident memory into
MAPPING_KINDS = ("executable file", "other files", "compiled code", "wasm memories", "other anonymous")
#: a reservation at least this large right after a read-write mapping is a wasm memory's guard
#: region (V8 reserves 8 GiB for a 32-bit memory and maps only its current size read-write)
_GUARD_BYTES = 1 << 30


def classify_smaps(text: str, executable: str) -> tuple[dict[str, int], int]:
    """Resident kB of each of :data:`MAPPING_KINDS` in the text of ``/proc/PID/smaps``, and how
    many wasm memories there were. *executable file*: mappings of the file named ``executable``
    (its code and data as far as touched); *compiled code*: anonymous executable mappings (V8's
    code space, the compiled wasm among it); *wasm memories*: anonymous read-write mappings
    directly followed by a guard reservation of 1 GiB or more; *other anonymous*: the rest of
    the anonymous memory (the allocator's heap, stacks, V8's own heap)."""
    maps: list[tuple[int, int, str, str, int]] = []  # start, end, permissions, file, Rss kB
    for line in text.splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            low, _, high = head[0].partition("-")
            maps.append((int(low, 16), int(high, 16), head[1], head[5] if len(head) > 5 else "", 0))
        elif line.startswith("Rss:") and maps:
            maps[-1] = (*maps[-1][:4], int(line.split()[1]))
    kinds = dict.fromkeys(MAPPING_KINDS, 0)
    memories = 0
    for i, (start, end, perms, name, rss) in enumerate(maps):
        anonymous = not name.startswith("/")
        following = maps[i + 1] if i + 1 < len(maps) else None
        if not anonymous:
            kind = "executable file" if name == executable else "other files"
        elif "x" in perms:
            kind = "compiled code"
        elif (perms.startswith("rw") and following is not None and following[0] == end
              and following[2].startswith("---") and following[1] - following[0] >= _GUARD_BYTES):
            kind = "wasm memories"
            memories += 1
        else:
            kind = "other anonymous"
        kinds[kind] += rss
    return kinds, memories


def memory_map(pid: int) -> tuple[dict[str, int], int]:
    """:func:`classify_smaps` of a running process (its executable from ``/proc/PID/exe``)."""
    return classify_smaps(Path(f"/proc/{pid}/smaps").read_text(), os.readlink(f"/proc/{pid}/exe"))


def cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of a process so far, in ns."""
    total = 0
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended: its time is lost from both readings alike
    return total


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all threads, ended ones included) in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of the full line


def system_ticks() -> tuple[int, int]:
    """(busy, steal) CPU ticks of the whole machine; busy excludes idle, iowait and steal."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal


class Noise:
    """CPU used by processes other than ours over a window, in cores (0 means a quiet machine).

    ``Noise(pids)`` opens the window; those pids (running now) are ours. A process of ours that
    starts *and ends* inside the window (an Envoy started for one measurement) is counted with
    :meth:`account` just before it is stopped: its whole life lies inside the window.
    """

    def __init__(self, pids: Iterable[int] = ()) -> None:
        self._pids = [os.getpid(), *pids]
        self._ticks0 = sum(cpu_ticks(p) for p in self._pids)
        self._accounted = 0
        self._busy0, self._steal0 = system_ticks()
        self._t0 = time.monotonic()

    def account(self, pid: int) -> None:
        """Count a process started inside the window as ours (call it before stopping it)."""
        try:
            self._accounted += cpu_ticks(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass

    def result(self) -> dict[str, float]:
        """``other_processes_cores``, ``steal_cores`` (the hypervisor's) and ``seconds``."""
        busy, steal = system_ticks()
        seconds = time.monotonic() - self._t0
        ours = sum(cpu_ticks(p) for p in self._pids) - self._ticks0 + self._accounted
        others = max(0, (busy - self._busy0) - ours)
        return {"other_processes_cores": others / CLK_TCK / seconds if seconds else 0.0,
                "steal_cores": (steal - self._steal0) / CLK_TCK / seconds if seconds else 0.0,
                "seconds": seconds}
