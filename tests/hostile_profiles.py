"""What the hostile-input tests know about each example: the hostile input, how to serve the
example in Envoy (its helper services on 127.0.0.1), and its designed answers.

A designed answer comes from the plugin itself wherever it can: the example run natively under
the mock host says which configurations it accepts and what it does to an ordinary request;
the example's own ``services.py`` says what its helper services answer. What is written here by
hand is what the plugin's documentation promises (authz lets a request through only when its
service says 200; payload_masking never lets an unmasked JSON body out).
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import event
from hypothesis import strategies as st

from pywasm_sdk.testing import MockHost
from pywasm_sdk.tooling import envoy as E

from .conftest import EXAMPLES
from .hostile_envoy import ENVOY_OWN_STATUSES, ID_HEADER, MARKER, Reply, ScriptedUpstream, build_message, exchange
from .test_examples_helpers import example_services, local_envoy_config, wasm_plugin_configs

BUFFER_LIMIT = 64 * 1024  # per connection, both sides: bodies up to 5x this are sent

#: headers whose meaning is framing or the connection: a plugin configured to add them gets
#: whatever Envoy makes of that, which is checked only for not breaking Envoy
FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                     "te", "trailer", "proxy-connection", "host", ":status"})


# ------------------------------------------------------------------------------ hostile input

NAMES = st.from_regex(r"[a-z0-9][a-z0-9-]{0,24}", fullmatch=True).map(lambda s: b"x-h-" + s.encode())
_SAFE_BYTE = st.sampled_from([b for b in range(256) if b not in (0, 10, 13)])  # no CR, LF, NUL
_SHORT_VALUES = st.one_of(
    st.lists(_SAFE_BYTE, max_size=40).map(bytes),                         # any bytes, non-UTF-8 too
    st.just(b""),                                                         # empty
    st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]),
            max_size=20).map(lambda t: t.encode()),                       # UTF-8
)
#: one value in eight is long: 1 kB to past Envoy's 60 KiB for all headers
VALUES = st.one_of(*[_SHORT_VALUES] * 7, st.integers(1_000, 90_000).map(lambda n: b"v" * n))
HEADERS = st.one_of(
    *[st.lists(st.tuples(NAMES, _SHORT_VALUES), max_size=12)] * 2,
    st.lists(st.tuples(NAMES, VALUES), max_size=6),
    st.integers(90, 300).map(lambda n: [(b"x-h-many-%d" % i, b"%d" % i) for i in range(n)]),  # hundreds
)
#: what request smuggling and sloppy clients send (in one request of four): Envoy's codec decides
ODD_REQUEST_HEADERS = st.just([]) | st.just([]) | st.just([]) | st.lists(st.sampled_from([
    (b"content-length", b"abc"), (b"content-length", b"-1"), (b"transfer-encoding", b"gzip"),
    (b"transfer-encoding", b"chunked, identity"), (b"host", b""), (b"expect", b"100-continue"),
    (b"bad name", b"1"), (b"x-h-\x80", b"1"), (b"x-h-nul", b"a\x00b"), (b"", b"empty name"),
]), min_size=1, max_size=2)
BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=3000),
    st.integers(BUFFER_LIMIT - 10, 5 * BUFFER_LIMIT).map(lambda n: (bytes(range(256)) * (n // 256 + 1))[:n]),
)
CHUNKS = st.lists(st.integers(1, 70_000), min_size=1, max_size=5)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


def nested(depth: int, shape: str) -> str:
    return ("[" * depth + "]" * depth) if shape == "list" else ('{"a":' * depth + "1" + "}" * depth)


#: configurations no plugin is written for: wrong types, huge, deeply nested, not text at all
HOSTILE_CONFIGS = st.one_of(
    JSON_VALUES.map(json.dumps),                                                     # wrong types
    st.tuples(st.sampled_from([10, 500, 513, 1_000, 3_000, 100_000]),
              st.sampled_from(["list", "object"])).map(lambda d: nested(*d)),        # deeply nested
    st.integers(100_000, 1_000_000).map(lambda n: json.dumps({"x-big": "v" * n})),   # huge
    st.integers(100_000, 500_000).map(lambda n: "x-a=" + "b" * n),
    st.binary(max_size=200),                                                         # not UTF-8
    st.text(max_size=200),                                                           # any text
)


@dataclass
class HostileRequest:
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    framing: str
    chunks: list[int] = field(default_factory=list)

    def raw(self, rid: bytes) -> bytes:
        headers = [(b"host", b"hostile.test"), (ID_HEADER, rid), (b"connection", b"close"), *self.headers]
        framing = self.framing if self.body or self.method != b"GET" else "none"
        return build_message(self.method + b" " + self.path + b" HTTP/1.1", headers, self.body,
                             framing, self.chunks)

    def describe(self) -> str:
        return (f"{self.method.decode()} {self.path[:40]!r}, {len(self.headers)} headers, "
                f"{len(self.body)} body bytes ({self.framing})")


def ordinary_request(headers: list[tuple[bytes, bytes]] = ()) -> HostileRequest:
    return HostileRequest(b"GET", b"/", list(headers), b"", "none")


@dataclass
class HostileResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    framing: str
    chunks: list[int] = field(default_factory=list)

    def raw(self, rid: bytes) -> bytes:
        return build_message(b"HTTP/1.1 %d Hostile" % self.status, [(MARKER, rid), *self.headers],
                             self.body, self.framing, self.chunks)

    def describe(self) -> str:
        return f"status {self.status}, {len(self.headers)} headers, {len(self.body)} body bytes ({self.framing})"


# ------------------------------------------------------------------------------ what a plugin answers

@dataclass
class Answer:
    """What the plugin does to one request, from its native run: a reply of its own (``local``:
    status, the headers it passed, body), or the upstream's answer with headers ``added``."""

    local: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None
    added: list[tuple[bytes, bytes]] = field(default_factory=list)


