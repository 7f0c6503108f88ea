"""An exception on every request does not drown the log: the first traceback of a kind is logged
in full, its repeats are counted and summarized once per interval of the proxy's clock.

Unit tests of the bookkeeping (no host), then the probe plugin under the mock host, natively
and as the built .wasm (the Envoy side is in test_e2e_envoy.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pywasm_sdk import _boundary, _runtime, hostcalls, log
from pywasm_sdk.errors import ConfigurationError
from pywasm_sdk.testing import Action, LogLevel, MockHost

PROBE = Path(__file__).resolve().parent / "plugins" / "mock_host_probe"
SECOND = 1_000_000_000


class Proxy:
    """What report() reaches of the proxy: its clock and its log."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, interval_s: float = 60.0, max_kinds: int = 256) -> None:
        self.now = 1_000 * SECOND
        self.lines: list[str] = []
        self.repeats = _boundary.Repeats(interval_s, max_kinds)
        monkeypatch.setattr(hostcalls, "get_current_time_ns", lambda: self.now)
        monkeypatch.setattr(log, "write_unconditionally", lambda level, text: self.lines.append(text))
        monkeypatch.setattr(_runtime.current, "repeats", self.repeats)


def fail_here(n: int = 0) -> None:
    raise ValueError(f"bad value {n}")


def fail_there(n: int = 0) -> None:
    raise ValueError(f"bad value {n}")


def raise_and_report(fail=fail_here, n: int = 0, where: str = "on_request_headers") -> None:
    try:
        fail(n)
    except ValueError:
        _boundary.report(7, where)


def test_first_traceback_in_full_then_one_summary_per_interval(monkeypatch):
    proxy = Proxy(monkeypatch)
    for n in range(1000):
        raise_and_report(n=n)
        proxy.now += SECOND // 100  # 100 exceptions a second
    [first] = proxy.lines
    assert first.startswith("on_request_headers raised (context 7):\nTraceback (most recent call last):")
    assert "ValueError: bad value 0" in first
    assert first.endswith("(repeats of this exception are counted and summarized every 60 s)")
    for n in range(6000):  # one more minute
        raise_and_report(n=n)
        proxy.now += SECOND // 100
    first_line = fail_here.__code__.co_firstlineno + 1
    assert proxy.lines[1:] == [
        f"on_request_headers: ValueError ({__file__}:{first_line}, in fail_here) raised 6,000 more times "
        "in the last 60 s (traceback logged at its first occurrence)"]


def test_different_places_callbacks_and_types_are_logged_separately(monkeypatch):
    proxy = Proxy(monkeypatch)
    raise_and_report(fail_here)
    raise_and_report(fail_there)                            # another raising location
    raise_and_report(fail_here, where="on_response_headers")  # another callback
    try:
        {}["missing"]
    except KeyError:
        _boundary.report(7, "on_request_headers")           # another type
    raise_and_report(fail_here)                             # a repeat: counted, not logged
    assert len(proxy.lines) == 4
    assert [line.splitlines()[-2] for line in proxy.lines] == [
        "ValueError: bad value 0", "ValueError: bad value 0", "ValueError: bad value 0", "KeyError: 'missing'"]


def test_summaries_wait_for_the_interval_and_count_each_kind(monkeypatch):
    proxy = Proxy(monkeypatch, interval_s=10)
    raise_and_report(fail_here)
    raise_and_report(fail_there)
    proxy.now += 5 * SECOND
    raise_and_report(fail_here)
    raise_and_report(fail_here)
    proxy.now += 4 * SECOND
    raise_and_report(fail_there)
    assert len(proxy.lines) == 2                 # 9 s after the first: nothing due yet
    proxy.now += 2 * SECOND
    _boundary.flush()                            # what a tick does
    assert [re.sub(r" \(.*?\)", "", line) for line in proxy.lines[2:]] == [
        "on_request_headers: ValueError raised 2 more times in the last 11 s",
        "on_request_headers: ValueError raised 1 more time in the last 11 s"]
    _boundary.flush()
    raise_and_report(fail_here)                  # a new period starts at the report
    proxy.now += 10 * SECOND
    _boundary.flush()
    assert re.sub(r" \(.*?\)", "", proxy.lines[-1]) == (
        "on_request_headers: ValueError raised 1 more time in the last 10 s")
    assert len(proxy.lines) == 5


