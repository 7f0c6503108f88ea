"""A minimal HTTP/1.1 keep-alive upstream for benchmarks, run as its own process.

    python bench/upstream.py [--max-seconds S]

Binds 127.0.0.1 on a free port, writes that port number as one line to stdout, then answers
every request on every connection with the same fixed ``200`` response (body ``ok``), as fast
as one single-threaded ``selectors`` loop can.  Nothing is parsed beyond what framing needs:
the header block end and ``content-length`` (a ``transfer-encoding`` request body is not
supported: that connection is closed).  Pipelined requests are answered in order.

It is a separate process so that it never competes for the benchmark client's GIL, and it is
much lighter than the harness's threaded ``EchoUpstream`` (no JSON, no header parsing, no
thread per connection), which keeps the upstream's share of the measured latency small and
steady.

It stops on SIGTERM (the benchmark stops it by PID), when its stdin reaches end of file (the
benchmark died), or after ``--max-seconds`` (default one hour) whatever happens.
"""

from __future__ import annotations

import argparse
import selectors
import socket
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


class _Conn:
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


def serve(max_seconds: float) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)

    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin.buffer, selectors.EVENT_READ, "stdin")
    deadline = time.monotonic() + max_seconds
    conns: dict[socket.socket, _Conn] = {}
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
                    conns[sock] = _Conn(sock)
                    sel.register(sock, selectors.EVENT_READ, "conn")
                elif key.data == "stdin":
                    if not sys.stdin.buffer.read1(4096):
                        return  # the benchmark went away
                else:
                    sock = key.fileobj
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="exit after this long whatever happens (default 3600)")
    serve(parser.parse_args().max_seconds)


if __name__ == "__main__":
    main()