def native_answer(host: MockHost, headers: list[tuple[bytes, bytes]], services: dict[str, Any]) -> Answer:
    """What the plugin does to a GET with ``headers``; its callouts are answered by ``services``
    (cluster -> the example's own service, whose ``respond`` says what it would answer)."""
    stream = host.http_stream()
    stream.send_request_headers([(":method", "GET"), (":path", "/"), (":authority", "hostile.test"),
                                 *[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]],
                                end_of_stream=True)
    while calls := host.pending_calls():
        call = calls[0]
        request = E.Request(call.method or "GET", call.header(":path") or "/",
                            {k: v for k, v in call.headers if not k.startswith(":")}, call.body)
        answer = services[call.cluster].respond(request)
        call.respond(answer.status, headers=answer.headers, body=answer.body)
    reply = stream.local_response
    if reply is not None:
        return Answer(local=(reply.status, [(k.encode(), v.encode()) for k, v in reply.headers], reply.body))
    stream.send_response_headers([(":status", "200")])
    return Answer(added=stream.response_headers_bytes[1:])


def assert_envoys_own(reply: Reply, what: str) -> None:
    """The reply is Envoy's own: none at all, or one without the upstream's marker and with a
    status Envoy answers with."""
    if reply.message is None:
        assert reply.raw == b"" or reply.reset, f"{what}: an incomplete reply {reply.raw[:500]!r}"
        event("Envoy closed the connection without an answer")
        return
    assert reply.message.header(MARKER) is None and reply.status in ENVOY_OWN_STATUSES, \
        f"{what}: not Envoy's own answer: {reply.raw[:1000]!r}"
    event(f"Envoy's own answer {reply.status}")


def check_answer(reply: Reply, rid: bytes, answer: Answer, *, status: int = 200, body: bytes | None = b"ok\n",
                 what: str, envoy_may_answer: bool = True) -> None:
    """The reply is ``answer`` (the plugin's own reply, or the upstream's with the additions), or,
    when ``envoy_may_answer``, Envoy's own."""
    if reply.message is None:
        assert envoy_may_answer and (reply.raw == b"" or reply.reset), f"{what}: incomplete {reply.raw[:500]!r}"
        event("Envoy closed the connection without an answer")
        return
    marker = reply.message.header(MARKER)
    if answer.local is not None:
        local_status, local_headers, local_body = answer.local
        if reply.status == local_status and marker is None and reply.message.body == local_body:
            for name, value in local_headers:  # HTTP/1 drops the spaces around a value
                assert value.strip(b" \t") in reply.message.values(name), \
                    f"{what}: {name!r} missing: {reply.raw[:500]!r}"
            event(f"the plugin's own answer {local_status}")
            return
    elif marker is not None:
        assert marker == rid, f"{what}: the answer to another request: {reply.raw[:500]!r}"
        assert reply.status == status, f"{what}: {reply.raw[:500]!r}"
        if body is not None:
            assert reply.message.body == body, f"{what}: the body changed"
        if not any(name.decode("latin-1") in FRAMING for name, _ in answer.added):
            for name, value in answer.added:
                assert value.strip(b" \t") in reply.message.values(name), \
                    f"{what}: {name!r}: {value[:100]!r} not added: {reply.message.headers[:20]!r}"
        event("the upstream's answer, through the plugin")
        return
    assert envoy_may_answer, f"{what}: not the designed answer ({answer}): {reply.raw[:1000]!r}"
    assert_envoys_own(reply, f"{what}: neither the designed answer ({answer}) nor Envoy's own")


