"""examples/rate_limit under the mock host: natively and as the built .wasm (they must agree),
and as two workers of one proxy sharing one SharedStore.

The real-Envoy side is tests/test_e2e_rate_limit.py.
"""

from __future__ import annotations

import json

import pytest

from pywasm_sdk.testing import Action, LogLevel, MockHost, SharedStore

from .conftest import EXAMPLES

EXAMPLE = EXAMPLES / "rate_limit"
T0 = 1_700_000_000 * 10**9  # a fixed start for the proxy clock: the tests move it themselves


def config(**fields) -> str:
    return json.dumps({"key": "header", "header": "x-api-key", "max_tokens": 3, "tokens_per_fill": 1,
                       "fill_interval_ms": 2000, **fields})


def send(host: MockHost, headers: dict | None = None, path: str = "/", source: str = "10.0.0.2:1234"):
    """One request; returns (status the client gets, retry-after or None). 200: it went on."""
    stream = host.http_stream(source=source)
    action = stream.send_request_headers({":method": "GET", ":path": path, ":authority": "api", **(headers or {})})
    reply = stream.local_response
    if reply is None:
        assert action == Action.CONTINUE
        return 200, None
    assert action == Action.PAUSE and reply.body == b"rate limited\n" and reply.details == "rate_limited"
    return reply.status, dict(reply.headers).get("retry-after")


def statuses(host: MockHost, count: int, headers: dict | None = None, **where) -> list[int]:
    return [send(host, headers, **where)[0] for _ in range(count)]


def test_a_key_gets_max_tokens_then_429_with_retry_after(mock_host, host_mode):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=config(), start_time_ns=T0)
    assert host.logs.find("rate_limit: 3 tokens per header x-api-key, 1 more every 2000 ms", level=LogLevel.INFO)
    assert statuses(host, 3, {"x-api-key": "alice"}) == [200, 200, 200]
    assert send(host, {"x-api-key": "alice"}) == (429, "2")
    assert statuses(host, 3, {"x-api-key": "bob"}) == [200, 200, 200]  # its own bucket


def test_tokens_come_back_on_the_proxy_clock(mock_host, host_mode):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=config(), start_time_ns=T0)
    assert statuses(host, 4, {"x-api-key": "a"}) == [200, 200, 200, 429]
    host.advance_time(1500)
    assert send(host, {"x-api-key": "a"}) == (429, "1")  # 0.5 s to go: rounded up to whole seconds
    host.advance_time(500)
    assert statuses(host, 2, {"x-api-key": "a"}) == [200, 429]  # exactly one token
    host.advance_time(60_000)
    assert statuses(host, 4, {"x-api-key": "a"}) == [200, 200, 200, 429]  # never more than max_tokens


def test_a_clock_that_goes_back_does_not_add_tokens(pywasm_build):
    shared = SharedStore()
    with MockHost.from_wasm(pywasm_build(EXAMPLE), plugin_config=config(), start_time_ns=T0 + 10**9,
                            shared=shared) as ahead, \
         MockHost.from_wasm(pywasm_build(EXAMPLE), plugin_config=config(), start_time_ns=T0, shared=shared) as behind:
        assert statuses(ahead, 3, {"x-api-key": "k"}) == [200, 200, 200]
        assert send(behind, {"x-api-key": "k"}) == (429, "2")


@pytest.mark.parametrize("limit, requests, expected", [
    ({"key": "source_ip", "max_tokens": 2},
     [{"source": "10.0.0.2:1000"}, {"source": "10.0.0.2:2000"}, {"source": "10.0.0.3:1000"},
      {"source": "10.0.0.2:3000"}], [200, 200, 200, 429]),
    ({"key": "source_ip", "max_tokens": 1},
     [{"source": "[2001:db8::1]:1000"}, {"source": "[2001:db8::1]:2000"}, {"source": "[2001:db8::2]:1000"}],
     [200, 429, 200]),
    ({"key": "path", "max_tokens": 2},
     [{"path": "/a?x=1"}, {"path": "/a?x=2"}, {"path": "/b"}, {"path": "/a"}], [200, 200, 200, 429]),
], ids=["ipv4", "ipv6", "path"])
def test_other_keys(mock_host, host_mode, limit, requests, expected):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=json.dumps(limit), start_time_ns=T0)
    assert [send(host, **where)[0] for where in requests] == expected


