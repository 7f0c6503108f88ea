"""Added latency and Envoy CPU per request (HTTP) or per connection (TCP), in interleaved blocks.

One Envoy has two listeners in front of the same upstream: one with the filter, one without
(the baseline). A client sends sequential requests (HTTP: keep-alive GETs on one connection per
listener) or opens sequential connections (TCP: connect, send one line, read the echo until the
upstream closes), in blocks that alternate ABBA BAAB ... (:func:`.stats.block_order`). Envoy's
on-CPU time is read before and after every block and charged to that block's listener: the
blocks are the phases that let CPU be attributed, and CPU per request leaves out the client's
and the upstream's time, so it is far steadier than latency. Python's garbage collector is off
inside blocks. A block's last request may leave a little work in Envoy (stream or connection
teardown) that lands in the next block; with blocks of a few hundred requests that is noise.

:func:`measure_rounds` is the same measurement for any number of listeners of one Envoy (the
variants of bench/costs.py), their blocks in rounds.
"""

from __future__ import annotations

import gc
import http.client
import math
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import procfs
from .stats import block_order, latency_summary, pair_spread, round_order

__all__ = ["TCP_MESSAGE", "Client", "HttpClient", "TcpClient", "measure_interleaved",
           "measure_rounds"]

Progress = Callable[[str], None]

#: what a TCP client sends on each connection: one line, echoed back by the upstream
TCP_MESSAGE = b"pywasm bench: one line through the filter and back\n"


class Client(Protocol):
    #: the name of :meth:`outcome` in the results
    outcome_name: str

    def once(self) -> int:
        """One request (or connection); its latency in ns."""

    def outcome(self) -> object:
        """What the requests got back, beyond their time (statuses, incomplete echoes)."""

    def close(self) -> None: ...