def test_configuration_errors_and_configure_failures_are_always_logged(monkeypatch):
    proxy = Proxy(monkeypatch)
    for reason in ("first reason", "second reason"):
        try:
            raise ConfigurationError(reason)
        except ConfigurationError:
            _boundary.report(1, "on_configure")
    for _ in range(2):
        raise_and_report(where="on_configure")
    assert proxy.lines[:2] == ["on_configure: configuration rejected: first reason",
                               "on_configure: configuration rejected: second reason"]
    assert len(proxy.lines) == 4 and "(repeats of" not in proxy.lines[3]


def test_the_table_is_bounded(monkeypatch):
    proxy = Proxy(monkeypatch, max_kinds=2)
    for where in ("a", "b", "c", "c"):
        raise_and_report(where=where)
    assert len(proxy.repeats.seen) == 2
    assert len(proxy.lines) == 4  # beyond the table, every exception is logged in full


def test_report_never_raises_even_when_the_traceback_cannot_be_formatted(monkeypatch):
    proxy = Proxy(monkeypatch)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(_boundary._traceback, "format_exception", no_memory)
    raise_and_report()
    assert proxy.lines == ["on_request_headers raised (context 7); its traceback could not be formatted"]


def test_without_a_clock_repeats_are_still_counted(monkeypatch):
    proxy = Proxy(monkeypatch)

    def no_host():
        raise RuntimeError("no host")

    monkeypatch.setattr(hostcalls, "get_current_time_ns", no_host)
    for _ in range(3):
        raise_and_report()
    assert len(proxy.lines) == 1 and sum(c for c, _ in proxy.repeats.seen.values()) == 2


# -- the probe under the mock host, natively and as the built .wasm ----------------------------

def request(path: str) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":path", path), (":authority", "example.com"), (":scheme", "http")]


@pytest.fixture(params=["native", "wasm"])
def probe(request, pywasm_build):
    hosts: list[MockHost] = []

    def make(**options) -> MockHost:
        if request.param == "wasm":
            host = MockHost.from_wasm(pywasm_build(PROBE), **options)
        else:
            host = MockHost.from_plugin(PROBE, **options)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


def raise_in(host: MockHost, times: int) -> None:
    for _ in range(times):
        stream = host.http_stream()
        assert stream.send_request_headers(request("/raise")) == Action.CONTINUE
        stream.send_response_headers([(":status", "200")])
        assert stream.response_header("x-probe") == "1"  # the plugin goes on serving
        stream.complete()


SUMMARY = re.compile(r"on_request_headers: RuntimeError \(.*helpers\.py:\d+, in explode\) raised "
                     r"(?P<count>[\d,]+) more times? in the last (?P<seconds>\d+) s")


def test_an_exception_on_every_request_is_logged_once_then_counted(probe):
    host = probe()
    raise_in(host, 200)
    [full] = host.logs.find("on_request_headers raised")
    assert full.level == LogLevel.ERROR and "RuntimeError: deliberate failure" in full.message
    assert not host.logs.find(SUMMARY)
    host.advance_time(61_000)
    raise_in(host, 1)
    [summary] = host.logs.find(SUMMARY)
    assert summary.level == LogLevel.ERROR
    assert SUMMARY.search(summary.message).group("count", "seconds") == ("200", "61")
    raise_in(host, 50)  # a new period: counted, not yet reported
    assert len(host.logs.find("RuntimeError")) == 2


def test_a_tick_writes_the_summary_when_no_exception_comes_again(probe):
    host = probe(plugin_config="tick")  # the probe ticks every second
    raise_in(host, 5)
    host.advance_time(59_000)
    assert not host.logs.find(SUMMARY)
    host.advance_time(1_000)
    [summary] = host.logs.find(SUMMARY)
    assert SUMMARY.search(summary.message).group("count", "seconds") == ("4", "60")


def test_a_new_native_plugin_starts_with_an_empty_table(probe):
    raise_in(probe(), 3)
    host = probe()  # natively the same process, the first host still open: each has its own table
    raise_in(host, 1)
    assert len(host.logs.find("on_request_headers raised")) == 1