def test_header_values_that_are_not_utf8_do_not_share_a_bucket(mock_host, host_mode):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=config(max_tokens=1), start_time_ns=T0)
    # 0x80 and 0x81 would both decode to U+FFFD, as would 0xff; U+FFFD itself is distinct again
    for value in (b"\x80", b"\x81", b"\xff", "\ufffd".encode()):
        assert statuses(host, 2, {"x-api-key": value}) == [200, 429], value
    assert host.metrics.value("rate_limit.keys") == 4
    assert len(host.shared_data) == 4


@pytest.mark.parametrize("missing, expected", [("shared", [200, 200, 200, 429]), ("allow", [200] * 5)])
def test_requests_without_the_header(mock_host, host_mode, missing, expected):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=config(on_missing_key=missing), start_time_ns=T0)
    assert statuses(host, len(expected)) == expected


def test_metrics(mock_host, host_mode):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=config(stat_prefix="api.limits"), start_time_ns=T0)
    statuses(host, 5, {"x-api-key": "a"})
    statuses(host, 1, {"x-api-key": "b"})
    assert {name: host.metrics.value(name) for name in host.metrics} == \
        {"api.limits.allowed": 4, "api.limits.rejected": 2, "api.limits.keys": 2}


def test_keys_beyond_max_keys_share_one_bucket(mock_host, host_mode):
    host = mock_host(EXAMPLE, mode=host_mode, plugin_config=config(max_keys=2, max_tokens=1), start_time_ns=T0)
    assert statuses(host, 1, {"x-api-key": "a"}) + statuses(host, 1, {"x-api-key": "b"}) == [200, 200]
    assert statuses(host, 1, {"x-api-key": "c"}) == [200]   # the overflow bucket's token
    assert statuses(host, 1, {"x-api-key": "d"}) == [429]   # same overflow bucket
    assert statuses(host, 1, {"x-api-key": "a"}) == [429]   # known keys keep their own
    assert host.metrics.value("rate_limit.keys") == 2
    assert len(host.logs.find("new keys share one", level=LogLevel.WARN)) == 1


BAD = [
    ("", "no configuration: expected JSON"),
    ("key=header", "the configuration is not JSON"),
    ("[1]", "the configuration must be a JSON object, not list"),
    ('{"max_tokens": 3}', "key: required, one of header, source_ip, path"),
    ('{"key": "cookie", "max_tokens": 3}', 'key: expected one of header, source_ip, path, got "cookie"'),
    ('{"key": "header", "max_tokens": 3}', 'header: required when key is "header"'),
    ('{"key": "header", "header": "x api", "max_tokens": 3}', 'header: "x api" is not a header name'),
    ('{"key": "path", "header": "x-a", "max_tokens": 3}', 'header: only used when key is "header"'),
    ('{"key": "path"}', "max_tokens: required (a positive integer)"),
    ('{"key": "path", "max_tokens": 0}', "max_tokens: expected a positive integer, got 0"),
    ('{"key": "path", "max_tokens": 2.5}', "max_tokens: expected a positive integer, got 2.5"),
    ('{"key": "path", "max_tokens": true}', "max_tokens: expected a positive integer, got true"),
    ('{"key": "path", "max_tokens": 3, "tokens_per_fill": -1}', "tokens_per_fill: expected a positive integer"),
    ('{"key": "path", "max_tokens": 3, "fill_interval_ms": "1s"}', 'fill_interval_ms: expected a positive integer, got "1s"'),
    ('{"key": "path", "max_tokens": 3, "on_missing_key": "deny"}', "on_missing_key: expected one of shared, allow"),
    ('{"key": "path", "max_tokens": 3, "max_keys": 0}', "max_keys: expected a positive integer, got 0"),
    ('{"key": "path", "max_tokens": 3, "stat_prefix": "a..b"}', 'stat_prefix: "a..b" is not a metric name'),
    ('{"key": "path", "max_token": 3}', "max_token: unknown field (known: key, header, max_tokens"),
]