# ------------------------------------------------------------------------------ profiles

def _limit_buffers(config: dict[str, Any]) -> dict[str, Any]:
    for listener in config["static_resources"]["listeners"]:
        listener["per_connection_buffer_limit_bytes"] = BUFFER_LIMIT
    for cluster in config["static_resources"]["clusters"]:
        cluster["per_connection_buffer_limit_bytes"] = BUFFER_LIMIT
    return config


class Profile:
    """How to serve one example and what its designed answers are."""

    kind = "http"
    name = ""
    #: the fixed listener's configuration
    config: str = ""
    #: the VM's environment variables
    env: dict[str, str] = {}
    #: configurations of the shape the plugin is written for
    valid_configs: st.SearchStrategy = st.nothing()
    #: the clusters the plugin calls (HTTP callouts), among its helper services
    callout_clusters: tuple[str, ...] = ()

    def helper_services(self) -> dict[str, Any]:
        """Cluster name -> a loopback server (not started) the plugin calls or routes to."""
        return {}

    def start_services(self, fixed_port: int, dynamic_port: int) -> dict[str, Any]:
        """The running helper services by cluster name, and ``_port``: the fixed listener's."""
        return {"_port": fixed_port, **{name: server.start() for name, server in self.helper_services().items()}}

    def stop_services(self, services: dict[str, Any]) -> None:
        for name, server in services.items():
            if not name.startswith("_"):
                server.stop()

    def bootstrap(self, wasm: Path, config: bytes | str, port: int, admin_port: int,
                  services: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def native(self, config: bytes | str) -> MockHost:
        """The example run natively under the mock host: the oracle for its designed answers."""
        return MockHost.from_plugin(EXAMPLES / self.name, plugin_config=config, env=dict(self.env),
                                    clusters=list(self.callout_clusters))

    def expectation(self, host: MockHost, services: dict[str, Any], *, fixed: bool) -> Any:
        """What the plugin does (natively, in ``host``): for the fixed listener (``fixed``), or
        for the ordinary request or connection :meth:`check_serving` makes."""
        raise NotImplementedError

    def check_serving(self, served: Any, port: int, expected: Any) -> None:
        raise NotImplementedError


class HttpProfile(Profile):
    kind = "http"
    #: headers that let an ordinary request through the plugin (and past it, to the upstream)
    passing: list[tuple[bytes, bytes]] = []
    #: extra request headers of hostile requests (e.g. credentials)
    request_extras: st.SearchStrategy = st.just([])
    response_extras: st.SearchStrategy = st.just([])
    response_bodies: st.SearchStrategy = BODIES

    def helper_services(self) -> dict[str, Any]:
        return {"upstream": ScriptedUpstream()}

    def bootstrap(self, wasm: Path, config: bytes | str, port: int, admin_port: int,
                  services: dict[str, Any]) -> dict[str, Any]:
        return _limit_buffers(E.http_bootstrap(
            wasm_path=wasm, plugin_config=config, listener_port=port, admin_port=admin_port,
            upstream=services["upstream"].address, env=self.env or None,
            extra_clusters={n: s.address for n, s in services.items() if n != "upstream" and n[0] != "_"}))

    def requests(self) -> st.SearchStrategy:
        @st.composite
        def draw_request(draw: st.DrawFn) -> HostileRequest:
            return HostileRequest(
                method=draw(st.sampled_from([b"GET", b"POST", b"PUT"])),
                path=draw(st.one_of(st.just(b"/hostile"), st.just(b"/hostile?q=1&q=%ff"), st.just(b"/"),
                                    st.binary(max_size=30).map(lambda b: b"/h?" + b.replace(b" ", b"+")
                                                               .replace(b"\r", b"").replace(b"\n", b"")))),
                headers=draw(self.request_extras) + draw(HEADERS) + draw(ODD_REQUEST_HEADERS),
                body=draw(BODIES), framing=draw(st.sampled_from(["length", "chunked"])), chunks=draw(CHUNKS))
        return draw_request()

    def responses(self) -> st.SearchStrategy:
        @st.composite
        def draw_response(draw: st.DrawFn) -> HostileResponse:
            status = draw(st.sampled_from([200, 201, 204, 301, 304, 400, 404, 418, 500, 503, 599]))
            no_body = status in (204, 304)
            return HostileResponse(
                status=status, headers=draw(self.response_extras) + draw(HEADERS),
                body=b"" if no_body else draw(self.response_bodies),
                framing="length" if no_body else draw(st.sampled_from(["length", "chunked", "close"])),
                chunks=draw(CHUNKS))
        return draw_response()

    def expectation(self, host: MockHost, services: dict[str, Any], *, fixed: bool) -> Answer:
        return native_answer(host, self.passing if fixed else [], services)

    def check_request(self, served: Any, req: HostileRequest, rid: bytes, reply: Reply) -> None:
        check_answer(reply, rid, served.fixed_expectation, what=req.describe())
        if reply.message is not None and reply.message.header(MARKER) is not None:
            assert served.services["upstream"].received[rid].body == req.body, f"{req.describe()}: body changed"

    def check_response(self, served: Any, resp: HostileResponse, rid: bytes, reply: Reply) -> None:
        check_answer(reply, rid, served.fixed_expectation, status=resp.status,
                     body=b"" if resp.status in (204, 304) else resp.body, what=resp.describe())

    def check_serving(self, served: Any, port: int, expected: Answer) -> None:
        rid = served.next_id()
        reply = exchange(port, ordinary_request().raw(rid))
        check_answer(reply, rid, expected, what="an ordinary request after a new configuration",
                     envoy_may_answer=any(n.decode("latin-1") in FRAMING for n, _ in expected.added))


class HttpHeaders(HttpProfile):
    """examples/http_headers: the designed answer is the upstream's, untouched but for the headers
    the configuration names (which the native run lists)."""

    name = "http_headers"
    config = "x-served-by=pywasm-hostile\nx-frame-options=DENY"
    valid_configs = st.one_of(
        st.dictionaries(st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,30}", fullmatch=True),
                        st.text(max_size=40), max_size=6).map(json.dumps),
        st.lists(st.tuples(st.from_regex(r"x-[a-z0-9-]{1,20}", fullmatch=True),
                           st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]),
                                   max_size=40)),
                 max_size=6).map(lambda pairs: "\n".join(f"{n}={v}" for n, v in pairs)),
    )


