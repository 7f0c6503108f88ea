"""The Envoy harness against the real Envoy binary, on 127.0.0.1 only."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime

from pywasm_sdk.tooling.envoy import (
    EchoUpstream, Envoy, EnvoyError, HttpService, Reply, TcpServer, free_port, http_bootstrap,
    http_request, tcp_bootstrap, to_yaml, validate_config,
)

# Smallest module Envoy accepts as proxy-wasm: an ABI marker, memory and an allocator.
# Validate mode compiles *and starts* the module (a corrupt file or a trapping
# proxy_on_vm_start is rejected), so a placeholder file would not do.
MINIMAL_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024))
"""


@pytest.fixture(scope="module")
def minimal_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wasm") / "minimal.wasm"
    path.write_bytes(wasmtime.wat2wasm(MINIMAL_WAT))
    return path


@pytest.fixture
def echo():
    with EchoUpstream() as server:
        yield server


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _http_config(echo: EchoUpstream, wasm_path: Path | None = None, **kw) -> dict:
    return http_bootstrap(wasm_path=wasm_path, listener_port=free_port(), upstream=echo.address,
                          admin_port=free_port(), **kw)


def _listener_port(config: dict, index: int = 0) -> int:
    listener = config["static_resources"]["listeners"][index]
    return listener["address"]["socket_address"]["port_value"]


def test_echo_upstream_direct(echo: EchoUpstream) -> None:
    status, headers, body = http_request(echo.port, "/direct?x=1", method="POST",
                                         headers={"X-Test": "yes"}, body=b"hello")
    assert status == 200 and headers["content-type"] == "application/json"
    got = json.loads(body)
    assert got["method"] == "POST" and got["path"] == "/direct?x=1"
    assert got["headers"]["x-test"] == "yes" and got["body"] == "hello"
    assert echo.requests == [got]


def test_http_through_envoy_and_baseline(echo: EchoUpstream) -> None:
    config = _http_config(echo, baseline_port=free_port())
    messages: list[str] = []
    with Envoy(config, progress=messages.append) as envoy:
        for port in (_listener_port(config, 0), _listener_port(config, 1)):
            status, headers, body = http_request(port, "/hello/world", method="POST", body="ping")
            assert status == 200, body
            got = json.loads(body)
            assert got["path"] == "/hello/world" and got["body"] == "ping"
            assert "x-envoy-expected-rq-timeout-ms" in got["headers"]  # it really went via Envoy
        stats = envoy.stats()
        assert stats["http.ingress.downstream_rq_completed"] == 1
        assert stats["http.baseline.downstream_rq_completed"] == 1
        assert envoy.admin_get("/ready").strip() == "LIVE"
        assert envoy.ready_seconds is not None and envoy.ready_seconds > 0
        envoy.wait_for_log(r"starting main dispatch loop")
        pid = envoy.pid
    assert pid is not None and _gone(pid)
    assert messages[0].startswith("starting envoy") and "ready" in messages[-1]
    envoy.stop()  # idempotent


def test_chunked_body_and_log_wait_errors(echo: EchoUpstream) -> None:
    config = _http_config(echo)
    with Envoy(config, log_level="warning", component_log_level=None) as envoy:
        conn = http.client.HTTPConnection("127.0.0.1", _listener_port(config), timeout=10)
        conn.request("POST", "/chunked", body=iter([b"abc", b"defg"]), encode_chunked=True)
        got = json.loads(conn.getresponse().read())
        conn.close()
        assert got["body"] == "abcdefg" and got["headers"]["transfer-encoding"] == "chunked"
        with pytest.raises(EnvoyError, match="never matched"):
            envoy.wait_for_log(r"this line is never logged", timeout=0.2)
        with pytest.raises(EnvoyError, match="404"):
            envoy.admin_get("/no-such-admin-page")


def test_two_envoys_side_by_side(echo: EchoUpstream) -> None:
    first, second = _http_config(echo), _http_config(echo)
    with Envoy(first) as a, Envoy(second) as b:
        assert a.pid != b.pid
        for config in (first, second):
            assert http_request(_listener_port(config), "/both")[0] == 200


def test_validate_accepts_generated_and_rejects_broken(echo: EchoUpstream, tmp_path: Path) -> None:
    config = _http_config(echo, baseline_port=free_port())
    validate_config(config)
    path = tmp_path / "envoy.yaml"
    path.write_text(to_yaml(config))
    validate_config(path)
    config["static_resources"]["listeners"][0]["bogus_field"] = 1
    with pytest.raises(EnvoyError, match="bogus_field"):
        validate_config(config)


