"""examples/rate_limit in the real Envoy, with two workers: its own envoy.yaml on free ports.

One Envoy (``--concurrency 2``) serves every scenario: each request is a new connection, so the
kernel spreads them over both workers' VMs, and the limit must still be the proxy's, not a
worker's. The configuration shipped with the example limits per ``x-api-key`` (3 tokens, then
one every 2 s) on one listener and per client IP (5 per minute) on another.
"""

from __future__ import annotations

import http.client
import json
import re
import time

import pytest

from pywasm_sdk.tooling import envoy as E

from .conftest import EXAMPLES
from .test_examples_helpers import local_envoy_config, wasm_plugin_configs

pytestmark = pytest.mark.envoy

EXAMPLE = EXAMPLES / "rate_limit"


def example_config(wasm):
    """The example's envoy.yaml on free ports; (config, port limited by key, port limited by IP)."""
    api_port, ip_port, backend_port = E.free_port(), E.free_port(), E.free_port()
    config = local_envoy_config("rate_limit", wasm, admin_port=E.free_port(),
                                listeners={"by_api_key": api_port, "by_client_ip": ip_port, "backend": backend_port},
                                clusters={"backend": ("127.0.0.1", backend_port)})
    return config, api_port, ip_port


@pytest.fixture(scope="module")
def envoy(pywasm_build):
    config, api_port, ip_port = example_config(pywasm_build(EXAMPLE))
    for listener in config["static_resources"]["listeners"]:
        # Envoy's default: one socket per worker, so the kernel spreads new connections over both
        listener["enable_reuse_port"] = True
    proxy = E.Envoy(config, concurrency=2)
    proxy.api_port, proxy.ip_port = api_port, ip_port
    with proxy:
        yield proxy


def get(port: int, headers: dict[str, str] | None = None, source: str = "127.0.0.1",
        path: str = "/") -> tuple[int, dict[str, str]]:
    """One request on a new connection (from ``source``); (status, lower-cased headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def statuses(port: int, count: int, headers: dict[str, str] | None = None, source: str = "127.0.0.1") -> list[int]:
    return [get(port, headers, source)[0] for _ in range(count)]


def test_one_limit_for_both_workers(envoy):
    answers = [get(envoy.api_port, {"x-api-key": "alice"}) for _ in range(12)]
    codes = [status for status, _ in answers]
    assert codes[:3] == [200, 200, 200] and set(codes[3:]) == {429}, codes
    for status, headers in answers[3:]:
        assert headers["retry-after"] in ("1", "2"), headers  # the next token is at most 2 s away
    stats = envoy.stats()
    workers = [stats.get(f"listener.127.0.0.1_{envoy.api_port}.worker_{i}.downstream_cx_total", 0) for i in (0, 1)]
    assert all(workers), f"both workers must have served connections: {workers}"
    assert statuses(envoy.api_port, 3, {"x-api-key": "bob"}) == [200, 200, 200]  # another key, another bucket


def test_tokens_come_back_with_the_proxy_clock(envoy):
    assert statuses(envoy.api_port, 4, {"x-api-key": "carol"}) == [200, 200, 200, 429]
    status, headers = get(envoy.api_port, {"x-api-key": "carol"})
    assert status == 429
    time.sleep(int(headers["retry-after"]) + 0.2)
    assert statuses(envoy.api_port, 2, {"x-api-key": "carol"}) == [200, 429]


def test_keys_that_are_not_utf8_get_their_own_buckets(envoy):
    # http.client sends a str header value as Latin-1: these are the single bytes 0x80 and 0x81,
    # which a UTF-8 decode would both turn into U+FFFD.
    assert statuses(envoy.api_port, 4, {"x-api-key": "\x80"}) == [200, 200, 200, 429]
    assert statuses(envoy.api_port, 4, {"x-api-key": "\x81"}) == [200, 200, 200, 429]


def test_requests_without_the_header_share_one_bucket(envoy):
    assert statuses(envoy.api_port, 4) == [200, 200, 200, 429]


def test_per_client_ip(envoy):
    assert statuses(envoy.ip_port, 6, source="127.0.0.2") == [200] * 5 + [429]
    assert statuses(envoy.ip_port, 1, source="127.0.0.3") == [200]
    status, headers = get(envoy.ip_port, source="127.0.0.2")
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60


def test_counters_and_gauges_in_stats(envoy):
    before = envoy.stats()
    assert statuses(envoy.api_port, 4, {"x-api-key": "dave"}) == [200, 200, 200, 429]
    after = envoy.stats()
    name = "wasmcustom.rate_limit.api_key."
    assert after[name + "allowed"] - before.get(name + "allowed", 0) == 3
    assert after[name + "rejected"] - before.get(name + "rejected", 0) == 1
    assert after[name + "keys"] - before.get(name + "keys", 0) == 1
    prometheus = envoy.admin_get("/stats/prometheus")
    assert re.search(r"^rate_limit_api_key_keys\{\} \d+$", prometheus, re.M), prometheus[:2000]
    assert envoy.running


def test_a_wrong_configuration_is_rejected_naming_the_field(pywasm_build):
    config, _, _ = example_config(pywasm_build(EXAMPLE))
    plugin = wasm_plugin_configs(config)[0]
    plugin["configuration"] = E.any_value(json.dumps({"key": "header", "header": "x-api-key", "max_tokens": 0}))
    with pytest.raises(E.EnvoyError) as failed:
        E.validate_config(config)  # compiles the module and runs on_configure, as a start would
    assert "configuration rejected: max_tokens: expected a positive integer, got 0" in str(failed.value)