class Authz(HttpProfile):
    """examples/authz with its own authorization service: no credentials is the plugin's 401, the
    service's 200 lets the request through with the identity it named, its 5xx is the plugin's
    503 and anything else its 403 (with the service's body)."""

    name = "authz"
    callout_clusters = ("authz",)
    config = json.dumps({"cluster": "authz", "timeout_ms": 5000})
    passing = [(b"authorization", b"Bearer alice-token")]
    request_extras = st.one_of(
        st.just([]), st.just([(b"authorization", b"Bearer alice-token")]),
        st.just([(b"authorization", b"Bearer mallory-token")]),
        VALUES.map(lambda v: [(b"authorization", v)]),
        VALUES.map(lambda v: [(b"authorization", b"Bearer " + v)]),
        st.just([(b"authorization", b"Bearer bob-token"), (b"x-auth-identity", b"admin")]),  # forged
    )
    response_extras = st.just([])
    valid_configs = st.fixed_dictionaries(
        {"cluster": st.sampled_from(["authz", "upstream", "no-such-cluster"])},
        optional={"timeout_ms": st.integers(-5, 70_000) | st.booleans(), "path": st.text(max_size=10),
                  "credentials_header": st.sampled_from(["authorization", "x-token", "Bad Header", ""]),
                  "denied_by_header": st.sampled_from(["x-denied-by", "x-who"]),
                  "denied_by": st.text(max_size=10), "challenge": st.text(max_size=10),
                  "identity_header": st.just("x-id")}).map(json.dumps)

    def helper_services(self) -> dict[str, Any]:
        return {**super().helper_services(), "authz": example_services("authz").authorization_service()}

    def check_request(self, served: Any, req: HostileRequest, rid: bytes, reply: Reply) -> None:
        what = req.describe()
        credentials = next((v for k, v in req.headers if k == b"authorization"), None)
        credentials = credentials.strip(b" \t") if credentials is not None else None
        if reply.message is None or (reply.message.header(MARKER) is None and reply.message.header(b"x-denied-by") is None):
            assert_envoys_own(reply, what)
            return
        if not credentials:
            check_answer(reply, rid, Answer(local=(401, [(b"x-denied-by", b"authz")], b"missing credentials\n")),
                         what=what)
            return
        services = example_services("authz")
        verdict = services.check(E.Request("GET", "/check", {"authorization": credentials.decode("latin-1")}, b""))
        if verdict.status == 200:
            check_answer(reply, rid, Answer(), what=what)
            identity = served.services["upstream"].received[rid].values(b"x-auth-identity")
            assert identity == [verdict.headers["x-auth-identity"].encode()], f"{what}: identity {identity!r}"
        elif verdict.status >= 500:
            check_answer(reply, rid, Answer(local=(503, [(b"x-denied-by", b"authz")], b"authorization service unavailable\n")), what=what)
        else:
            check_answer(reply, rid, Answer(local=(403, [(b"x-denied-by", b"authz")], verdict.body or b"access denied\n")),
                         what=what)


