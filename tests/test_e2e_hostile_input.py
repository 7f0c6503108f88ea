"""Hostile input through a real Envoy, generated with hypothesis, for every example.

One Envoy per example serves two listeners with the plugin: a fixed one (a valid configuration)
that takes hostile requests, responses or connections, and one delivered by LDS from a file
whose plugin configuration each hypothesis example replaces (Envoy builds the listener again and
runs ``on_configure`` in a fresh copy of the already compiled VM, so a configuration costs a
fraction of a second, not an Envoy start). After every example:

- the VM never trapped and no Python exception escaped the plugin's code (Envoy's log has no
  ``Function: proxy_on_... failed`` and no ``... raised (context N)``);
- the answer is the plugin's designed one, or Envoy's own (a reply without the upstream's marker
  header, with a status Envoy uses for refused or failed exchanges);
- a configuration is accepted by Envoy exactly when the plugin, run natively under the mock
  host, accepts it, and a rejection is the plugin's one-line ``configuration rejected:``;
- Envoy is still running and ``/ready`` says LIVE.

How many examples: ``PYWASM_HOSTILE_EXAMPLES`` per test and per plugin (default 8: about a
minute for the whole file in CI). A longer hunt, e.g. before a release::

    PYWASM_HOSTILE_EXAMPLES=500 python -m pytest tests/test_e2e_hostile_input.py -x

Every example under ``examples/`` needs a profile here (:data:`PROFILES`): how to serve it and
what its designed answers are; an example without one fails ``test_every_example_has_a_profile``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pywasm_sdk.testing import MockHost
from pywasm_sdk.tooling import envoy as E

from .conftest import EXAMPLES
from .hostile_envoy import (ENVOY_OWN_STATUSES, ID_HEADER, MARKER, DynamicListener, LogWatch, Reply,
                            ScriptedUpstream, build_message, exchange)

EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "plugin.py").exists())
HOW_MANY = int(os.environ.get("PYWASM_HOSTILE_EXAMPLES") or 8)
HYPOTHESIS = settings(max_examples=HOW_MANY, deadline=None, derandomize=False,
                      suppress_health_check=list(HealthCheck))
BUFFER_LIMIT = 64 * 1024  # per connection, both sides: bodies up to 5x this are sent

#: headers whose meaning is framing or the connection: a plugin configured to add them gets
#: whatever Envoy makes of that, which is checked only for not breaking Envoy
FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                     "te", "trailer", "proxy-connection", "host", ":status"})


# ------------------------------------------------------------------------------ strategies

_NAME = st.from_regex(r"[a-z0-9][a-z0-9-]{0,24}", fullmatch=True).map(lambda s: b"x-h-" + s.encode())
_SAFE_BYTE = st.integers(0, 255).filter(lambda b: b not in (0, 10, 13))
_VALUE = st.one_of(
    st.lists(_SAFE_BYTE, max_size=40).map(bytes),                         # any bytes, non-UTF-8 too
    st.just(b""),                                                         # empty
    st.text(max_size=20).map(lambda t: t.encode()).filter(lambda b: not set(b) & {0, 10, 13}),
    st.integers(1_000, 90_000).map(lambda n: b"v" * n),                   # long, past Envoy's 60 KiB
)
_HEADERS = st.one_of(
    st.lists(st.tuples(_NAME, _VALUE), max_size=12),
    st.integers(90, 300).map(lambda n: [(b"x-h-many-%d" % i, b"%d" % i) for i in range(n)]),  # hundreds
)
#: what request smuggling and sloppy clients send (in one request of four): Envoy's codec decides
_ODD_REQUEST_HEADERS = st.just([]) | st.just([]) | st.just([]) | st.lists(st.sampled_from([
    (b"content-length", b"abc"), (b"content-length", b"-1"), (b"transfer-encoding", b"gzip"),
    (b"transfer-encoding", b"chunked, identity"), (b"host", b""), (b"expect", b"100-continue"),
    (b"bad name", b"1"), (b"x-h-\x80", b"1"), (b"x-h-nul", b"a\x00b"), (b"", b"empty name"),
]), min_size=1, max_size=2)
_BODY = st.one_of(
    st.just(b""),
    st.binary(max_size=3000),
    st.integers(BUFFER_LIMIT - 10, 5 * BUFFER_LIMIT).map(lambda n: (bytes(range(256)) * (n // 256 + 1))[:n]),
)
_FRAMING = st.sampled_from(["length", "chunked"])
_CHUNKS = st.lists(st.integers(1, 70_000), min_size=1, max_size=5)


@dataclass
class HostileRequest:
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    framing: str
    chunks: list[int]

    def raw(self, rid: bytes) -> bytes:
        headers = [(b"host", b"hostile.test"), (ID_HEADER, rid), (b"connection", b"close"), *self.headers]
        framing = self.framing if self.body or self.method != b"GET" else "none"
        return build_message(self.method + b" " + self.path + b" HTTP/1.1", headers, self.body,
                             framing, self.chunks)


@st.composite
def hostile_requests(draw: st.DrawFn) -> HostileRequest:
    return HostileRequest(
        method=draw(st.sampled_from([b"GET", b"POST", b"PUT"])),
        path=draw(st.one_of(st.just(b"/hostile"), st.just(b"/hostile?q=1&q=%ff"), st.just(b"/"),
                            st.binary(max_size=30).map(lambda b: b"/h?" + b.replace(b" ", b"+")
                                                       .replace(b"\r", b"").replace(b"\n", b"")))),
        headers=draw(_HEADERS) + draw(_ODD_REQUEST_HEADERS),
        body=draw(_BODY), framing=draw(_FRAMING), chunks=draw(_CHUNKS))


@dataclass
class HostileResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    framing: str
    chunks: list[int]

    def raw(self, rid: bytes) -> bytes:
        headers = [(MARKER, rid), *self.headers]
        return build_message(b"HTTP/1.1 %d Hostile" % self.status, headers, self.body,
                             self.framing, self.chunks)


@st.composite
def hostile_responses(draw: st.DrawFn) -> HostileResponse:
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 400, 404, 418, 500, 503, 599]))
    no_body = status in (204, 304)
    return HostileResponse(
        status=status, headers=draw(_HEADERS),
        body=b"" if no_body else draw(_BODY),
        framing="length" if no_body else draw(st.sampled_from(["length", "chunked", "close"])),
        chunks=draw(_CHUNKS))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                     max_leaves=12)


def _nested(depth: int, shape: str) -> str:
    return ("[" * depth + "]" * depth) if shape == "list" else ('{"a":' * depth + "1" + "}" * depth)


#: configurations no plugin is written for: wrong types, huge, deeply nested, not text at all
HOSTILE_CONFIGS = st.one_of(
    _JSON.map(json.dumps),                                                           # wrong types
    st.tuples(st.sampled_from([10, 500, 513, 1_000, 3_000, 100_000]),
              st.sampled_from(["list", "object"])).map(lambda d: _nested(*d)),       # deeply nested
    st.integers(100_000, 1_000_000).map(lambda n: json.dumps({"x-big": "v" * n})),   # huge
    st.integers(100_000, 500_000).map(lambda n: "x-a=" + "b" * n),
    st.binary(max_size=200),                                                         # not UTF-8
    st.text(max_size=200),                                                           # any text
)


# ------------------------------------------------------------------------------ serving an example

@dataclass
class Served:
    """One example in one Envoy: the fixed listener, the dynamic one, and what checks them."""

    name: str
    profile: Profile
    envoy: E.Envoy
    fixed_port: int
    dynamic_port: int
    dynamic: DynamicListener
    watch: LogWatch
    services: dict[str, Any]
    fixed_expectation: Any = None
    #: configurations this Envoy rejected: it remembers them and rejects them again at once,
    #: without running on_configure (so without the plugin's log line)
    rejected: set[bytes | str] = field(default_factory=set)
    _next_id: int = field(default=0)

    def next_id(self) -> bytes:
        self._next_id += 1
        return b"%d" % self._next_id


def native_host(name: str, config: bytes | str) -> MockHost:
    """The example run natively under the mock host: the oracle for its designed answers."""
    return MockHost.from_plugin(EXAMPLES / name, plugin_config=config)


def _limit_buffers(config: dict[str, Any]) -> dict[str, Any]:
    for listener in config["static_resources"]["listeners"]:
        listener["per_connection_buffer_limit_bytes"] = BUFFER_LIMIT
    for cluster in config["static_resources"]["clusters"]:
        cluster["per_connection_buffer_limit_bytes"] = BUFFER_LIMIT
    return config


class Profile:
    """How to serve one example and what its designed answers are."""

    kind: str = "http"
    #: the fixed listener's configuration
    config: str = ""
    #: configurations of the shape the plugin is written for
    valid_configs: st.SearchStrategy = st.nothing()

    def bootstrap(self, wasm: Path, config: bytes | str, port: int, admin_port: int,
                  services: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def start_services(self) -> dict[str, Any]:
        raise NotImplementedError

    def expectation(self, host: MockHost, *, fixed: bool) -> Any:
        """What the plugin does (run natively in ``host``), for the checks below: for the fixed
        listener (``fixed``), or for one ordinary request after a new configuration."""
        raise NotImplementedError

    def check_serving(self, served: Served, port: int, expected: Any) -> None:
        """One ordinary request (or connection) to ``port`` gets the designed answer."""
        raise NotImplementedError


class HeaderAdding(Profile):
    """An HTTP plugin that decorates responses (examples/http_headers): the designed answer is the
    upstream's answer, untouched but for the headers the plugin adds, which the native run names."""

    kind = "http"

    def start_services(self) -> dict[str, Any]:
        return {"upstream": ScriptedUpstream().start()}

    def bootstrap(self, wasm: Path, config: bytes | str, port: int, admin_port: int,
                  services: dict[str, Any]) -> dict[str, Any]:
        return _limit_buffers(E.http_bootstrap(wasm_path=wasm, plugin_config=config, listener_port=port,
                                               upstream=services["upstream"].address, admin_port=admin_port))

    def expectation(self, host: MockHost, *, fixed: bool) -> list[tuple[bytes, bytes]]:
        """The response headers the plugin adds to an ordinary response."""
        stream = host.http_stream()
        stream.send_request_headers([(":method", "GET"), (":path", "/"), (":authority", "a")], end_of_stream=True)
        stream.send_response_headers([(":status", "200")])
        return stream.response_headers_bytes[1:]

    def check_reply(self, reply: Reply, rid: bytes, added: list[tuple[bytes, bytes]], *,
                    status: int = 200, body: bytes | None = b"ok\n", what: str = "") -> None:
        if reply.message is None:
            assert reply.raw == b"", f"{what}: an incomplete reply {reply.raw[:500]!r}"
            event("Envoy closed the connection without an answer")
            return
        marker = reply.message.header(MARKER)
        if marker is None:
            assert reply.status in ENVOY_OWN_STATUSES, f"{what}: {reply.raw[:1000]!r}"
            event(f"Envoy's own answer {reply.status}")
            return
        event("the upstream's answer, through the plugin")
        assert marker == rid, f"{what}: the answer to another request: {reply.raw[:500]!r}"
        assert reply.status == status, f"{what}: {reply.raw[:500]!r}"
        if body is not None:
            assert reply.message.body == body, f"{what}: the body changed"
        if any(name.decode("latin-1") in FRAMING for name, _ in added):
            return
        for name, value in added:
            assert value.strip(b" \t") in reply.message.values(name), \
                f"{what}: {name!r}: {value[:100]!r} not added: {reply.message.headers[:20]!r}"

    def check_serving(self, served: Served, port: int, expected: list[tuple[bytes, bytes]]) -> None:
        rid = served.next_id()
        reply = exchange(port, HostileRequest(b"GET", b"/", [], b"", "none", []).raw(rid))
        self.check_reply(reply, rid, expected, what="a request after a new configuration")