def test_http_service_answers_from_its_function() -> None:
    def respond(request):
        if request.path == "/parts":
            return Reply(200, {"content-type": "application/json"}, [b'{"a": ', b"1", b"}"])
        return Reply(418, {"x-seen": request.headers.get("x-in", "")}, request.body[::-1])

    with HttpService(respond, part_pause=0.0) as service:
        status, headers, body = http_request(service.port, "/x", method="POST", headers={"X-In": "yes"}, body=b"abc")
        assert (status, headers["x-seen"], headers["content-length"], body) == (418, "yes", "3", b"cba")
        status, headers, body = http_request(service.port, "/parts")
        assert (status, body) == (200, b'{"a": 1}') and headers["transfer-encoding"] == "chunked"
        assert [(r.method, r.path, r.body) for r in service.requests] == [("POST", "/x", b"abc"), ("GET", "/parts", b"")]
        port = service.port
    with EchoUpstream(port=port) as again:  # a fixed port: the same one, free again after stop()
        assert again.port == port and http_request(port, "/")[0] == 200


def test_slow_http_service_is_stopped_promptly() -> None:
    service = HttpService(lambda request: Reply(200), delay=30.0).start()
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request("GET", "/")
    started = time.monotonic()
    service.stop()  # the handler waiting out its delay gives up
    assert time.monotonic() - started < 5
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.getresponse().read()
    conn.close()


def test_validate_wasm_configs(minimal_wasm: Path, tmp_path: Path) -> None:
    common = {"wasm_path": minimal_wasm, "plugin_config": '{"k": 1}', "listener_port": free_port(),
              "admin_port": free_port(), "env": {"A": "b"}, "host_env": ["HOME"],
              "failure_policy": "FAIL_OPEN"}
    validate_config(http_bootstrap(upstream=("127.0.0.1", free_port()), vm_config=b"\xff\x00",
                                   extra_clusters={"auth": ("127.0.0.1", free_port())}, **common))
    validate_config(tcp_bootstrap(clusters={"a": ("127.0.0.1", free_port())},
                                  default_cluster="a", **common))
    # Validate mode loads the module for real: missing, corrupt or trapping at start -> rejected.
    trapping = tmp_path / "trap.wasm"
    trapping.write_bytes(wasmtime.wat2wasm(MINIMAL_WAT.replace(
        "(memory", '(func (export "proxy_on_vm_start") (param i32 i32) (result i32) unreachable)'
        ' (memory')))
    (corrupt := tmp_path / "corrupt.wasm").write_bytes(b"\0asm garbage")
    for wasm, reason in [(tmp_path / "missing.wasm", "Invalid path"),
                         (corrupt, "Unable to create Wasm plugin"),
                         (trapping, "proxy_on_vm_start failed")]:
        with pytest.raises(EnvoyError, match=reason):
            validate_config(http_bootstrap(**{**common, "wasm_path": wasm},
                                           upstream=("127.0.0.1", free_port())))


def test_builders_refuse_non_loopback() -> None:
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        http_bootstrap(wasm_path=None, listener_port=1, admin_port=2, upstream=("10.0.0.1", 80))


def test_start_fails_cleanly_when_port_taken(echo: EchoUpstream) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        config = http_bootstrap(wasm_path=None, listener_port=taken.getsockname()[1],
                                upstream=echo.address, admin_port=free_port())
        envoy = Envoy(config)
        with pytest.raises(EnvoyError) as info:
            envoy.start()
    message = str(info.value)
    assert "Address already in use" in message and "[critical]" in message
    assert envoy.pid is not None and _gone(envoy.pid) and not envoy.running


def test_forgotten_envoy_is_stopped_at_interpreter_exit() -> None:
    script = (
        "from pywasm_sdk.tooling.envoy import *\n"
        "cfg = http_bootstrap(wasm_path=None, listener_port=free_port(),\n"
        "                     upstream=('127.0.0.1', free_port()), admin_port=free_port())\n"
        "envoy = Envoy(cfg).start()\n"
        "print(envoy.pid, flush=True)\n"
        "raise SystemExit('left running on purpose')\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "left running on purpose" in done.stderr
    assert _gone(int(done.stdout.strip()))


def test_tcp_proxy_to_banner_server() -> None:
    with TcpServer(b"HELLO\n") as server:
        config = tcp_bootstrap(wasm_path=None, listener_port=free_port(), admin_port=free_port(),
                               clusters={"backend": server.address}, default_cluster="backend")
        with Envoy(config):
            with socket.create_connection(("127.0.0.1", _listener_port(config)), timeout=10) as c:
                reader = c.makefile("rb")
                assert reader.readline() == b"HELLO\n"
                c.sendall(b"echo me\n")
                assert reader.readline() == b"echo me\n"
        assert server.peers and server.peers[0][0] == "127.0.0.1"


def test_minimal_wasm_module_passes_requests(echo: EchoUpstream, minimal_wasm: Path) -> None:
    config = _http_config(echo, minimal_wasm, plugin_config="{}")
    with Envoy(config) as envoy:
        status, _, body = http_request(_listener_port(config), "/through-wasm")
        assert status == 200, envoy.log_text()[-3000:]
        assert json.loads(body)["path"] == "/through-wasm"
        assert "envoy.filters.http.wasm" in envoy.admin_get("/config_dump")
