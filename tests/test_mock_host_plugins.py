"""Real plugins under the mock host, natively and as the built .wasm; both must agree.

Builds (once per session, shared with the other tests through the ``pywasm_build`` fixture):
examples/http_headers and tests/plugins/mock_host_probe.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pywasm_sdk import _runtime, hostcalls
from pywasm_sdk.errors import NoHostError
from pywasm_sdk.testing import (Action, HostMisuseError, LogLevel, MockHost, PluginLoadError,
                                PluginTrap, VmFailedError)

REPO = Path(__file__).resolve().parent.parent
HTTP_HEADERS = REPO / "examples" / "http_headers"
PROBE = Path(__file__).resolve().parent / "plugins" / "mock_host_probe"
MODES = ["native", "wasm"]


def request(path: str = "/", **headers: str) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":path", path), (":authority", "example.com"), (":scheme", "http"),
            *headers.items()]


class Hosts:
    """Makes hosts of one mode for a test and closes them after it."""

    def __init__(self, mode: str, pywasm_build) -> None:
        self.mode, self._built, self._hosts = mode, pywasm_build, []

    def __call__(self, plugin: Path, **options) -> MockHost:
        if self.mode == "wasm":
            host = MockHost.from_wasm(self._built(plugin), **options)
        else:
            host = MockHost.from_plugin(plugin, **options)
        self._hosts.append(host)
        return host

    def close(self) -> None:
        for host in self._hosts:
            host.close()


@pytest.fixture(params=MODES)
def hosts(request, pywasm_build):
    made = Hosts(request.param, pywasm_build)
    yield made
    made.close()


@pytest.fixture
def wasm_hosts(pywasm_build):
    made = Hosts("wasm", pywasm_build)
    yield made
    made.close()


@pytest.fixture
def native_hosts(pywasm_build):
    made = Hosts("native", pywasm_build)
    yield made
    made.close()


# -- examples/http_headers --------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    "x-frame-options=DENY\n# a comment\n\nx-served-by = python\n",
    '{"X-Frame-Options": "DENY", "x-served-by": "python"}',
])
def test_http_headers_adds_the_configured_headers(hosts, config):
    host = hosts(HTTP_HEADERS, plugin_config=config)
    assert host.started and host.configured
    assert host.logs.messages(LogLevel.INFO) == [
        "http_headers: adding 2 response header(s): x-frame-options, x-served-by"]
    stream = host.http_stream()
    assert stream.send_request_headers(request(), end_of_stream=True) == Action.CONTINUE
    assert stream.send_response_headers([(":status", "200"), ("content-type", "text/plain")]) == Action.CONTINUE
    assert stream.response_headers == [(":status", "200"), ("content-type", "text/plain"),
                                       ("x-frame-options", "DENY"), ("x-served-by", "python")]
    stream.send_response_body(b"hello", end_of_stream=True)
    assert stream.response_body == b"hello"
    stream.complete()


@pytest.mark.parametrize(("config", "reason"), [
    ("x-ok=1\nno equals sign", "line 2: 'no equals sign' has no '='"),
    ('{"x-a": 1}', "JSON configuration must be an object of strings"),
    ('{"x-a": ', "invalid JSON"),
    ("bad name=1", "'bad name' is not a valid header name"),
    (b"x-a=\xff", "not UTF-8"),
])
def test_http_headers_rejects_bad_configurations(hosts, config, reason):
    host = hosts(HTTP_HEADERS, plugin_config=config)
    assert host.started and not host.configured
    [error] = host.logs.find("configuration rejected", level=LogLevel.ERROR)
    assert reason in error.message
    with pytest.raises(HostMisuseError, match="rejected the plugin configuration"):
        host.http_stream()


def test_http_headers_without_configuration_adds_nothing(hosts):
    host = hosts(HTTP_HEADERS)
    stream = host.http_stream()
    stream.send_request_headers(request(), end_of_stream=True)
    stream.send_response_headers([(":status", "404")], end_of_stream=True)
    assert stream.response_headers == [(":status", "404")]
    assert "(none)" in host.logs[0].message


# -- header round trips (hypothesis) ----------------------------------------------------------

NAME_BYTES = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~" + bytes(range(0x80, 0x100))
VALUE_BYTES = bytes(range(0x20, 0x7F)) + b"\t" + bytes(range(0x80, 0x100))
header_names = st.binary(min_size=1, max_size=12).map(lambda b: bytes(NAME_BYTES[x % len(NAME_BYTES)] for x in b))
header_values = st.binary(max_size=24).map(lambda b: bytes(VALUE_BYTES[x % len(VALUE_BYTES)] for x in b))
header_lists = st.lists(st.tuples(header_names, header_values), max_size=12)


def test_headers_round_trip_through_the_plugin(hosts):
    """The probe reads every request header as str and writes them all back: names are
    lower-cased by the host, and values (non-UTF-8 bytes too) survive exactly."""
    host = hosts(PROBE)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(extra=header_lists)
    def check(extra):
        sent = [(k.encode(), v.encode()) for k, v in request("/echo")] + extra
        stream = host.http_stream()
        assert stream.send_request_headers(sent, end_of_stream=True) == Action.CONTINUE
        assert stream.request_headers_bytes == [(k.lower(), v) for k, v in sent]
        stream.complete()

    check()
    assert not host.logs.find("raised"), host.logs.text()


@settings(max_examples=40, deadline=None)
@given(pairs=header_lists, first=st.booleans())
def test_header_map_state_matches_a_model(pairs, first):
    """Host-side maps: get is the first value, remove drops all values, names lower-cased."""
    from pywasm_sdk.testing._state import HeaderMapState

    header_map = HeaderMapState(pairs)
    assert header_map.pairs == [(k.lower(), v) for k, v in pairs]
    for key, _ in pairs:
        values = [v for k, v in pairs if k.lower() == key.lower()]
        assert header_map.get(key) == values[0]
        assert header_map.get_all(key.upper() if first else key) == values
    if pairs:
        header_map.remove(pairs[0][0].upper())
        assert header_map.get(pairs[0][0]) is None


# -- the exception boundary, traps, and host misuse -------------------------------------------

def test_a_plugin_exception_is_logged_and_the_request_continues(hosts):
    host = hosts(PROBE)
    stream = host.http_stream()
    assert stream.send_request_headers(request("/raise")) == Action.CONTINUE
    [record] = host.logs.find("on_request_headers raised")
    assert record.level == LogLevel.ERROR
    assert "RuntimeError: deliberate failure in on_request_headers" in record.message
    # tracebacks point at the author's files: natively by their path, in a .wasm relative to the
    # plugin's folder (a module does not carry the folder it was built in)
    shown = str(PROBE / "helpers.py") if host.kind == "native" else "helpers.py"
    assert re.search(rf'File "{re.escape(shown)}", line \d+, in explode', record.message)
    stream.send_response_headers([(":status", "200")])
    assert stream.response_header("x-probe") == "1"  # the VM is fine


def test_an_answer_the_abi_cannot_carry_is_logged_and_the_default_answered(hosts):
    """The SDK's entry points answer only what the ABI carries: a callback returning something
    else is a TypeError in the log (the plugin's bug, not a dead VM) and the callback continues."""
    host = hosts(PROBE)
    stream = host.http_stream()
    stream.send_request_headers(request("/bad-return"))
    assert stream.send_response_headers([(":status", "200")]) == Action.CONTINUE
    [record] = host.logs.find("on_response_headers raised")
    assert record.level == LogLevel.ERROR
    assert "TypeError: on_response_headers returned 'not an action'" in record.message
    stream.complete()
    assert host.http_stream().send_request_headers(request("/")) == Action.CONTINUE  # the VM is fine


def test_a_trap_without_python_traceback_shows_the_wasm_backtrace(wasm_hosts):
    host = wasm_hosts(PROBE)
    with pytest.raises(PluginTrap) as caught:
        host.http_stream().send_request_headers(request("/abort"))
    assert caught.value.python_traceback is None
    assert "wasm backtrace" in str(caught.value) and caught.value.wasm_backtrace
    with pytest.raises(VmFailedError):
        host.http_stream()


def test_local_response_goes_through_the_plugins_response_callbacks(hosts):
    host = hosts(PROBE)
    stream = host.http_stream()
    assert stream.send_request_headers(request("/local")) == Action.PAUSE
    assert (stream.local_response.status, stream.local_response.body) == (403, b"denied by probe\n")
    assert stream.response_headers == [(":status", "403"), ("x-why", "probe"), ("content-length", "16"),
                                       ("content-type", "text/plain"), ("x-probe", "1")]
    with pytest.raises(HostMisuseError, match="local response"):
        stream.send_response_headers([(":status", "200")])
    stream.complete()
    assert host.logs.find("probe: log /local 403")


def test_awaited_http_call(hosts):
    host = hosts(PROBE, clusters=["auth"])
    allowed, denied, broken = (host.http_stream() for _ in range(3))
    for stream in (allowed, denied, broken):
        assert stream.send_request_headers(request("/auth")) == Action.PAUSE
    first, second, third = host.http_calls
    assert (first.cluster, first.path, first.header("x-user"), first.timeout_ms) == ("auth", "/check", "alice", 2000)
    assert first.context_id == allowed.context_id and first.root_context_id == host.root_context_id
    first.respond(200, {"x-decision": "granted"})
    assert not allowed.request_paused and allowed.request_header("x-auth") == "granted"
    second.respond(500, body="nope")
    assert denied.local_response.status == 403 and denied.response_body == b"auth said 500\n"
    third.fail()  # the coroutine gets HttpCallError: logged, and the SDK resumes the request
    assert not broken.request_paused and broken.request_header("x-auth") is None
    assert host.logs.find("HttpCallError: HTTP call failed: reset")
    assert host.pending_calls() == []


def test_http_call_timeout_is_envoys_local_504(hosts):
    host = hosts(PROBE, clusters=["auth"])
    stream = host.http_stream()
    stream.send_request_headers(request("/auth"))
    host.http_calls[0].timeout()
    # the SDK recognises Envoy's own 504 reply and raises HttpCallError in the coroutine
    assert host.logs.find(re.compile(r"HttpCallError: .*timeout \(upstream request timeout\)"))
    assert not stream.request_paused


def test_http_call_to_an_unknown_cluster(hosts):
    host = hosts(PROBE)  # no clusters configured: Envoy answers BAD_ARGUMENT
    stream = host.http_stream()
    assert stream.send_request_headers(request("/auth")) == Action.CONTINUE
    assert host.logs.find("BadArgument: proxy_http_call failed with BAD_ARGUMENT")
    assert host.notes and "'auth' does not exist" in host.notes[0]


def test_awaited_grpc_call(hosts):
    host = hosts(PROBE, clusters=["grpc"])
    stream = host.http_stream()
    assert stream.send_request_headers(request("/grpc")) == Action.PAUSE
    call = host.grpc_calls[0]
    assert (call.cluster, call.service_name, call.method, call.message) == ("grpc", "probe.Echo", "Say", b"ping")
    call.respond(b"pong")
    assert stream.request_header("x-grpc") == "pong"


def test_failed_grpc_call(hosts):
    host = hosts(PROBE, clusters=["grpc"])
    stream = host.http_stream()
    stream.send_request_headers(request("/grpc"))
    host.grpc_calls[0].fail(14, "unavailable")
    assert not stream.request_paused
    assert host.logs.find("GrpcCallError: gRPC status 14: unavailable")


def test_body_buffering_and_rewrite(hosts):
    host = hosts(PROBE)
    stream = host.http_stream()
    stream.send_request_headers(request("/body", **{"content-type": "text/plain"}))
    assert stream.send_request_body(b"hello ") == Action.PAUSE
    assert stream.send_request_body(b"world", end_of_stream=True) == Action.CONTINUE
    assert stream.request_body == b"HELLO WORLD"


def test_properties(hosts):
    host = hosts(PROBE, plugin_name="probe", root_id="probe-root", vm_id="vm-1",
                 node={"id": "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local"},
                 properties={"xds": {"cluster_name": "outbound|80||svc"}})
    stream = host.http_stream(source="192.168.3.7:43210", destination="10.1.2.3:8080")
    stream.send_request_headers(request("/props", **{"x-in": "from client"}))
    props = {k[len("x-prop-"):]: v for k, v in stream.request_headers if k.startswith("x-prop-")}
    assert props == {"source": "192.168.3.7:43210", "source-port": "43210", "destination": "10.1.2.3:8080",
                     "path": "/props", "plugin-name": "probe", "root-id": "probe-root", "vm-id": "vm-1",
                     "node-id": "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local",
                     "connection-id": "1", "cluster": "outbound|80||svc", "missing": "None",
                     "header": "from client"}


def test_an_on_delete_of_a_stream_runs_when_the_stream_ends(hosts):
    host = hosts(PROBE)
    for n in range(1, 4):
        stream = host.http_stream()
        stream.send_request_headers(request("/echo"), end_of_stream=True)
        stream.send_response_headers([(":status", "200")], end_of_stream=True)
        stream.complete()
        assert host.metrics["probe.deleted"].value == n


def test_filter_state(hosts):
    host = hosts(PROBE)
    stream = host.http_stream()
    stream.send_request_headers(request("/state"))
    assert stream.request_header("x-state") == "probe-value"
    assert stream.filter_state == {"wasm.probe_key": b"probe-value",
                                   "envoy.network.upstream_server_name": "probe.example"}


def test_metrics_shared_data_and_queues(hosts):
    host = hosts(PROBE)
    for _ in range(2):
        stream = host.http_stream()
        stream.send_request_headers(request("/metrics"))
    assert stream.request_header("x-requests") == "2"
    assert host.metrics["probe.requests"].value == 2
    assert host.metrics["probe.inflight"].value == 4 and host.metrics["probe.sizes"].samples == [4, 4]
    for expected in ("1", "2"):
        stream = host.http_stream()
        stream.send_request_headers(request("/shared"))
        assert stream.request_header("x-hits") == expected
    assert host.shared_data["probe.hits"] == b"2"
    host.http_stream().send_request_headers(request("/queue", **{"x-message": "hello queue"}))
    assert host.logs.messages()[-1] == "probe: dequeued hello queue"
    host.shared_queues.enqueue("probe.queue", b"from another VM")
    assert host.logs.messages()[-1] == "probe: dequeued from another VM"


def test_print_logging_and_environment(hosts):
    host = hosts(PROBE, env={"PROBE_ENV": "from vm_config"})
    host.http_stream().send_request_headers(request("/print"))
    assert [(r.level, r.message) for r in host.logs[-2:]] == [
        (LogLevel.INFO, "probe: hello from print()"), (LogLevel.WARN, "probe: probe: hello from logging")]
    stream = host.http_stream()
    stream.send_request_headers(request("/env"))
    assert stream.request_header("x-env") == "from vm_config"


def test_lines_below_the_proxys_level_are_dropped_unformatted(hosts):
    """At WARN, log.trace/debug/info and print() (info) write nothing, and their arguments are
    never %-formatted (a mismatch there would raise); the other levels are written."""
    host = hosts(PROBE, log_level=LogLevel.WARN)
    assert host.http_stream().send_request_headers(request("/levels")) == Action.CONTINUE
    assert [(r.level, r.message) for r in host.logs if r.message.startswith("probe:")] == [
        (LogLevel.WARN, "probe: warning 1"), (LogLevel.ERROR, "probe: error 2"),
        (LogLevel.CRITICAL, "probe: critical 3")]


def test_reset(hosts):
    host = hosts(PROBE)
    stream = host.http_stream()
    stream.send_request_headers(request("/reset"))
    assert stream.reset == "wasm_close_stream"
    with pytest.raises(HostMisuseError, match="reset"):
        stream.send_request_body(b"x")
    stream.complete()


def test_ticks_and_lingering_shutdown(hosts):
    host = hosts(PROBE, plugin_config="linger")
    host.advance_time(2500)
    assert host.metrics["ticks"].value == 2
    assert host.shutdown() is False  # on_done answered False: Envoy waits for proxy_done
    host.advance_time(1000)
    assert host.logs.messages()[-1] == "probe: done lingering"
    with pytest.raises(HostMisuseError, match="no root context"):
        host.http_stream()


def test_tcp_routing_by_source(hosts):
    host = hosts(PROBE)
    even = host.tcp_connection(source="10.0.0.4:5555")
    assert even.connect() == Action.CONTINUE
    assert even.filter_state == {"envoy.tcp_proxy.cluster": "even-cluster"}
    assert host.logs.messages()[-1] == "probe: 10.0.0.4:5555 -> even-cluster (port 5555)"
    assert even.send_downstream(b"GET / HT") == Action.PAUSE
    assert even.send_downstream(b"TP/1.0\n") == Action.CONTINUE
    assert even.to_upstream == b"GET / HTTP/1.0\n"
    even.send_upstream(b"ok")
    assert even.to_downstream == b"OK"
    even.close()
    assert host.logs.messages()[-1] == "probe: downstream closed by REMOTE"
    odd = host.tcp_connection(source="10.0.0.7:5555")
    odd.connect()
    assert odd.filter_state["envoy.tcp_proxy.cluster"] == "odd-cluster"


def test_a_view_acts_on_its_own_context(hosts):
    """``other.request_headers`` acts on ``other``: from a root callback (on_tick) and from another
    stream's callback, whatever context the host acts on at that moment."""
    host = hosts(PROBE, plugin_config="tick")
    first, second = host.http_stream(), host.http_stream()
    for stream in (first, second):
        assert stream.send_request_headers(request("/hold")) == Action.PAUSE
    host.advance_time(1000)
    for stream in (first, second):
        assert not stream.request_paused and stream.request_header("x-held") == str(stream.context_id)
    held, releaser = host.http_stream(), host.http_stream()
    held.send_request_headers(request("/hold"))
    releaser.send_request_headers(request("/release"))
    assert not held.request_paused and held.request_header("x-released-by") == str(releaser.context_id)
    assert releaser.request_header("x-released-by") is None
    assert not host.logs.find("raised")


def test_end_of_stream_is_a_bool(hosts):
    host = hosts(PROBE)
    for end in (True, False):
        stream = host.http_stream()
        stream.send_request_headers(request("/types"), end_of_stream=end)
        assert stream.request_header("x-eos") == f"bool:{end}"
    conn = host.tcp_connection()
    conn.connect()
    conn.send_downstream(b"bye\n", end_of_stream=True)
    assert host.logs.find("probe: downstream end_of_stream is a bool")


def test_time_follows_the_hosts_clock(hosts):
    start = 1_700_000_000_123_000_000
    host = hosts(PROBE, start_time_ns=start)
    seen = []
    for _ in range(2):
        stream = host.http_stream()
        stream.send_request_headers(request("/clock"))
        seen.append({k: stream.request_header(k) for k in ("x-time-ns", "x-time", "x-host-ns", "x-monotonic-ns")})
        host.advance_time(1500)
    assert [int(s["x-time-ns"]) for s in seen] == [int(s["x-host-ns"]) for s in seen] == [start, start + 1_500_000_000]
    assert [float(s["x-time"]) for s in seen] == [start / 1e9, (start + 1_500_000_000) / 1e9]
    assert int(seen[1]["x-monotonic-ns"]) - int(seen[0]["x-monotonic-ns"]) == 1_500_000_000


def test_header_map_is_a_mapping_of_first_values(hosts):
    host = hosts(PROBE)
    stream = host.http_stream()
    stream.send_request_headers([*request("/mapping"), ("x-r", "a"), ("x-r", "b")])
    names = [":method", ":path", ":authority", ":scheme", "x-r"]
    assert stream.request_header("x-len") == "5" and stream.request_header("x-keys") == ",".join(names)
    assert json.loads(stream.request_header("x-dict")) == {
        ":method": "GET", ":path": "/mapping", ":authority": "example.com", ":scheme": "http", "x-r": "a"}
    assert stream.request_header("x-is-mapping") == "True"


def test_floats_where_the_host_takes_ints_raise_type_error(hosts):
    """Histogram.record(1.5) & co. raise where the plugin can catch it (they used to trap the VM)."""
    host = hosts(PROBE)
    stream = host.http_stream()
    stream.send_request_headers(request("/wrong-use"))
    assert stream.request_header("x-caught") == "TypeError,TypeError,TypeError,TypeError"
    assert host.tick_period_ms == 0 and host.metrics.value("probe.sizes") == 0


def test_a_call_never_awaited_is_reported(hosts):
    host = hosts(PROBE, clusters=["auth"])
    stream = host.http_stream()
    assert stream.send_request_headers(request("/unawaited")) == Action.CONTINUE
    [warning] = host.logs.find("was never awaited")
    assert warning.level == LogLevel.WARN and "self.http_call('auth', ...)" in warning.message
    assert host.http_calls == []


def test_shared_keys_that_differ_in_bytes_that_are_not_utf8_stay_apart(hosts):
    host = hosts(PROBE)
    stream = host.http_stream()
    stream.send_request_headers(request("/shared-keys"))
    assert stream.request_header("x-shared") == "ff,fe,-"
    assert host.shared_data["probe.key\udcff"] == b"ff" and host.shared_data["probe.key\udcfe"] == b"fe"


def test_both_modes_agree_on_a_scenario(pywasm_build):
    """One scenario, run natively and as the .wasm: the observable outcomes are identical."""
    outcomes = []
    for mode in MODES:
        made = Hosts(mode, pywasm_build)
        try:
            host = made(PROBE, clusters=["auth"], plugin_config="tick")
            stream = host.http_stream()
            actions = [stream.send_request_headers(request("/auth", **{"X-Mixed-Case": "v"}))]
            host.http_calls[0].respond(200, {"x-decision": "ok"})
            actions.append(stream.send_response_headers([(":status", "200")]))
            stream.complete()
            host.advance_time(1500)
            outcomes.append((actions, stream.request_headers, stream.response_headers,
                             [(r.level, r.message) for r in host.logs], dict(host.metrics)))
        finally:
            made.close()
    assert outcomes[0] == outcomes[1]


# -- native runner: side by side, and the process left as it was ------------------------------

def test_native_hosts_leave_the_process_as_they_found_it():
    before_path, before_env, before_runtime = list(sys.path), dict(os.environ), _runtime.current
    with MockHost.from_plugin(PROBE, env={"PROBE_ENV": "x"}) as host:
        # between callbacks nothing of the plugin is visible in the process
        assert "helpers" not in sys.modules and "plugin" not in sys.modules
        assert "PROBE_ENV" not in os.environ and sys.path == before_path
        stream = host.http_stream()
        stream.send_request_headers(request("/env"))
        assert stream.request_header("x-env") == "x"  # but the plugin sees its VM's environment
    assert "helpers" not in sys.modules and "plugin" not in sys.modules
    assert sys.path == before_path and dict(os.environ) == before_env
    assert _runtime.current is before_runtime and before_runtime.registrations() == []
    with pytest.raises(NoHostError):
        hostcalls.proxy_log(2, "no host now")


def test_two_native_hosts_of_one_plugin_side_by_side():
    """Each native host imports its own copy of the plugin into its own runtime."""
    with MockHost.from_plugin(HTTP_HEADERS, plugin_config="x-a=1") as one, \
            MockHost.from_plugin(HTTP_HEADERS, plugin_config="x-b=2") as two:
        first, second = one.http_stream(), two.http_stream()
        first.send_request_headers(request())
        second.send_request_headers(request())
        second.send_response_headers([(":status", "200")])
        first.send_response_headers([(":status", "200")])
        assert first.response_header("x-a") == "1" and first.response_header("x-b") is None
        assert second.response_header("x-b") == "2" and second.response_header("x-a") is None
        assert one.logs.messages() == ["http_headers: adding 1 response header(s): x-a"]
        assert two.logs.messages() == ["http_headers: adding 1 response header(s): x-b"]


def test_two_plugins_side_by_side(pywasm_build):
    """Two different plugins (both with a module named plugin), natively and next to a .wasm."""
    with MockHost.from_plugin(PROBE) as probe, MockHost.from_plugin(HTTP_HEADERS, plugin_config="x-a=1") as headers, \
            MockHost.from_wasm(pywasm_build(PROBE)) as wasm_probe:
        for host in (probe, wasm_probe):
            host.http_stream().send_request_headers(request("/metrics"))
        stream = headers.http_stream()
        stream.send_request_headers(request())
        probe.http_stream().send_request_headers(request("/metrics"))
        stream.send_response_headers([(":status", "200")])
        assert stream.response_header("x-a") == "1"
        assert probe.metrics["probe.requests"].value == 2 and wasm_probe.metrics["probe.requests"].value == 1
        assert "probe.requests" not in headers.metrics


def test_a_plugin_in_a_project_with_its_own_virtual_environment(tmp_path):
    """A project folder holding the plugin, its tests and a .venv (uv's default layout): only the
    plugin's own modules are imported per host; the packages of the .venv and the test modules
    beside the plugin are the process's and stay as they are."""
    project = tmp_path / "project"
    site = project / ".venv" / "lib" / "python3" / "site-packages"
    (site / "venvdep").mkdir(parents=True)
    (site / "venvdep" / "__init__.py").write_text("LOADED = []\n")
    (project / "helper.py").write_text("def tag():\n    return 'from helper'\n")
    (project / "conftest.py").write_text("")
    (project / "test_plugin.py").write_text("")
    (project / "plugin.py").write_text(
        "import helper\nimport venvdep\nfrom pywasm_sdk import HttpContext, register\n"
        "venvdep.LOADED.append(1)\n"
        "class Tag(HttpContext):\n"
        "    def on_request_headers(self, num_headers, end_of_stream):\n"
        "        self.request_headers.add('x-tag', helper.tag())\n"
        "register(http=Tag)\n")
    sys.path.insert(0, str(site))
    sys.path.insert(0, str(project))
    try:
        import conftest as project_conftest  # what pytest would have imported from the project
        import test_plugin as project_tests
        import venvdep

        with MockHost.from_plugin(project / "plugin.py") as first, MockHost.from_plugin(project) as second:
            for host in (first, second):
                stream = host.http_stream()
                stream.send_request_headers(request())
                assert stream.request_header("x-tag") == "from helper"
        assert sys.modules["venvdep"] is venvdep and venvdep.LOADED == [1, 1]  # imported once, kept
        assert sys.modules["conftest"] is project_conftest and sys.modules["test_plugin"] is project_tests
        assert "helper" not in sys.modules and "plugin" not in sys.modules
    finally:
        for name in ("venvdep", "conftest", "test_plugin"):
            sys.modules.pop(name, None)
        sys.path.remove(str(site))
        sys.path.remove(str(project))


def test_the_plugins_own_modules_are_the_ones_its_folder_provides(tmp_path):
    from pywasm_sdk.tooling.build import resolve_plugin

    (tmp_path / "pkg").mkdir()
    (tmp_path / "plugin.py").write_text("")
    source = resolve_plugin(tmp_path / "plugin.py")
    fake = lambda path: type("M", (), {"__file__": str(path)})()  # noqa: E731
    assert source.owns("plugin", fake(tmp_path / "plugin.py"))
    assert source.owns("pkg.sub", fake(tmp_path / "pkg" / "sub.py"))
    assert source.owns("ext", fake(tmp_path / "ext.cpython-311-x86_64-linux-gnu.so"))
    assert not source.owns("yaml", fake(tmp_path / ".venv" / "lib" / "site-packages" / "yaml" / "__init__.py"))
    assert not source.owns("pywasm_sdk", fake(tmp_path / "pywasm_sdk" / "__init__.py"))
    assert not source.owns("json", fake("/usr/lib/python3/json/__init__.py"))
    assert not source.owns("sys", sys)


def test_native_plugin_load_errors(tmp_path):
    with pytest.raises(PluginLoadError, match="no such file"):
        MockHost.from_plugin(tmp_path / "missing.py")
    at_import = tmp_path / "at_import.py"
    at_import.write_text("from pywasm_sdk import log, register\nlog.info('hello')\nregister()\n")
    with pytest.raises(PluginLoadError, match="called the host while it was imported"):
        MockHost.from_plugin(at_import)
    broken = tmp_path / "broken.py"
    broken.write_text("import json\nraise ValueError('at import')\n")
    with pytest.raises(PluginLoadError, match="ValueError: at import"):
        MockHost.from_plugin(broken)
    unregistered = tmp_path / "unregistered.py"
    unregistered.write_text("x = 1\n")
    with pytest.raises(PluginLoadError, match="registers no root context"):
        MockHost.from_plugin(unregistered)
    assert "broken" not in sys.modules and str(tmp_path) not in sys.path


@pytest.mark.parametrize(("path", "exception"), [
    ("/bad-hostcall-type", "TypeError"),
    ("/bad-hostcall-range", "OverflowError"),
])
def test_a_hostcall_argument_that_cannot_be_converted_raises_where_the_plugin_can_catch_it(
        hosts, path, exception):
    """The bridge converts arguments with CPython's C API: a wrong one is a Python exception
    (never a dead VM), natively and in the .wasm alike."""
    host = hosts(PROBE)
    assert host.http_stream().send_request_headers(request(path)) == Action.CONTINUE
    assert host.logs.find(f"probe: caught {exception}")


def test_header_names_and_values_of_every_kind_reach_the_host(hosts):
    """str goes to the host as its UTF-8 without a bytes object (the bridge); bytes-likes and a
    str holding a non-UTF-8 header's bytes as surrogates take the way through to_bytes, and
    come out byte for byte; anything else is the SDK's TypeError, natively and in the .wasm."""
    host = hosts(PROBE)
    stream = host.http_stream()
    stream.send_request_headers([*request("/header-kinds"), (b"x-raw", b"caf\xe9")])
    sent = {bytes(k): bytes(v) for k, v in stream.request_headers_bytes}
    assert sent[b"x-str"] == b"replaced"
    assert sent[b"x-utf8"] == "gr\u00fc\u00df \u2713".encode()
    assert sent[b"x-bytes"] == b"\xff\xfe"
    assert sent[b"x-bytearray"] == b"ba" and sent[b"x-memoryview"] == b"mv"
    assert sent[b"x-surrogate"] == b"caf\xe9"
    assert b"x-gone" not in sent and sent[b"x-lookup"] == b"True"
    assert sent[b"x-caught"] == b"expected str or bytes, got int"


def test_text_that_is_not_valid_unicode_never_reaches_the_bindings(hosts):
    """The seam makes every text argument valid Unicode (the ABI says which are text), so even a
    raw hostcall with a lone surrogate logs U+FFFD instead of aborting the VM."""
    host = hosts(PROBE)
    assert host.http_stream().send_request_headers(request("/bad-hostcall-text")) == Action.CONTINUE
    assert host.logs.find("not \ufffd unicode")
    assert not host.logs.find("probe: caught")


def test_unknown_options_are_refused():
    with pytest.raises(TypeError, match="unknown MockHost option"):
        MockHost.from_plugin(HTTP_HEADERS, plugin_confg="typo")


# -- registration and the runtime's entry points -----------------------------------------------

TWO_ROOTS = """\
from pywasm_sdk import HttpContext, RootContext, register

class Tag(HttpContext):
    def on_request_headers(self, num_headers, end_of_stream):
        self.request_headers.add("x-root", self.root.name)

class First(RootContext):
    http_context = Tag
    name = "first"

class Second(First):
    name = "second"

register(First, root_id="first")
register(Second, root_id="second")
"""


@pytest.mark.parametrize("root_id", ["first", "second"])
def test_several_roots_are_chosen_by_root_id(tmp_path, root_id):
    (tmp_path / "two_roots.py").write_text(TWO_ROOTS)
    with MockHost.from_plugin(tmp_path / "two_roots.py", root_id=root_id) as host:
        stream = host.http_stream()
        stream.send_request_headers(request())
        assert stream.request_header("x-root") == root_id


def test_an_unknown_root_id_is_rejected(tmp_path):
    (tmp_path / "two_roots.py").write_text(TWO_ROOTS)
    with MockHost.from_plugin(tmp_path / "two_roots.py", root_id="third") as host:
        assert host.started and not host.configured
        [record] = host.logs.find("no root context is registered for root_id 'third'")
        assert record.level == LogLevel.ERROR and "'first', 'second'" in record.message


def test_stream_contexts_can_be_made_lazily_and_forgotten_in_bulk(tmp_path):
    """What the build's bridge may do instead of proxy_on_context_create/proxy_on_delete per
    stream: the first callback makes the context (one root), forget_contexts drops many (each
    context's on_delete runs)."""
    (tmp_path / "lazy.py").write_text(
        "from pywasm_sdk import HttpContext, RootContext, register\n"
        "class Seen(HttpContext):\n"
        "    def on_request_headers(self, num_headers, end_of_stream):\n"
        "        self.root.seen.append((self.context_id, end_of_stream))\n"
        "    def on_delete(self):\n"
        "        self.root.seen.append((self.context_id, 'deleted'))\n"
        "class Root(RootContext):\n"
        "    http_context = Seen\n"
        "    seen = []\n"
        "register(Root)\n")
    with MockHost.from_plugin(tmp_path / "lazy.py") as host:
        guest, state = host._guest, host.state
        ids = [state.new_http("10.0.0.2:1", "10.0.0.1:80", {}).id for _ in range(2)]
        for context_id in ids:  # no proxy_on_context_create: the callback finds no context
            with state.callback(context_id, "proxy_on_request_headers"):
                assert guest.call("proxy_on_request_headers", (context_id, 0, 1)) == Action.CONTINUE
        runtime = guest.runtime
        assert [type(runtime.contexts[i]).__name__ for i in ids] == ["Seen", "Seen"]
        made = runtime.contexts[ids[0]]
        with guest._sandbox:
            runtime.entry_points()["create_stream_context"](ids[0], host.root_context_id)  # once only
            assert runtime.contexts[ids[0]] is made
            runtime.entry_points()["forget_contexts"](ids)
        assert all(i not in runtime.contexts for i in ids) and host.root_context_id in runtime.contexts
        assert runtime.roots[host.root_context_id].seen == [(ids[0], True), (ids[1], True),
                                                            (ids[0], "deleted"), (ids[1], "deleted")]
        assert not host.logs.find("raised")


def test_forgetting_in_bulk_a_root_among_the_streams_forgets_it_as_proxy_on_delete_would(tmp_path):
    """The bridge batches streams only; given a root too, forget_contexts forgets it fully: gone
    from the roots with its stream factory, its on_delete run, lazy creation refusing to guess."""
    (tmp_path / "roots.py").write_text(
        "from pywasm_sdk import HttpContext, RootContext, register\n"
        "class Plain(HttpContext):\n"
        "    pass\n"
        "class Root(RootContext):\n"
        "    http_context = Plain\n"
        "    deleted = []\n"
        "    def on_delete(self):\n"
        "        self.deleted.append(self.context_id)\n"
        "register(Root)\n")
    with MockHost.from_plugin(tmp_path / "roots.py") as host:
        stream = host.http_stream()
        stream.send_request_headers(request("/"))
        runtime, root_id = host._guest.runtime, host.root_context_id
        root = runtime.roots[root_id]
        assert runtime.lazy != runtime.stream  # one root: its maker
        with host._guest._sandbox:
            runtime.entry_points()["forget_contexts"]([stream.context_id, root_id])
        assert not ({stream.context_id, root_id} & (runtime.contexts.keys() | runtime.roots.keys()))
        assert root_id not in runtime.factories and runtime.lazy == runtime.stream
        assert root.deleted == [root_id] and not host.logs.find("raised")


def test_forgetting_in_bulk_runs_on_delete_per_class_and_survives_one_that_raises(tmp_path):
    """A batch of streams of several classes (a custom factory's): plain ones are dropped,
    on_delete runs for the others, and one that raises is logged without stopping the rest."""
    (tmp_path / "mixed.py").write_text(
        "from pywasm_sdk import HttpContext, RootContext, register\n"
        "class Plain(HttpContext):\n"
        "    pass\n"
        "class Noisy(HttpContext):\n"
        "    def on_delete(self):\n"
        "        self.root.deleted.append(self.context_id)\n"
        "        if self.context_id % 2:\n"
        "            raise RuntimeError('odd')\n"
        "class Root(RootContext):\n"
        "    deleted = []\n"
        "    def new_http_context(self, context_id):\n"
        "        return (Plain if context_id % 3 == 0 else Noisy)(context_id, self)\n"
        "register(Root)\n")
    with MockHost.from_plugin(tmp_path / "mixed.py") as host:
        streams = [host.http_stream() for _ in range(6)]
        for stream in streams:
            stream.send_request_headers(request("/"))
        runtime, ids = host._guest.runtime, [s.context_id for s in streams]
        # as the bridge does: in the next callback that enters Python (here the root's tick)
        with host.state.callback(host.root_context_id, "proxy_on_tick"), host._guest._sandbox:
            runtime.entry_points()["forget_contexts"](ids)
        assert all(i not in runtime.contexts for i in ids)
        assert runtime.roots[host.root_context_id].deleted == [i for i in ids if i % 3]
        # the first raise is logged (its repeats are counted), and the streams after it still ran
        first = next(i for i in ids if i % 3 and i % 2)
        assert host.logs.find(f"on_delete raised (context {first})") and ids[-1] in runtime.roots[
            host.root_context_id].deleted


def test_forgetting_in_bulk_drops_a_stream_and_closes_what_waits_for_it(tmp_path):
    """The bridge's batch of deleted streams: a stream without on_delete and nothing pending is
    only dropped; one awaiting a call has the call forgotten and its coroutine closed."""
    (tmp_path / "waits.py").write_text(
        "from pywasm_sdk import HttpContext, RootContext, register\n"
        "class Waits(HttpContext):\n"
        "    async def on_request_headers(self, num_headers, end_of_stream):\n"
        "        if self.request_headers.get(':path') == '/wait':\n"
        "            try:\n"
        "                await self.http_call('auth', path='/check')\n"
        "            finally:\n"
        "                self.root.closed.append(self.context_id)\n"
        "class Root(RootContext):\n"
        "    http_context = Waits\n"
        "    closed = []\n"
        "register(Root)\n")
    with MockHost.from_plugin(tmp_path / "waits.py", clusters=["auth"]) as host:
        waiting, done = host.http_stream(), host.http_stream()
        waiting.send_request_headers(request("/wait"))
        done.send_request_headers(request("/"))
        runtime, ids = host._guest.runtime, [waiting.context_id, done.context_id]
        assert len(host.http_calls) == 1 and all(i in runtime.contexts for i in ids)
        with host._guest._sandbox:
            runtime.entry_points()["forget_contexts"](ids)
        assert all(i not in runtime.contexts for i in ids) and runtime.calls.idle()
        assert runtime.roots[host.root_context_id].closed == [waiting.context_id]
        assert not host.logs.find("raised")


def test_async_where_nothing_could_finish_the_await_is_refused(tmp_path):
    """Natively as by `pywasm build`: at load for the declared classes, and at run time (logged,
    the default answer) for a class a custom factory makes."""
    (tmp_path / "async_log.py").write_text(
        "from pywasm_sdk import HttpContext, register\n"
        "class Late(HttpContext):\n"
        "    async def on_log(self):\n"
        "        await self.http_call('x')\n"
        "register(http=Late)\n")
    with pytest.raises(PluginLoadError, match="Late.on_log cannot be async"):
        MockHost.from_plugin(tmp_path / "async_log.py")
    (tmp_path / "factory.py").write_text(
        "from pywasm_sdk import RootContext, StreamContext, register\n"
        "class Tcp(StreamContext):\n"
        "    async def on_downstream_connection_close(self, peer):\n"
        "        await self.http_call('x')\n"
        "    async def on_upstream_data(self, data_size, end_of_stream):\n"
        "        await self.http_call('x')\n"
        "class Root(RootContext):\n"
        "    def new_stream_context(self, context_id):\n"
        "        return Tcp(context_id, self)\n"
        "register(Root)\n")
    with MockHost.from_plugin(tmp_path / "factory.py") as host:
        conn = host.tcp_connection()
        conn.connect()
        assert conn.send_upstream(b"x") == Action.CONTINUE
        conn.close()
        assert host.logs.find("TypeError: on_upstream_data cannot be async")
        assert host.logs.find("TypeError: on_downstream_connection_close cannot be async")