class HttpHeaders(HeaderAdding):
    config = "x-served-by=pywasm-hostile\nx-frame-options=DENY"
    valid_configs = st.one_of(
        st.dictionaries(st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,30}", fullmatch=True),
                        st.text(max_size=40), max_size=6).map(json.dumps),
        st.lists(st.tuples(st.from_regex(r"x-[a-z0-9-]{1,20}", fullmatch=True),
                           st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]),
                                   max_size=40)),
                 max_size=6).map(lambda pairs: "\n".join(f"{n}={v}" for n, v in pairs)),
    )


class EgressRouting(Profile):
    """A TCP plugin that routes each connection to a cluster (examples/tcp_egress): the designed
    answer is the chosen cluster's banner followed by the echo of every byte sent; a connection
    routed to a cluster Envoy does not have is closed by Envoy."""

    kind = "network"
    config = ""
    BANNERS = {"egress-router1": b"router1\n", "egress-router2": b"router2\n", "default": b"default\n"}
    valid_configs = st.lists(st.sampled_from(["egress-router1", "egress-router2", "default", "no-such-cluster"])
                             | st.text(min_size=1, max_size=12), min_size=1, max_size=4).map(
        lambda names: json.dumps({"egress_clusters": names}))

    def start_services(self) -> dict[str, Any]:
        return {name: E.TcpServer(banner=banner).start() for name, banner in self.BANNERS.items()}

    def bootstrap(self, wasm: Path, config: bytes | str, port: int, admin_port: int,
                  services: dict[str, Any]) -> dict[str, Any]:
        return _limit_buffers(E.tcp_bootstrap(
            wasm_path=wasm, plugin_config=config, listener_port=port, admin_port=admin_port,
            clusters={name: server.address for name, server in services.items()}, default_cluster="default"))

    #: the sources hostile connections come from, and the two a new configuration is tried with
    SOURCES = ["127.%d.%d.%d" % (a, b, c) for a in range(4) for b in range(4) for c in range(1, 255)]
    PROBES = ["127.0.0.2", "127.0.0.3"]

    def expectation(self, host: MockHost, *, fixed: bool) -> dict[str, bytes | None]:
        """Source address -> the banner its connection should see (None: Envoy closes it)."""
        routes = {}
        for source in self.SOURCES if fixed else self.PROBES:
            conn = host.tcp_connection(source=f"{source}:40000")
            conn.connect()
            cluster = conn.filter_state.get("envoy.tcp_proxy.cluster", "default")
            routes[source] = self.BANNERS.get(cluster if isinstance(cluster, str) else cluster.decode())
            conn.close()
        return routes

    def check_connection(self, port: int, source: str, chunks: list[bytes], ending: str,
                         banner: bytes | None, what: str) -> None:
        with socket.socket() as conn:
            conn.settimeout(15)
            conn.bind((source, 0))
            conn.connect((E.LOOPBACK, port))
            try:
                for chunk in chunks:
                    conn.sendall(chunk)
                if ending == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                conn.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := conn.recv(1 << 16):
                    got += chunk
            except ConnectionResetError:
                assert banner is None, f"{what}: reset, expected {banner!r}"
                event("reset by Envoy")
                return
        if banner is None:
            assert got == b"", f"{what}: {got[:200]!r} through a cluster Envoy does not have"
        else:
            assert got == banner + b"".join(chunks), f"{what}: got {got[:200]!r}..., expected {banner!r} + echo"

    def check_serving(self, served: Served, port: int, expected: dict[str, bytes | None]) -> None:
        for source, banner in expected.items():
            self.check_connection(port, source, [b"hello\n"], "half-close", banner,
                                  f"a connection from {source} after a new configuration")