class HttpClient:
    """Keep-alive GETs on one ``http.client`` connection; any status counts (a plugin may answer
    itself), and the statuses seen are counted in ``statuses``."""

    outcome_name = "statuses"

    def __init__(self, port: int, path: str = "/bench", headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.path, self.headers = path, dict(headers or {})
        self.statuses: dict[int, int] = {}

    def once(self) -> int:
        conn = self.conn
        t = time.perf_counter_ns()
        conn.request("GET", self.path, headers=self.headers)
        resp = conn.getresponse()
        resp.read()
        elapsed = time.perf_counter_ns() - t
        self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
        return elapsed

    def outcome(self) -> dict[int, int]:
        return dict(self.statuses)

    def close(self) -> None:
        self.conn.close()


class TcpClient:
    """One connection per call: connect, send :data:`TCP_MESSAGE`, read until the upstream's
    echo ends with its close. ``short`` counts connections whose echo came back incomplete (a
    filter that changes or stops the bytes); the time is kept either way."""

    outcome_name = "incomplete_echoes"

    def __init__(self, port: int, message: bytes = TCP_MESSAGE) -> None:
        self.address = ("127.0.0.1", port)
        self.message = message
        self.short = 0

    def exchange(self) -> bytes:
        """One connection: what came back before the upstream closed it."""
        with socket.create_connection(self.address, timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(self.message)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def once(self) -> int:
        t = time.perf_counter_ns()
        got = self.exchange()
        elapsed = time.perf_counter_ns() - t
        if got != self.message:
            self.short += 1
        return elapsed

    def outcome(self) -> int:
        return self.short

    def close(self) -> None:
        pass


def measure_interleaved(envoy_pid: int, clients: Sequence[Client], *, count: int, block: int,
                        warmup: int, other_pids: Sequence[int] = (),
                        progress: Progress | None = None) -> dict[str, Any]:
    """Measure ``clients[0]`` (filter) against ``clients[1]`` (baseline), ``count`` each.

    ``count`` is rounded up to whole blocks. ``other_pids`` (the upstream) are ours for the
    noise figure. Returns the figures per listener (``filter``, ``baseline``: p50/p90/p99/mean
    latency in us, Envoy CPU per request in us from schedstat and from ticks), the spread of
    the added p50 over block pairs, and the noise of the load phase.
    """
    if len(clients) != 2:
        raise ValueError("measure_interleaved takes two clients: the filter's and the baseline's")
    _check_counts(count, block, warmup)
    blocks_each = math.ceil(count / block)
    runs, noise = _run_blocks(envoy_pid, clients, block_order(blocks_each), block=block,
                              warmup=warmup, other_pids=other_pids, progress=progress)
    out: dict[str, Any] = {"count": len(runs[0].latencies), "block": block, "warmup": warmup,
                           "noise": noise}
    for which, name in enumerate(("filter", "baseline")):
        out[name] = runs[which].figures()
    # Aligned neighbours (0-1, 2-3, ...) hold one block of each listener.
    diffs = [(f - b) / 1e3 for f, b in zip(runs[0].block_p50_ns, runs[1].block_p50_ns)]
    out["added_p50_block_pairs_us"] = pair_spread(diffs)
    return out


def measure_rounds(envoy_pid: int, clients: Sequence[Client], *, count: int, block: int,
                   warmup: int, other_pids: Sequence[int] = (),
                   progress: Progress | None = None) -> dict[str, Any]:
    """Measure any number of listeners side by side, ``count`` requests (or connections) each.

    The blocks go in rounds, one block of every client per round, forward then backward
    (:func:`.stats.round_order`), so each client's mean position in the run is the same.
    Returns ``count``, ``block``, ``warmup``, ``noise`` and ``clients``: per client (in the
    order given) the figures of :func:`measure_interleaved`'s listeners, plus ``block_cpu_us``
    and ``block_p50_us``, one value per round, so a caller can pair the clients round by round.
    """
    if len(clients) < 2:
        raise ValueError("measure_rounds compares clients: give at least two")
    _check_counts(count, block, warmup)
    rounds = math.ceil(count / block)
    runs, noise = _run_blocks(envoy_pid, clients, round_order(range(len(clients)), rounds),
                              block=block, warmup=warmup, other_pids=other_pids, progress=progress)
    return {"count": len(runs[0].latencies), "block": block, "warmup": warmup, "noise": noise,
            "clients": [{**run.figures(),
                         "block_cpu_us": [ns / 1e3 / block for ns in run.block_cpu_ns],
                         "block_p50_us": [ns / 1e3 for ns in run.block_p50_ns]} for run in runs]}


def _check_counts(count: int, block: int, warmup: int) -> None:
    if count < 1 or block < 1 or warmup < 0:
        raise ValueError("count and block must be positive, warmup not negative")


class _Run:
    """What one client's blocks measured: every latency, and Envoy's CPU charged to it."""

    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.cpu_ns = self.ticks = 0
        self.block_p50_ns: list[float] = []
        self.block_cpu_ns: list[int] = []

    def figures(self) -> dict[str, float]:
        n = len(self.latencies)
        return {**latency_summary(self.latencies), "cpu_us": self.cpu_ns / 1e3 / n,
                "cpu_ticks_us": self.ticks * 1e6 / procfs.CLK_TCK / n}


def _run_blocks(envoy_pid: int, clients: Sequence[Client], order: Sequence[int], *, block: int,
                warmup: int, other_pids: Sequence[int],
                progress: Progress | None) -> tuple[list[_Run], dict[str, float]]:
    """Warm every client up, then run ``order`` (client indices), one block each, charging
    Envoy's CPU around each block to that block's client. Also returns the run's noise."""
    say = progress or (lambda _m: None)
    say(f"warm-up: {warmup} per listener")
    for _ in range(math.ceil(warmup / 50)):  # alternating runs of 50
        for c in clients:
            for _ in range(min(50, warmup)):
                c.once()
    runs = [_Run() for _ in clients]
    say(f"measuring: {order.count(0)} blocks of {block} per listener for {len(clients)} "
        f"listeners, interleaved")
    gc.collect()
    noise = procfs.Noise([envoy_pid, *other_pids])
    gc.disable()
    try:
        last_report = time.monotonic()
        for n, which in enumerate(order):
            once = clients[which].once
            c0, k0 = procfs.cpu_ns(envoy_pid), procfs.cpu_ticks(envoy_pid)
            samples = [once() for _ in range(block)]
            c1, k1 = procfs.cpu_ns(envoy_pid), procfs.cpu_ticks(envoy_pid)
            run = runs[which]
            run.cpu_ns += c1 - c0
            run.ticks += k1 - k0
            run.latencies += samples
            run.block_p50_ns.append(statistics.median(samples))
            run.block_cpu_ns.append(c1 - c0)
            if time.monotonic() - last_report > 5:
                say(f"  {n + 1}/{len(order)} blocks")
                last_report = time.monotonic()
                gc.collect()  # between blocks only
    finally:
        gc.enable()
    return runs, noise.result()
