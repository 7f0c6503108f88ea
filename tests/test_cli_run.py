"""`pywasm run` in a real Envoy: HTTP and TCP listeners, the plugin's log, clean stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling.addresses import ensure_port_free
from pywasm_sdk.tooling.run import DEFAULT_PORT

from .conftest import EXAMPLES, REPO
from .test_cli_helpers import RunningCli, processes_mentioning, write_module

pytestmark = pytest.mark.envoy


def envoy_pid(run: RunningCli) -> int:
    return int(run.wait_for(r"envoy ready in [\d.]+ s \(pid (\d+)\)", stream="stderr").group(1))


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_http_plugin_in_front_of_a_given_upstream(pywasm_build):
    wasm = pywasm_build(EXAMPLES / "http_headers")
    port = E.free_port()
    with E.EchoUpstream() as upstream:
        run = RunningCli("run", wasm, "--port", port, "--config", "x-a=1",
                         "--upstream", f"localhost:{upstream.port}")
        try:
            run.wait_for("plugin log")
            pid = envoy_pid(run)
            assert f"plugin serving http://127.0.0.1:{port}/ (upstream 127.0.0.1:{upstream.port})" in run.stdout
            assert f"try: curl -i http://127.0.0.1:{port}/hello" in run.stdout
            status, headers, body = E.http_request(port, "/hello")
            assert status == 200 and headers["x-a"] == "1"
            assert json.loads(body)["path"] == "/hello" and upstream.requests[-1]["path"] == "/hello"
            run.wait_for(r"^  \[info\] http_headers: adding 1 response header\(s\): x-a$")
        finally:
            assert run.stop(signal.SIGTERM) == 0
    assert any(line.endswith("envoy stopped") for line in run.stderr)
    assert_gone(pid)
    ensure_port_free(port)  # the listener is gone too


def test_tcp_plugin_gets_a_tcp_listener_and_the_echo_upstream(pywasm_build):
    wasm = pywasm_build(EXAMPLES / "tcp_egress")
    port = E.free_port()
    run = RunningCli("run", wasm, "--port", port, "--config", '{"egress_clusters": ["upstream"]}')
    try:
        run.wait_for("plugin log")
        pid = envoy_pid(run)
        assert f"plugin listening on 127.0.0.1:{port} (TCP), upstream" in "\n".join(run.stdout)
        assert f"try: printf 'hello\\n' | nc 127.0.0.1 {port}" in run.stdout
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            banner = b""
            while not banner.endswith(b"\n"):
                banner += client.recv(1024)
            assert banner == b"hello from the pywasm echo upstream\n"
            client.sendall(b"ping\n")
            assert client.recv(1024) == b"ping\n"
        run.wait_for(r"^  \[info\] source 127\.0\.0\.1:\d+ -> upstream$")
    finally:
        assert run.stop(signal.SIGINT) == 0  # Ctrl-C
    assert_gone(pid)


def test_interrupted_start_leaves_no_envoy_behind(pywasm_build):
    """SIGTERM while V8 still compiles the plugin: Envoy (in its own session) is stopped too."""
    wasm = pywasm_build(EXAMPLES / "http_headers")
    run = RunningCli("run", wasm, "--port", E.free_port())
    workdir = run.wait_for(r"starting envoy \(admin [^,]+, log (\S+)/envoy\.log\)", stream="stderr").group(1)
    time.sleep(1.0)  # Envoy is started (and compiling), not merely about to be
    assert processes_mentioning(workdir), "envoy should be running by now"
    assert run.stop(signal.SIGTERM) == 130
    assert processes_mentioning(workdir) == []
    assert "plugin log" not in "\n".join(run.stdout)


def test_the_default_port_is_documented():
    assert DEFAULT_PORT == 10000
    assert f"127.0.0.1:{DEFAULT_PORT}" in (REPO / "README.md").read_text()
    assert f"default {DEFAULT_PORT}" in (REPO / "docs" / "workflow.md").read_text()


def test_clusters_and_environment_of_a_run(tmp_path):
    """--cluster and --env reach the configuration Envoy starts with (validated by Envoy)."""
    from pywasm_sdk.tooling import run as R

    wasm = write_module(tmp_path, "http")
    clusters = R.extra_clusters({"authz": "localhost:9001"})
    assert clusters == {"authz": ("127.0.0.1", 9001)}
    config = R._bootstrap(wasm, b"{}", E.free_port(), ("127.0.0.1", 9000), False, clusters,
                          {"MODE": "demo"}, ["HOME"])
    names = [c["name"] for c in config["static_resources"]["clusters"]]
    assert names == ["upstream", "authz"]
    vm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["config"]["vm_config"]
    assert vm["environment_variables"] == {"key_values": {"MODE": "demo"}, "host_env_keys": ["HOME"]}
    E.validate_config(config)
    tcp = R._bootstrap(wasm, b"", E.free_port(), ("127.0.0.1", 9000), True, clusters, {}, [])
    assert [c["name"] for c in tcp["static_resources"]["clusters"]] == ["upstream", "authz"]
