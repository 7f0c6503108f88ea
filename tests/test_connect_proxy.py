"""The CONNECT proxy the tests (and examples/egress_tunnel/helpers.py) run on loopback, on its own:
what it answers and what it records, without Envoy."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from pywasm_sdk.tooling import envoy as E


def ask(proxy: E.ConnectProxy, head: bytes, payload: bytes = b"") -> tuple[bytes, bytes]:
    """Send ``head`` (+ ``payload`` right behind it), read the reply head and what follows until
    the echo of ``payload`` is complete or the proxy closes; return (status line, rest)."""
    with socket.create_connection(proxy.address, timeout=10) as conn:
        conn.sendall(head + payload)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        status, _, rest = data.partition(b"\r\n")
        rest = rest.partition(b"\r\n\r\n")[2] if b"\r\n\r\n" in data else b""
        while payload and not rest.endswith(payload):
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest


@pytest.fixture
def destination():
    with E.TcpServer(banner=b"hi\n") as server:
        yield server


def test_tunnels_to_the_mapped_destination_and_records_both_directions(destination):
    payload = os.urandom(300_000)
    with E.ConnectProxy({"10.9.9.9:443": destination.address}) as proxy:
        status, rest = ask(proxy, b"CONNECT 10.9.9.9:443 HTTP/1.1\r\nHost: 10.9.9.9:443\r\n\r\n", payload)
        assert status == b"HTTP/1.1 200 Connection established"
        assert rest == b"hi\n" + payload
        (tunnel,) = proxy.tunnels
        assert tunnel.closed.wait(10)
        assert (tunnel.method, tunnel.authority, tunnel.status) == ("CONNECT", "10.9.9.9:443", 200)
        assert tunnel.headers == {"host": "10.9.9.9:443"} and tunnel.peer[0] == "127.0.0.1"
        assert bytes(tunnel.upstream) == payload and bytes(tunnel.downstream) == b"hi\n" + payload


@pytest.mark.parametrize("head, status", [
    (b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n", 403),          # not a destination it serves
    (b"GET http://10.9.9.9:443/ HTTP/1.1\r\n\r\n", 405),       # only CONNECT
    (b"CONNECT 10.9.9.8:443 HTTP/1.1\r\n\r\n", 502),          # served, but nothing listens there
])
def test_refusals(destination, head, status):
    with E.ConnectProxy({"10.9.9.9:443": destination.address, "10.9.9.8:443": ("127.0.0.1", E.free_port())}) as proxy:
        line, rest = ask(proxy, head)
        assert line.startswith(f"HTTP/1.1 {status} ".encode()) and rest == b""
        assert [t.status for t in proxy.tunnels] == [status]
    assert destination.peers == []


def test_stop_cuts_open_tunnels(destination):
    proxy = E.ConnectProxy({"10.9.9.9:443": destination.address}).start()
    conn = socket.create_connection(proxy.address, timeout=10)
    try:
        conn.sendall(b"CONNECT 10.9.9.9:443 HTTP/1.1\r\n\r\n")
        assert conn.recv(1024).startswith(b"HTTP/1.1 200")
        stopper = threading.Thread(target=proxy.stop)
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "stop() waited for a tunnel nobody closes"
        assert proxy.tunnels[0].closed.is_set()
    finally:
        conn.close()