class PayloadMasking(HttpProfile):
    """examples/payload_masking with its own interceptor: JSON response bodies are replaced by
    what the interceptor answers for them, and when it cannot mask (an error answer, a body past
    the buffer limit) the original body never reaches the client; other responses pass
    untouched. Its settings come from the VM's environment, so any plugin configuration is
    accepted (and ignored)."""

    name = "payload_masking"
    callout_clusters = ("interceptor",)
    env = {"INTERCEPTOR_CLUSTER": "interceptor", "INTERCEPTOR_API_KEY": "demo-key",
           "INTERCEPTOR_CLIENT_ID": "demo-client", "INTERCEPTOR_CLIENT_SECRET": "demo-secret",
           "INTERCEPTOR_TIMEOUT_MS": "5000"}
    valid_configs = st.just("")
    response_extras = st.sampled_from([
        [], [(b"content-type", b"application/json")], [(b"content-type", b"application/problem+json; charset=utf-8")],
        [(b"content-type", b"text/plain")], [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]])
    response_bodies = st.one_of(
        BODIES,
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.just(json.dumps([{"email": "someone@example.com", "phone": "+44 20 7946 0000", "n": i}
                            for i in range(5)]).encode()),
        st.sampled_from([600, 5_000]).map(lambda d: nested(d, "list").encode()),
    )

    def helper_services(self) -> dict[str, Any]:
        return {**super().helper_services(), "interceptor": example_services("payload_masking").interceptor()}

    def check_request(self, served: Any, req: HostileRequest, rid: bytes, reply: Reply) -> None:
        super().check_request(served, req, rid, reply)
        if reply.message is not None and reply.message.header(MARKER) is not None:
            received = served.services["upstream"].received[rid]
            assert received.header(b"accept-encoding") is None, f"{req.describe()}: accept-encoding kept"

    def check_response(self, served: Any, resp: HostileResponse, rid: bytes, reply: Reply) -> None:
        what = resp.describe()
        content_type = next((v for k, v in resp.headers if k == b"content-type"), b"").decode("latin-1")
        media = content_type.split(";", 1)[0].strip().lower()
        json_body = media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
        if not json_body or not resp.body or resp.status in (204, 304):
            return super().check_response(served, resp, rid, reply)
        if any(k == b"content-encoding" for k, _ in resp.headers):
            check_answer(reply, rid, Answer(local=(502, [], b"the response could not be masked\n")), what=what)
            return
        masked = self._masked(resp.body)
        if masked is not None and len(resp.body) <= BUFFER_LIMIT:
            check_answer(reply, rid, Answer(), status=resp.status, body=masked, what=what)
            return
        # the interceptor refuses it, or it is past what Envoy buffers: never the original body
        assert resp.body not in reply.raw or len(resp.body) < 4, f"{what}: the unmasked body reached the client"
        if reply.message is not None and reply.message.header(MARKER) is None:
            assert reply.status in ENVOY_OWN_STATUSES, f"{what}: {reply.raw[:500]!r}"
        event("withheld: reset or Envoy's own answer")

    def _masked(self, body: bytes) -> bytes | None:
        """What the interceptor answers for ``body`` (None: not 200), asked the way the plugin asks."""
        services = example_services("payload_masking")
        headers = {"x-api-key": "demo-key", "x-masking-fields": "email,phone,card_number",
                   "x-masking-style": "partial", "content-type": "application/json",
                   "authorization": "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ="}
        try:
            verdict = services.intercept(E.Request("POST", "/v1/mask", headers, body))
        except RecursionError:
            return None  # the service fails on it too: the plugin gets no answer
        return verdict.body if verdict.status == 200 else None


