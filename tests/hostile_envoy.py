"""What the hostile-input tests need around a real Envoy: raw HTTP on both sides, a listener whose
plugin configuration can be swapped without a restart, and a watch on Envoy's log.

- :class:`ScriptedUpstream`: an HTTP/1.1 upstream that answers each request with the raw bytes
  the test scripted for it (any headers, any framing), keyed by the request's ``x-hostile-id``;
  every scripted answer carries ``x-hostile-upstream: <id>``, so a reply without it is Envoy's
  own. It records what reached it.
- :func:`exchange`: one raw HTTP/1.1 request on its own connection, the reply parsed from raw
  bytes (no header count or size limit on our side, non-UTF-8 kept as bytes).
- :class:`DynamicListener`: one listener served by LDS from a file. Writing a new configuration
  makes Envoy build the listener again (the plugin's VM is reused: ``on_configure`` runs in a
  fresh copy of it, no recompilation); the update is accepted or rejected within a second.
- :class:`LogWatch`: the part of Envoy's log written since the last look, and the lines that mean
  a dead VM or an exception no plugin code caught.
"""

from __future__ import annotations

import os
import re
import socket
import socketserver
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pywasm_sdk.tooling import envoy as E

MARKER = b"x-hostile-upstream"
ID_HEADER = b"x-hostile-id"

#: statuses Envoy answers itself: malformed, oversized or unsupported requests (400, 413, 414,
#: 426, 431, 501 for an unknown transfer-encoding, 505), an upstream that broke the protocol or
#: went away (502, 503), timeouts (408, 504), its own errors (500)
ENVOY_OWN_STATUSES = frozenset({400, 408, 413, 414, 426, 431, 500, 501, 502, 503, 504, 505})

#: what in Envoy's log means the VM trapped, or a Python exception escaped the plugin's code
_TROUBLE = re.compile(r"Function: proxy_on_\w+ failed|Proxy-Wasm plugin in-VM backtrace|"
                      r"wasm log .* raised \(context \d+\)|its traceback could not be formatted")


# ------------------------------------------------------------------------------ raw HTTP/1.1

@dataclass
class Message:
    """A parsed HTTP/1.1 message: start line, headers as bytes, the body after de-framing."""

    start: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def values(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: bytes) -> bytes | None:
        found = self.values(name)
        return found[0] if found else None


@dataclass
class Reply:
    """What a client got: a message, or ``None`` when the connection ended before a full one."""

    message: Message | None
    raw: bytes
    reset: bool = False

    @property
    def status(self) -> int | None:
        if self.message is None:
            return None
        return int(self.message.start.split(b" ", 2)[1])


def _dechunk(data: bytes) -> tuple[bytes, int] | None:
    """The payload of a chunked body (trailers dropped) and where the body ends; None if it is
    incomplete or malformed."""
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        try:
            size = int(data[pos:end].split(b";")[0].strip(), 16)
        except ValueError:
            return None
        if size == 0:
            done = data.find(b"\r\n\r\n", end)  # past any trailers
            return (b"".join(out), done + 4) if done >= 0 else None
        piece = data[end + 2:end + 2 + size]
        if len(piece) < size:
            return None
        out.append(piece)
        pos = end + 2 + size + 2


