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
from .stats import block_order, latency_summary, pair_spread

__all__ = ["TCP_MESSAGE", "Client", "HttpClient", "TcpClient", "measure_interleaved"]

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
    say = progress or (lambda _m: None)
    if len(clients) != 2:
        raise ValueError("measure_interleaved takes two clients: the filter's and the baseline's")
    if count < 1 or block < 1 or warmup < 0:
        raise ValueError("count and block must be positive, warmup not negative")
    say(f"warm-up: {warmup} per listener")
    for _ in range(math.ceil(warmup / 50)):  # alternating runs of 50
        for c in clients:
            for _ in range(min(50, warmup)):
                c.once()
    blocks_each = math.ceil(count / block)
    order = block_order(blocks_each)
    lat: list[list[int]] = [[], []]
    cpu = [0, 0]
    ticks = [0, 0]
    block_p50: list[list[float]] = [[], []]
    say(f"measuring: {blocks_each} blocks of {block} per listener, interleaved")
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
            cpu[which] += c1 - c0
            ticks[which] += k1 - k0
            lat[which] += samples
            block_p50[which].append(statistics.median(samples))
            if time.monotonic() - last_report > 5:
                say(f"  {n + 1}/{len(order)} blocks")
                last_report = time.monotonic()
                gc.collect()  # between blocks only
    finally:
        gc.enable()
    out: dict[str, Any] = {"count": len(lat[0]), "block": block, "warmup": warmup,
                           "noise": noise.result()}
    for which, name in enumerate(("filter", "baseline")):
        n = len(lat[which])
        out[name] = {**latency_summary(lat[which]),
                     "cpu_us": cpu[which] / 1e3 / n,
                     "cpu_ticks_us": ticks[which] * 1e6 / procfs.CLK_TCK / n}
    # Aligned neighbours (0-1, 2-3, ...) hold one block of each listener.
    diffs = [(f - b) / 1e3 for f, b in zip(block_p50[0], block_p50[1])]
    out["added_p50_block_pairs_us"] = pair_spread(diffs)
    return out
