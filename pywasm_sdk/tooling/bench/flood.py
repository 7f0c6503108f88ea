"""Load for long runs: many requests (or connections) as fast as one Python process can send them.

:mod:`.load` measures latency, one request at a time; a soak needs volume: a million requests
through one Envoy worker in minutes. So these generators keep ``connections`` exchanges in
flight from one ``selectors`` loop, parse only what framing needs, and check every answer
against what it should be (a status, and bytes its head must hold), counting the ones that are
not: a soak that runs but gets the wrong answers measures nothing.

- :class:`HttpFlood`: keep-alive HTTP/1.1 connections, one request in flight on each (the same
  request every time); responses framed by ``content-length`` or chunked.
- :class:`TcpFlood`: one connection per exchange: connect (from one of ``sources``), send a
  message, read until the expected answer has arrived (or the server closed), close.
- :func:`wrk_available` / :class:`WrkFlood`: the same HTTP load from ``wrk`` (a Debian package,
  not on PyPI) when it is installed: several times the rate of the Python client.

Everything is on 127.0.0.1; nothing here starts a process but ``wrk``.
"""

from __future__ import annotations

import errno
import re
import selectors
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field

__all__ = ["FloodResult", "HttpFlood", "TcpFlood", "WrkFlood", "parse_wrk", "wrk_available"]

#: Linux's IP_BIND_ADDRESS_NO_PORT: a socket bound to a source address gets its port at connect()
#: time, where ports in TIME_WAIT can be reused on loopback (a million connections need that)
_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


@dataclass
class FloodResult:
    """What one :meth:`run` did: exchanges completed, those whose answer was not the expected
    one (with a few examples), connections that failed or were closed without any answer (the
    proxy's own answer: e.g. its upstream did not connect), and the wall time."""

    done: int = 0
    unexpected: int = 0
    errors: int = 0
    seconds: float = 0.0
    examples: list[bytes] = field(default_factory=list)

    def add(self, other: FloodResult) -> None:
        self.done += other.done
        self.unexpected += other.unexpected
        self.errors += other.errors
        self.seconds += other.seconds
        self.examples = (self.examples + other.examples)[:5]

    def note(self, answer: bytes) -> None:
        self.unexpected += 1
        if len(self.examples) < 5:
            self.examples.append(answer[:300])


class _HttpConn:
    __slots__ = ("sock", "buf", "busy")

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = b""
        self.busy = False