PROFILES: dict[str, Profile] = {"http_headers": HttpHeaders(), "tcp_egress": EgressRouting()}
HTTP_EXAMPLES = [n for n in EXAMPLE_NAMES if n in PROFILES and PROFILES[n].kind == "http"]
TCP_EXAMPLES = [n for n in EXAMPLE_NAMES if n in PROFILES and PROFILES[n].kind == "network"]


def test_every_example_has_a_profile():
    missing = [n for n in EXAMPLE_NAMES if n not in PROFILES]
    assert not missing, (f"examples without a hostile-input profile: {missing}; add one to PROFILES "
                         "in tests/test_e2e_hostile_input.py (how to serve it, its designed answers)")


@pytest.fixture(scope="module")
def served(request, pywasm_build, tmp_path_factory) -> Iterator[Served]:
    name: str = request.param
    profile = PROFILES[name]
    wasm = pywasm_build(EXAMPLES / name)
    services = profile.start_services()
    try:
        fixed_port, dynamic_port, admin_port = E.free_port(), E.free_port(), E.free_port()
        config = profile.bootstrap(wasm, profile.config, fixed_port, admin_port, services)
        dynamic = DynamicListener(
            tmp_path_factory.mktemp(f"hostile-{name}") / "lds.yaml",
            lambda plugin_config: profile.bootstrap(wasm, plugin_config, dynamic_port, admin_port,
                                                    services)["static_resources"]["listeners"][0])
        dynamic.write(profile.config)
        config.update(dynamic.bootstrap_part())
        # old listeners drain for a second, not Envoy's default ten minutes: a long hunt
        # replaces the dynamic listener hundreds of times
        with E.Envoy(config, extra_args=["--drain-time-s", "1"]) as envoy:
            with native_host(name, profile.config) as host:
                expectation = profile.expectation(host, fixed=True)
            served = Served(name, profile, envoy, fixed_port, dynamic_port, dynamic, LogWatch(envoy),
                            services, expectation)
            served.watch.check("start")
            yield served
            served.watch.check("the end")
    finally:
        for service in services.values():
            service.stop()