def parse_message(raw: bytes, *, body_until_close: bool) -> tuple[Message, bytes] | None:
    """The first message in ``raw`` and what follows it; None while it is incomplete."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = raw[:end].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip(b" \t")))
    message = Message(lines[0], headers, b"")
    rest = raw[end + 4:]
    if b"chunked" in b",".join(message.values(b"transfer-encoding")).lower():
        dechunked = _dechunk(rest)
        if dechunked is None:
            return None
        message.body = dechunked[0]
        return message, rest[dechunked[1]:]
    length = message.header(b"content-length")
    if length is not None:
        n = int(length)
        if len(rest) < n:
            return None
        message.body = rest[:n]
        return message, rest[n:]
    if body_until_close:
        message.body = rest
        return message, b""
    return message, rest  # a request without a body


def exchange(port: int, request: bytes, timeout: float = 15.0) -> Reply:
    """Send one raw request (it should say ``connection: close``) and read the reply until EOF."""
    raw = b""
    reset = False
    with socket.create_connection((E.LOOPBACK, port), timeout=timeout) as conn:
        try:
            conn.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            reset = True  # Envoy answered (e.g. 431) and closed before taking the whole request
        try:
            while chunk := conn.recv(1 << 16):
                raw += chunk
        except ConnectionResetError:
            reset = True
    final = raw
    while final.startswith(b"HTTP/1.1 1"):  # interim answers (100 Continue) have no body
        interim = parse_message(final, body_until_close=False)
        if interim is None:
            break
        final = interim[1]
    parsed = parse_message(final, body_until_close=True)
    return Reply(parsed[0] if parsed else None, raw, reset)


def build_message(start: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                  framing: str = "length", chunks: list[int] | None = None) -> bytes:
    """A raw HTTP/1.1 message. ``framing``: "length" (content-length), "chunked" (chunks of the
    given sizes, cycled), "close" (a response body delimited by the connection's end), or
    "none" (no body and no framing header)."""
    head = [start]
    if framing == "length":
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    elif framing == "chunked":
        headers = [*headers, (b"transfer-encoding", b"chunked")]
    head += [name + b": " + value for name, value in headers]
    out = b"\r\n".join(head) + b"\r\n\r\n"
    if framing == "chunked":
        sizes = chunks or [len(body) or 1]
        pos, i = 0, 0
        while pos < len(body):
            size = max(1, sizes[i % len(sizes)])
            piece = body[pos:pos + size]
            out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            pos += size
            i += 1
        out += b"0\r\n\r\n"
    elif framing in ("length", "close"):
        out += body
    return out


# ------------------------------------------------------------------------------ the upstream

def _read_request(sock: socket.socket, buf: bytes) -> tuple[Message, bytes] | None:
    while True:
        parsed = parse_message(buf, body_until_close=False)
        if parsed is not None:
            return parsed
        chunk = sock.recv(1 << 16)
        if not chunk:
            return None
        buf += chunk


class _Scripted(socketserver.BaseRequestHandler):
    server: ScriptedUpstream

    def handle(self) -> None:
        sock = self.request
        sock.settimeout(30)
        buf = b""
        try:
            while (parsed := _read_request(sock, buf)) is not None:
                request, buf = parsed
                rid = request.header(ID_HEADER) or b""
                self.server.received[rid] = request
                answer = self.server.scripts.get(rid) or build_message(
                    b"HTTP/1.1 200 OK", [(MARKER, rid or b"-")], b"ok\n")
                sock.sendall(answer)
                if rid in self.server.closes:
                    return
        except OSError:
            return  # Envoy reset the connection, or stop() cut it


class ScriptedUpstream(E._LoopbackServer):
    """Answers each request with ``scripts[id]`` (raw bytes; closes after it when ``id`` is in
    ``closes``), or a plain 200 for requests without a script; ``received[id]`` is what arrived."""

    handler = _Scripted

    def __init__(self) -> None:
        self.scripts: dict[bytes, bytes] = {}
        self.closes: set[bytes] = set()
        self.received: dict[bytes, Message] = {}
        super().__init__()


# ------------------------------------------------------------------------------ Envoy's log

class LogWatch:
    """Reads an Envoy's log incrementally."""

    def __init__(self, envoy: E.Envoy) -> None:
        self.envoy = envoy
        self.offset = 0

    def new_text(self) -> str:
        text = self.envoy.log_text()
        new, self.offset = text[self.offset:], len(text)
        return new

    def check(self, what: str) -> str:
        """The new log; AssertionError if it shows a dead VM or an escaped exception, or if Envoy
        is not running and ready."""
        text = self.new_text()
        found = _TROUBLE.search(text)
        assert found is None, f"{what}: Envoy's log shows trouble:\n{text[max(0, found.start() - 300):found.end() + 1500]}"
        assert self.envoy.running, f"{what}: Envoy exited:\n{text[-3000:]}"
        assert self.envoy.admin_get("/ready").strip() == "LIVE", f"{what}: Envoy is not ready"
        return text


# ------------------------------------------------------------------------------ a swappable listener

@dataclass
class DynamicListener:
    """The listener named ``name``, delivered by LDS from ``path``; ``make(config)`` builds it."""

    path: Path
    make: Callable[[bytes | str], dict[str, Any]]
    name: str = "dynamic"
    _version: int = field(default=0, init=False)

    def write(self, config: bytes | str) -> None:
        listener = self.make(config)
        listener["name"] = self.name
        self._version += 1
        document = {"version_info": str(self._version), "resources": [
            {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(document, sort_keys=False))
        os.replace(tmp, self.path)  # one inotify event, never a half-written file

    def bootstrap_part(self) -> dict[str, Any]:
        return {"dynamic_resources": {"lds_config": {"path_config_source": {"path": str(self.path)},
                                                     "resource_api_version": "V3"}},
                "node": {"id": "pywasm-hostile", "cluster": "pywasm"}}

    def apply(self, envoy: E.Envoy, config: bytes | str, timeout: float = 60.0) -> bool:
        """Write ``config``; True once Envoy serves it, False once it rejected it."""
        before = _lds_counters(envoy)
        self.write(config)
        deadline = time.monotonic() + timeout
        while True:
            now = _lds_counters(envoy)
            if now["update_rejected"] > before["update_rejected"]:
                return False
            if now["update_success"] > before["update_success"] and not now["warming"]:
                return True
            if time.monotonic() > deadline:
                raise AssertionError(f"Envoy neither took nor rejected the new listener in {timeout} s")
            time.sleep(0.02)


def _lds_counters(envoy: E.Envoy) -> dict[str, int]:
    text = envoy.admin_get("/stats?filter=^listener_manager\\.")
    stats = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return {"update_success": int(stats.get("listener_manager.lds.update_success", 0)),
            "update_rejected": int(stats.get("listener_manager.lds.update_rejected", 0)),
            "warming": int(stats.get("listener_manager.total_listeners_warming", 0))}