class RateLimit(HttpProfile):
    """examples/rate_limit: a request passes untouched, or gets the plugin's 429 (``rate limited``,
    with a ``retry-after`` in whole seconds). Its buckets live in the proxy's shared data, which
    outlives a configuration, so after a new configuration either answer is the designed one."""

    name = "rate_limit"
    config = json.dumps({"key": "header", "header": "x-api-key", "max_tokens": 3,
                         "fill_interval_ms": 600_000, "on_missing_key": "allow"})
    request_extras = st.one_of(st.just([]), st.sampled_from([b"k1", b"k2"]).map(lambda k: [(b"x-api-key", k)]),
                               VALUES.map(lambda v: [(b"x-api-key", v)]))
    valid_configs = st.fixed_dictionaries(
        {"key": st.sampled_from(["header", "source_ip", "path", "cookie"])},
        optional={"header": st.sampled_from(["x-api-key", "X-User", "bad header", ""]),
                  "max_tokens": st.integers(-1, 5) | st.booleans(), "tokens_per_fill": st.integers(0, 3),
                  "fill_interval_ms": st.integers(0, 10), "on_missing_key": st.sampled_from(["shared", "allow", "deny"]),
                  "max_keys": st.integers(0, 3), "stat_prefix": st.sampled_from(["rl", "a.b", "bad prefix", ""])}
    ).map(json.dumps)

    def _limited(self, reply: Reply, what: str) -> bool:
        """True (and checked) when the reply is the plugin's 429."""
        if reply.message is None or reply.status != 429 or reply.message.header(MARKER) is not None:
            return False
        assert reply.message.body == b"rate limited\n", f"{what}: {reply.raw[:300]!r}"
        assert (reply.message.header(b"retry-after") or b"").isdigit(), f"{what}: {reply.raw[:300]!r}"
        event("the plugin's own answer 429")
        return True

    def check_request(self, served: Any, req: HostileRequest, rid: bytes, reply: Reply) -> None:
        keyed = any(k == b"x-api-key" for k, _ in req.headers)
        if not (keyed and self._limited(reply, req.describe())):
            super().check_request(served, req, rid, reply)

    def check_serving(self, served: Any, port: int, expected: Answer) -> None:
        rid = served.next_id()
        reply = exchange(port, ordinary_request().raw(rid))
        if not self._limited(reply, "an ordinary request after a new configuration"):
            check_answer(reply, rid, Answer(), what="an ordinary request after a new configuration",
                         envoy_may_answer=False)