@pytest.mark.envoy
@pytest.mark.parametrize("served", HTTP_EXAMPLES, indirect=True)
@HYPOTHESIS
@given(req=hostile_requests())
def test_hostile_requests(served, req):
    rid = served.next_id()
    reply = exchange(served.fixed_port, req.raw(rid))
    what = f"{req.method!r} {req.path[:40]!r}, {len(req.headers)} headers, {len(req.body)} body bytes ({req.framing})"
    served.profile.check_reply(reply, rid, served.fixed_expectation, what=what)
    if reply.message is not None and reply.message.header(MARKER) is not None:
        assert served.services["upstream"].received[rid].body == req.body, f"{what}: the request body changed"
    served.watch.check(what)


@pytest.mark.envoy
@pytest.mark.parametrize("served", HTTP_EXAMPLES, indirect=True)
@HYPOTHESIS
@given(resp=hostile_responses())
def test_hostile_responses(served, resp):
    rid = served.next_id()
    upstream = served.services["upstream"]
    upstream.scripts[rid] = resp.raw(rid)
    if resp.framing == "close":
        upstream.closes.add(rid)
    reply = exchange(served.fixed_port, HostileRequest(b"GET", b"/r", [], b"", "none", []).raw(rid))
    what = f"status {resp.status}, {len(resp.headers)} headers, {len(resp.body)} body bytes ({resp.framing})"
    served.profile.check_reply(reply, rid, served.fixed_expectation, status=resp.status,
                               body=resp.body if resp.status not in (204, 304) else b"", what=what)
    served.watch.check(what)