@pytest.mark.parametrize("raw, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_a_wrong_configuration_is_rejected_naming_the_field(mock_host, raw, message):
    host = mock_host(EXAMPLE, plugin_config=raw)
    assert not host.configured
    assert host.logs.find(f"configuration rejected: {message}", level=LogLevel.ERROR), host.logs.text()


def test_a_wrong_configuration_is_rejected_in_wasm_too(mock_host):
    host = mock_host(EXAMPLE, mode="wasm", plugin_config='{"key": "path", "max_tokens": 0}')
    assert not host.configured
    assert host.logs.find("configuration rejected: max_tokens: expected a positive integer, got 0")


# -- several workers of one proxy: hosts sharing one SharedStore -------------------------------

def workers(pywasm_build, first_mode: str, **options) -> tuple[MockHost, MockHost]:
    """Two VMs of one proxy: the same plugin and vm_id, one store, the same clock."""
    shared = SharedStore()
    options = {"plugin_config": config(), "start_time_ns": T0, "shared": shared, **options}
    first = (MockHost.from_plugin(EXAMPLE, **options) if first_mode == "native"
             else MockHost.from_wasm(pywasm_build(EXAMPLE), **options))
    return first, MockHost.from_wasm(pywasm_build(EXAMPLE), **options)


def test_workers_share_one_limit(pywasm_build, host_mode):
    one, two = workers(pywasm_build, host_mode)
    with one, two:
        codes = [send(worker, {"x-api-key": "k"})[0] for worker in (one, two, one, two, one, two)]
        assert codes == [200, 200, 200, 429, 429, 429]
        # the proxy's statistics are the sum over its workers, as in Envoy's /stats
        assert one.metrics.value("rate_limit.allowed") == two.metrics.value("rate_limit.allowed") == 3
        assert one.metrics.value("rate_limit.rejected") == 3 and one.metrics.value("rate_limit.keys") == 1
        for worker in (one, two):
            worker.advance_time(2000)  # one clock: every worker's moves
        assert [send(worker, {"x-api-key": "k"})[0] for worker in (two, one)] == [200, 429]


class RacingStore(SharedStore):
    """A store where another worker handles a request between a worker's read and its write."""

    def __init__(self) -> None:
        super().__init__()
        self.race = None

    def get(self, vm_id, key):
        found = super().get(vm_id, key)
        race, self.race = self.race, None
        if race is not None:
            race()  # runs after the read, so the reader's write carries a stale CAS
        return found


def test_a_write_between_read_and_write_is_retried_not_lost(pywasm_build, host_mode):
    shared = RacingStore()
    options = {"plugin_config": config(max_tokens=2), "start_time_ns": T0, "shared": shared}
    one = (MockHost.from_plugin(EXAMPLE, **options) if host_mode == "native"
           else MockHost.from_wasm(pywasm_build(EXAMPLE), **options))
    with one, MockHost.from_wasm(pywasm_build(EXAMPLE), **options) as two:
        assert send(one, {"x-api-key": "k"})[0] == 200     # one token left
        raced = []
        shared.race = lambda: raced.append(send(two, {"x-api-key": "k"})[0])
        assert send(one, {"x-api-key": "k"}) == (429, "2")  # two took the last token meanwhile
        assert raced == [200]
        assert one.metrics.value("rate_limit.allowed") == 2 and one.metrics.value("rate_limit.rejected") == 1