class TcpProfile(Profile):
    """A network filter that routes connections: the designed answer is the greeting of where the
    connection went, then the echo of every byte sent; one routed to a cluster Envoy does not have
    is closed by Envoy. Where each connection goes comes from the native run (the filter state
    the plugin sets)."""

    kind = "network"
    #: the addresses a client connects to (the listener's), and the sources it connects from
    destinations: tuple[str, ...] = ("127.0.0.1",)
    sources: tuple[str, ...] = ()
    #: the sources a new configuration is tried with
    probes: tuple[str, ...] = ("127.0.0.2", "127.0.0.3")

    def native(self, config: bytes | str) -> MockHost:
        return MockHost.from_plugin(EXAMPLES / self.name, plugin_config=config)

    def greeting(self, filter_state: dict[str, Any], destination: str, services: dict[str, Any]) -> bytes | None | str:
        """What a connection with this filter state sees first: bytes, None (Envoy closes it), or
        "any" (whatever happens is fine, e.g. raw bytes sent to a proxy without CONNECT)."""
        raise NotImplementedError

    def expectation(self, host: MockHost, services: dict[str, Any], *, fixed: bool) -> dict[tuple[str, str], Any]:
        """(source, destination) -> the greeting its connection should see."""
        routes = {}
        for source in self.sources if fixed else self.probes:
            for destination in self.destinations:
                conn = host.tcp_connection(source=f"{source}:40000", destination=f"{destination}:{services['_port']}")
                conn.connect()
                state = {k: v if isinstance(v, str) else bytes(v).decode("latin-1") for k, v in conn.filter_state.items()}
                routes[source, destination] = self.greeting(state, destination, services)
                conn.close()
        return routes

    #: a client that half-closes before a tunnel is up may get less than the whole echo (or
    #: nothing): Envoy cuts such a tunnel short (its own answer), but never sends anything else
    early_half_close_drops_tunnels = False

    def check_connection(self, port: int, source: str, destination: str, chunks: list[bytes], ending: str,
                         greeting: bytes | None | str, what: str) -> None:
        """``ending``: "echoed" (read the greeting and the echo, then close), "half-close" (shut
        the sending side at once, read to the end) or "reset" (abort right after sending)."""
        expected = greeting + b"".join(chunks) if isinstance(greeting, bytes) else None
        got = b""
        with socket.socket() as conn:
            conn.settimeout(2 if greeting == "any" else 15)
            conn.bind((source, 0))
            try:
                conn.connect((destination, port))
                for chunk in chunks:
                    conn.sendall(chunk)
                if ending == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if ending == "half-close":
                    conn.shutdown(socket.SHUT_WR)
                while (expected is None or len(got) < len(expected)) and (chunk := conn.recv(1 << 16)):
                    got += chunk
            except (ConnectionResetError, BrokenPipeError):
                assert greeting is None or greeting == "any", f"{what}: reset, expected {greeting!r}"
                event("reset by Envoy")
                return
            except TimeoutError:
                assert greeting == "any", f"{what}: no answer within 15 s, got {got[:200]!r}"
        if greeting == "any":
            event("a route with no designed answer")
        elif greeting is None:
            assert got == b"", f"{what}: {got[:200]!r} through a cluster Envoy does not have"
            event("closed by Envoy (no such cluster)")
        elif (ending == "half-close" and self.early_half_close_drops_tunnels and self.tunnelled(greeting)
              and expected.startswith(got) and got != expected):
            event("Envoy cut short a tunnel whose client half-closed first")
        else:
            assert got == expected, f"{what}: got {got[:200]!r}..., expected {greeting!r} + echo"
            event(f"routed: {greeting.strip().decode()}")

    def tunnelled(self, greeting: bytes) -> bool:
        return False

    def check_serving(self, served: Any, port: int, expected: dict[tuple[str, str], Any]) -> None:
        for (source, destination), greeting in expected.items():
            self.check_connection(port, source, destination, [b"hello\n"], "echoed", greeting,
                                  f"a connection from {source} to {destination} after a new configuration")


class EgressRouting(TcpProfile):
    """examples/tcp_egress: each connection goes to the egress router its source's last octet
    picks (``tcp_proxy``'s own cluster when it cannot read the source)."""

    name = "tcp_egress"
    config = ""
    BANNERS = {"egress-router1": b"router1\n", "egress-router2": b"router2\n", "default": b"default\n"}
    valid_configs = st.lists(st.sampled_from(["egress-router1", "egress-router2", "default", "no-such-cluster"])
                             | st.text(min_size=1, max_size=12), min_size=1, max_size=4).map(
        lambda names: json.dumps({"egress_clusters": names}))
    sources = tuple("127.%d.%d.%d" % (a, b, c) for a in range(4) for b in range(4) for c in range(1, 255))

    def helper_services(self) -> dict[str, Any]:
        return {name: E.TcpServer(banner=banner) for name, banner in self.BANNERS.items()}

    def bootstrap(self, wasm: Path, config: bytes | str, port: int, admin_port: int,
                  services: dict[str, Any]) -> dict[str, Any]:
        return _limit_buffers(E.tcp_bootstrap(
            wasm_path=wasm, plugin_config=config, listener_port=port, admin_port=admin_port,
            clusters={n: s.address for n, s in services.items() if not n.startswith("_")}, default_cluster="default"))

    def greeting(self, filter_state: dict[str, Any], destination: str, services: dict[str, Any]) -> bytes | None:
        return self.BANNERS.get(filter_state.get("envoy.tcp_proxy.cluster", "default"))