@pytest.mark.envoy
@pytest.mark.parametrize("served", TCP_EXAMPLES, indirect=True)
@HYPOTHESIS
@given(octets=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 254)),
       chunks=st.lists(st.one_of(st.binary(max_size=2000), _BODY), max_size=4),
       ending=st.sampled_from(["half-close", "half-close", "reset"]))
def test_hostile_connections(served, octets, chunks, ending):
    source = "127.%d.%d.%d" % octets
    what = f"from {source}: {[len(c) for c in chunks]} bytes, then {ending}"
    served.profile.check_connection(served.fixed_port, source, chunks, ending,
                                    served.fixed_expectation[source], what)
    served.watch.check(what)


@pytest.mark.envoy
@pytest.mark.parametrize("served", HTTP_EXAMPLES + TCP_EXAMPLES, indirect=True)
@HYPOTHESIS
@given(data=st.data())
def test_hostile_configurations(served, data):
    valid = data.draw(st.booleans(), label="of the shape the plugin expects")
    config = data.draw(served.profile.valid_configs if valid else HOSTILE_CONFIGS, label="config")
    what = f"configuration {config[:80]!r} ({len(config)} bytes)"
    with native_host(served.name, config) as host:
        accepted_natively = host.configured
        expected = served.profile.expectation(host, fixed=False) if host.configured else None
    accepted = served.dynamic.apply(served.envoy, config)
    event("accepted" if accepted else "rejected")
    text = served.watch.check(what)
    assert accepted == accepted_natively, f"{what}: Envoy {'took' if accepted else 'rejected'} it, natively not"
    if not accepted:
        if config not in served.rejected:
            assert "on_configure: configuration rejected: " in text, f"{what}: rejected without a reason:\n{text[-2000:]}"
            served.rejected.add(config)
        return
    served.profile.check_serving(served, served.dynamic_port, expected)
    served.watch.check(what)
