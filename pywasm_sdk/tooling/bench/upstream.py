"""The benchmarks' upstream: one ``selectors`` loop in its own process, HTTP or TCP echo.

    python pywasm_sdk/tooling/bench/upstream.py [--tcp] [--max-seconds S]

It binds 127.0.0.1 on a free port, writes that port number as one line to stdout, and serves:

- HTTP (the default): every request on every keep-alive connection gets the same fixed ``200``
  (body ``ok``). Nothing is parsed beyond what framing needs: the end of the header block and
  ``content-length`` (a ``transfer-encoding`` request body is not supported: that connection is
  closed). Pipelined requests are answered in order.
- TCP (``--tcp``): each connection's bytes are echoed back, and the connection is closed once a
  newline has been echoed. The upstream closing first keeps TIME_WAIT sockets off the client's
  and Envoy's ephemeral ports, so tens of thousands of connections in a row do not run out.

It is a separate process so that it never competes for the benchmark client's GIL, and it is
much lighter than the test harness's threaded ``EchoUpstream`` (no JSON, no thread per
connection), which keeps the upstream's share of the measured latency small and steady. It
imports only the standard library, so it runs as a script from any checkout or installation.

It stops on SIGTERM (:class:`Upstream` stops it by PID), when its stdin reaches end of file
(the benchmark died), or after ``--max-seconds`` (default one hour) whatever happens.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import subprocess
import sys
import time

RESPONSE = (b"HTTP/1.1 200 OK\r\n"
            b"content-type: text/plain\r\n"
            b"content-length: 2\r\n"
            b"\r\n"
            b"ok")
MAX_HEADER_BYTES = 64 * 1024


def _body_length(head: bytes) -> int | None:
    """Content-length of a request head (0 if absent); None if its body framing is unsupported."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
        elif name == b"transfer-encoding":
            return None
    return length


class _HttpConn:
    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def feed(self, data: bytes) -> bool:
        """Take received bytes, answer every complete request; False to close the connection."""
        self.buf += data
        replies = 0
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEADER_BYTES:
                    return False
                break
            length = _body_length(self.buf[:end])
            if length is None:
                return False
            total = end + 4 + length
            if len(self.buf) < total:
                break
            self.buf = self.buf[total:]
            replies += 1
        if replies:
            try:
                self.sock.sendall(RESPONSE * replies)
            except OSError:
                return False
        return True


class _EchoConn:
    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def feed(self, data: bytes) -> bool:
        """Echo; False (close) once a newline went back: the client's message is complete."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return b"\n" not in data


def serve(max_seconds: float, tcp: bool = False) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)

    make = _EchoConn if tcp else _HttpConn
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin.buffer, selectors.EVENT_READ, "stdin")
    deadline = time.monotonic() + max_seconds
    conns: dict[socket.socket, _HttpConn | _EchoConn] = {}
    try:
        while time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                if key.data == "accept":
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.setblocking(True)  # replies are tiny: sendall never waits in practice
                    conns[sock] = make(sock)
                    sel.register(sock, selectors.EVENT_READ, "conn")
                elif key.data == "stdin":
                    if not sys.stdin.buffer.read1(4096):
                        return  # the benchmark went away
                else:
                    sock = key.fileobj  # type: ignore[assignment]
                    conn = conns[sock]
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data or not conn.feed(data):
                        sel.unregister(sock)
                        del conns[sock]
                        sock.close()
    finally:
        for sock in conns:
            sock.close()
        listener.close()


class Upstream:
    """This file run as its own process (``tcp=True`` for the echo); stopped by PID.

    ``with Upstream() as up:`` then ``up.address`` is the cluster's address, ``up.pid`` the
    process (so its CPU time can be told apart from other processes').
    """

    def __init__(self, *, tcp: bool = False) -> None:
        cmd = [sys.executable, __file__] + (["--tcp"] if tcp else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the benchmark upstream ({__file__}) did not report its port")
        self.pid = self.proc.pid
        self.port = int(line)
        self.address = ("127.0.0.1", self.port)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 5 s, always reaped; safe to call again."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tcp", action="store_true",
                        help="echo each connection's bytes and close after a newline, instead of HTTP")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="exit after this long whatever happens (default 3600)")
    args = parser.parse_args()
    serve(args.max_seconds, tcp=args.tcp)


if __name__ == "__main__":
    main()