class EgressTunnel(TcpProfile):
    """examples/egress_tunnel with its own CONNECT proxies: a tunnelled connection reaches its
    destination through the proxy the plugin chose (the destination greets it), a direct one the
    direct server; its Envoy configuration is the example's envoy.yaml."""

    name = "egress_tunnel"
    early_half_close_drops_tunnels = True
    destinations = ("127.0.0.10", "127.0.0.11", "127.0.0.12")
    sources = tuple("127.0.%d.%d" % (b, c) for b in range(2) for c in range(1, 255))
    probes = ("127.0.0.2", "127.0.0.3")
    valid_configs = st.fixed_dictionaries(
        {"routes": st.lists(st.fixed_dictionaries(
            {}, optional={"destination": st.sampled_from(["127.0.0.10", "127.0.0.0/24", "10.0.0.0/8", "bad"]),
                          "source": st.sampled_from(["127.0.0.3", "127.0.0.0/30"]),
                          "port": st.integers(0, 3) | st.just([]),
                          "tunnel": st.sampled_from(["proxy-a", "proxy-b", "direct", "no-such-cluster", ""]),
                          "direct": st.sampled_from([True, False, "direct", "proxy-a"])}), max_size=3)},
        optional={"default": st.sampled_from([{"direct": True}, {"tunnel": "proxy-b"}, {}, []])}).map(json.dumps)

    @property
    def config(self) -> str:  # type: ignore[override]
        return json.dumps({"routes": [{"destination": "127.0.0.10", "tunnel": "proxy-a"},
                                      {"source": "127.0.0.3", "tunnel": "proxy-b"},
                                      {"destination": "127.0.0.11", "tunnel": "proxy-b"}],
                           "default": {"direct": True}})

    def start_services(self, fixed: int, dynamic: int) -> dict[str, Any]:
        services = example_services("egress_tunnel").Services(
            listen_port=fixed, direct_port=E.free_port(),
            proxy_ports={"proxy-a": E.free_port(), "proxy-b": E.free_port()}).start()
        for proxy in services.proxies.values():  # the dynamic listener's destinations are the same servers
            for authority, server in services.destinations.items():
                proxy.routes[authority.rsplit(":", 1)[0] + f":{dynamic}"] = server.address
        return {"_all": services, "_port": fixed, "direct": services.direct, **services.proxies}

    def stop_services(self, services: dict[str, Any]) -> None:
        services["_all"].stop()

    def bootstrap(self, wasm: Path, config: bytes | str, port: int, admin_port: int,
                  services: dict[str, Any]) -> dict[str, Any]:
        built = local_envoy_config("egress_tunnel", wasm, listeners={"egress": port}, admin_port=admin_port,
                                   clusters={n: services[n].address for n in ("direct", "proxy-a", "proxy-b")})
        wasm_plugin_configs(built)[0]["configuration"] = E.any_value(config)
        return _limit_buffers(built)

    def greeting(self, filter_state: dict[str, Any], destination: str, services: dict[str, Any]) -> bytes | None | str:
        cluster = filter_state.get("envoy.tcp_proxy.cluster", "direct")
        tunnel = filter_state.get("envoy.tcp_proxy.disable_tunneling") != "true"
        if cluster not in ("direct", "proxy-a", "proxy-b"):
            return None  # Envoy has no such cluster: it closes the connection
        if tunnel and cluster != "direct":  # CONNECT through the proxy, to where the client was going
            return f"hello from {destination}:{services['_port']}\n".encode()
        if not tunnel and cluster == "direct":
            return services["direct"].banner
        return "any"  # CONNECT to a server that is no proxy, or raw bytes to a proxy: not designed

    def tunnelled(self, greeting: bytes) -> bool:
        return greeting.startswith(b"hello from 127.")


PROFILES: dict[str, Profile] = {p.name: p for p in (HttpHeaders(), Authz(), PayloadMasking(), RateLimit(),
                                                    EgressRouting(), EgressTunnel())}
