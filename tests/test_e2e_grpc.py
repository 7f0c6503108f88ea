"""gRPC as it really runs: a plugin in the real Envoy calling a real grpcio server on 127.0.0.1.

The plugin (tests/plugins/grpc_client) builds and parses its protobuf messages inside the proxy
with protobuf's pure-Python runtime; the server (tests/grpc_echo.py) records what reached it.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from pywasm_sdk.tooling import envoy as E

from .conftest import PLUGINS
from .grpc_echo import EchoServer

pytestmark = pytest.mark.envoy

# gRPC status codes
OK, UNAVAILABLE = 0, 14


@pytest.fixture(scope="module")
def grpc_server():
    with EchoServer() as server:
        yield server


@pytest.fixture(scope="module")
def grpc_envoy(pywasm_build, grpc_server):
    wasm = pywasm_build(PLUGINS / "grpc_client")
    with E.EchoUpstream() as upstream:
        config = E.http_bootstrap(wasm_path=wasm, listener_port=E.free_port(), upstream=upstream.address,
                                  admin_port=E.free_port(), grpc_clusters={"echo-grpc": grpc_server.address})
        port = config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
        with E.Envoy(config) as envoy:
            yield envoy, port
        log = envoy.log_text()
    # a clean log: no plugin exception, no error from Envoy's wasm host
    assert "Traceback" not in log, log[-3000:]
    assert not [ln for ln in log.splitlines() if "[error]" in ln or "[critical]" in ln], log[-3000:]


def get_json(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict]:
    status, headers, body = E.http_request(port, path, timeout=timeout)
    assert headers.get("content-type") == "application/json", (status, headers, body)
    return status, json.loads(body)


def test_unary_call_succeeds_with_metadata_both_ways(grpc_envoy, grpc_server):
    envoy, port = grpc_envoy
    status, answer = get_json(port, "/unary/alice")
    assert status == 200, answer
    assert answer["text"] == "hello alice"  # built and parsed by protobuf inside the proxy
    assert answer["protobuf"] == "python"  # the pure-Python runtime: the proxy cannot load upb
    call = grpc_server.calls_to("Unary")[-1]
    assert call.requests[0].name == "alice" and call.requests[0].count == 1
    assert call.metadata["x-client"] == "pywasm" and call.metadata["x-name"] == "alice"
    assert call.deadline is not None and 0 < call.deadline <= 5.0  # the call's timeout, as grpc-timeout
    # Envoy's unary gRPC client passes no response metadata to a plugin (it has no callback for
    # it): the server sent initial and trailing metadata, the plugin sees none. The mock host
    # agrees (a unary call can only be answered with a message or a status).
    assert answer["initial"] == [] and answer["trailing"] == [], answer


def test_unary_method_called_as_a_stream_returns_the_servers_metadata(grpc_envoy, grpc_server):
    """What docs/callouts.md recommends when the server's metadata matters: the same unary
    method, opened as a stream with one message and end_of_stream."""
    _, port = grpc_envoy
    status, answer = get_json(port, "/unary-as-stream/carol")
    assert status == 200, answer
    assert answer["texts"] == ["hello carol"] and answer["status"] == OK
    assert ["x-server", "grpcio"] in answer["initial"] and ["x-echo-client", "pywasm"] in answer["initial"]
    assert ["x-served-requests", "1"] in answer["trailing"]
    call = grpc_server.calls_to("Unary")[-1]
    assert call.requests[0].name == "carol" and call.metadata["x-client"] == "pywasm"


def test_server_streaming(grpc_envoy, grpc_server):
    _, port = grpc_envoy
    status, answer = get_json(port, "/server-stream/bob/3")
    assert status == 200, answer
    assert answer["texts"] == ["bob #0", "bob #1", "bob #2"]
    assert answer["status"] == OK
    assert ["x-server", "grpcio"] in answer["initial"]
    assert ["x-sent", "3"] in answer["trailing"]
    assert grpc_server.calls_to("ServerStream")[-1].metadata["x-client"] == "pywasm"


def test_bidirectional_stream(grpc_envoy, grpc_server):
    """Each request after the first is sent from on_message: a real ping-pong through Envoy."""
    _, port = grpc_envoy
    status, answer = get_json(port, "/chat/one,two,three")
    assert status == 200, answer
    assert answer["texts"] == ["ONE", "TWO", "THREE"] and answer["status"] == OK
    assert [r.name for r in grpc_server.calls_to("Chat")[-1].requests] == ["one", "two", "three"]


def test_plugin_cancels_a_stream_and_the_server_sees_it(grpc_envoy, grpc_server):
    envoy, port = grpc_envoy
    status, answer = get_json(port, "/cancel-stream")
    assert status == 200, answer
    assert answer == {"first": "first for cancel me", "closed": None}
    call = grpc_server.wait_for_call("HangStream")
    assert call.wait_ended(10), "the cancel never reached the server"
    assert call.cancelled
    envoy.wait_for_log(r"grpc_client: cancelled the stream after 'first for cancel me'")
    time.sleep(0.3)  # Envoy would report a close now if it did after a cancel
    assert "a cancelled stream was closed" not in envoy.log_text()


def test_deadline_ends_the_call_with_a_status(grpc_envoy, grpc_server):
    _, port = grpc_envoy
    started = time.monotonic()
    status, answer = get_json(port, "/deadline/300")
    elapsed = time.monotonic() - started
    assert status == 504, answer
    # Envoy ends the call itself when the timeout passes, as its router's 504, which gRPC maps to
    # UNAVAILABLE (not DEADLINE_EXCEEDED); the mock host's GrpcCall.timeout() says the same.
    assert answer == {"status": UNAVAILABLE, "message": "upstream request timeout{response_timeout}"}
    assert elapsed < 5, elapsed
    call = grpc_server.wait_for_call("Hang")
    assert call.deadline is not None and call.deadline <= 0.3  # sent on as grpc-timeout
    assert call.wait_ended(10) and call.cancelled


def test_client_going_away_cancels_the_unary_call(grpc_envoy, grpc_server):
    """The stream that made the call ends (the downstream disconnects): the SDK cancels its
    call, and the cancellation reaches the gRPC server."""
    envoy, port = grpc_envoy
    before = len(grpc_server.calls_to("Hang"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /hang HTTP/1.1\r\nhost: test\r\n\r\n")
        deadline = time.monotonic() + 10
        while len(grpc_server.calls_to("Hang")) == before:
            assert time.monotonic() < deadline, "the call never reached the server"
            time.sleep(0.02)
    call = grpc_server.calls_to("Hang")[-1]
    assert call.wait_ended(10), "closing the downstream did not cancel the gRPC call"
    assert call.cancelled