def _receive(sock: socket.socket) -> bytes | None:
    """What a ready socket has: None when it has nothing after all, b"" when the peer closed
    (or reset) it."""
    try:
        return sock.recv(1 << 16)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _response_end(buf: bytes) -> tuple[int, bytes] | None:
    """(length of the first complete response in ``buf``, its head); None while incomplete."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = buf[:head_end].lower()
    start = head_end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:line_end if line_end >= 0 else None])
        return (start + length, buf[:head_end]) if len(buf) >= start + length else None
    if b"\r\ntransfer-encoding: chunked" in head:
        pos = start
        while True:
            size_end = buf.find(b"\r\n", pos)
            if size_end < 0:
                return None
            size = int(buf[pos:size_end].split(b";")[0], 16)
            if size == 0:
                end = buf.find(b"\r\n\r\n", size_end)  # past any trailers
                return (end + 4, buf[:head_end]) if end >= 0 else None
            pos = size_end + 2 + size + 2
            if pos > len(buf):
                return None
    return start, buf[:head_end]  # no body (a 204, a 304, a HEAD)


class HttpFlood:
    """``connections`` keep-alive connections to 127.0.0.1:``port``, each with one ``request`` in
    flight; an answer is expected when its status line starts with ``expect_status`` and its
    head holds every one of ``expect_in_head`` (e.g. ``b"\\r\\nx-served-by: me"``)."""

    def __init__(self, port: int, request: bytes, *, connections: int = 8, expect_status: int = 200,
                 expect_in_head: tuple[bytes, ...] = ()) -> None:
        self.address = ("127.0.0.1", port)
        self.request = request
        self.connections = connections
        self.status_line = b"HTTP/1.1 %d " % expect_status
        self.expect_in_head = tuple(e.lower() for e in expect_in_head)
        self._conns: list[_HttpConn] = []

    @staticmethod
    def get(path: str, headers: dict[str, str] | None = None, host: str = "soak.test") -> bytes:
        """A GET request's bytes."""
        lines = [f"GET {path} HTTP/1.1", f"host: {host}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _check(self, head: bytes, result: FloodResult) -> None:
        if not head.startswith(self.status_line):
            result.note(head)
            return
        lowered = head.lower()
        for needle in self.expect_in_head:
            if needle not in lowered:
                result.note(head)
                return

    def run(self, count: int) -> FloodResult:
        """Send ``count`` requests (spread over the connections) and wait for every answer."""
        result = FloodResult()
        t0 = time.perf_counter()
        sel = selectors.DefaultSelector()
        while len(self._conns) < self.connections:
            self._conns.append(_HttpConn(self.address))
        to_send = count
        in_flight = 0
        for conn in self._conns:
            sel.register(conn.sock, selectors.EVENT_READ, conn)
            if to_send:
                conn.sock.sendall(self.request)
                conn.busy, to_send, in_flight = True, to_send - 1, in_flight + 1
        try:
            while in_flight:
                events = sel.select(timeout=30)
                if not events:
                    raise TimeoutError(f"no answer for 30 s with {in_flight} requests in flight")
                for key, _ in events:
                    conn: _HttpConn = key.data
                    data = _receive(conn.sock)
                    if data is None:
                        continue
                    if not data:  # the proxy closed the connection: count it, open another
                        sel.unregister(conn.sock)
                        conn.sock.close()
                        self._conns.remove(conn)
                        if conn.busy:
                            in_flight -= 1
                            result.errors += 1
                        fresh = _HttpConn(self.address)
                        self._conns.append(fresh)
                        sel.register(fresh.sock, selectors.EVENT_READ, fresh)
                        if to_send:
                            fresh.sock.sendall(self.request)
                            fresh.busy, to_send, in_flight = True, to_send - 1, in_flight + 1
                        continue
                    conn.buf += data
                    while conn.busy and (end := _response_end(conn.buf)) is not None:
                        length, head = end
                        conn.buf = conn.buf[length:]
                        self._check(head, result)
                        result.done += 1
                        in_flight -= 1
                        conn.busy = False
                        if to_send:
                            conn.sock.sendall(self.request)
                            conn.busy, to_send, in_flight = True, to_send - 1, in_flight + 1
        finally:
            for conn in self._conns:
                sel.unregister(conn.sock)
            sel.close()
        result.seconds = time.perf_counter() - t0
        return result

    def close(self) -> None:
        for conn in self._conns:
            conn.sock.close()
        self._conns.clear()


class _TcpConn:
    __slots__ = ("sock", "got", "sent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.got, self.sent = sock, b"", False


class TcpFlood:
    """One TCP connection per exchange to ``destination``:``port``, ``connections`` at a time, each
    from the next of ``sources``: send ``message``, read until ``expect`` (all of it) has come
    back or the server closed, then close. An answer other than ``expect`` is unexpected."""

    def __init__(self, port: int, message: bytes, expect: bytes, *, destination: str = "127.0.0.1",
                 sources: tuple[str, ...] = (), connections: int = 8) -> None:
        self.address = (destination, port)
        self.message, self.expect = message, expect
        self.sources = sources
        self.connections = connections
        self._next_source = 0

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.sources:
            sock.setsockopt(socket.IPPROTO_IP, _BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.sources[self._next_source % len(self.sources)], 0))
            self._next_source += 1
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, f"connect to {self.address}: {errno.errorcode.get(err, err)}")
        return sock

    def run(self, count: int) -> FloodResult:
        result = FloodResult()
        t0 = time.perf_counter()
        sel = selectors.DefaultSelector()
        started = 0

        def start() -> None:
            nonlocal started
            conn = _TcpConn(self._open())
            sel.register(conn.sock, selectors.EVENT_WRITE, conn)
            started += 1

        def finish(conn: _TcpConn, *, error: bool = False) -> None:
            sel.unregister(conn.sock)
            conn.sock.close()
            if error or not conn.got:
                result.errors += 1  # refused, reset, or closed without a byte
            else:
                result.done += 1
                if conn.got != self.expect:
                    result.note(conn.got)
            if started < count:
                start()

        for _ in range(min(self.connections, count)):
            start()
        try:
            while sel.get_map():
                events = sel.select(timeout=30)
                if not events:
                    raise TimeoutError(f"no progress for 30 s with {len(sel.get_map())} connections open")
                for key, mask in events:
                    conn: _TcpConn = key.data
                    if not conn.sent:
                        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            finish(conn, error=True)
                            continue
                        try:
                            conn.sock.send(self.message)  # small: one send never blocks here
                        except OSError:
                            finish(conn, error=True)
                            continue
                        conn.sent = True
                        sel.modify(conn.sock, selectors.EVENT_READ, conn)
                        continue
                    data = _receive(conn.sock)
                    if data is None:
                        continue
                    conn.got += data
                    if not data or len(conn.got) >= len(self.expect):
                        finish(conn)
        finally:
            sel.close()
        result.seconds = time.perf_counter() - t0
        return result

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ wrk

def wrk_available() -> str | None:
    """The path of ``wrk`` when it is installed."""
    return shutil.which("wrk")


_WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.M)
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> FloodResult:
    """The requests, non-2xx/3xx answers and socket errors of one wrk run's report."""
    found = _WRK_REQUESTS.search(output)
    if found is None:
        raise ValueError(f"not a wrk report:\n{output[-2000:]}")
    result = FloodResult(done=int(found.group(1)))
    if non_2xx := _WRK_NON_2XX.search(output):
        result.unexpected = int(non_2xx.group(1))
    if errors := _WRK_ERRORS.search(output):
        result.errors = sum(int(n) for n in errors.groups())
    return result


class WrkFlood:
    """HTTP load from ``wrk`` (one thread, ``connections`` connections) for ``seconds`` per run:
    wrk stops on time, not on a count, so :meth:`run` takes the time a count should take at the
    rate measured so far. wrk checks only that a status is 2xx or 3xx; :class:`HttpFlood`
    checks the heads around it (see the soak)."""

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None, *,
                 connections: int = 8, wrk: str | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}{path}"
        self.headers = headers or {}
        self.connections = connections
        self.wrk = wrk or wrk_available() or "wrk"
        self.rate = 0.0  # requests per second, from the last run

    def run(self, count: int) -> FloodResult:
        seconds = max(1, round(count / self.rate)) if self.rate else 5
        cmd = [self.wrk, "-t1", f"-c{self.connections}", f"-d{seconds}s", "--latency"]
        for name, value in self.headers.items():
            cmd += ["-H", f"{name}: {value}"]
        t0 = time.perf_counter()
        done = subprocess.run([*cmd, self.url], capture_output=True, text=True, timeout=seconds + 60)
        result = parse_wrk(done.stdout)
        result.seconds = time.perf_counter() - t0
        self.rate = result.done / max(0.1, result.seconds)
        return result

    def close(self) -> None:
        pass
