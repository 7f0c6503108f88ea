"""The gRPC plugin of tests/test_e2e_grpc.py under the mock host, natively and as the built
.wasm (the same build as in Envoy): what it sees there is what it saw in the real Envoy (a unary
call answers with no metadata, a deadline is status 14 with Envoy's text, a cancelled stream
stays quiet)."""

from __future__ import annotations

import json

import pytest

from pywasm_sdk.testing import Action, LogLevel

from .conftest import PLUGINS
from .grpc_echo import Hello, Reply

PLUGIN = PLUGINS / "grpc_client"
REQUEST = [(":method", "GET"), (":authority", "test"), (":scheme", "http")]


def open_request(host, path):
    stream = host.http_stream()
    assert stream.send_request_headers([(":path", path), *REQUEST]) == Action.PAUSE
    return stream


def answer(stream) -> tuple[int, dict]:
    reply = stream.local_response
    assert reply is not None, "the plugin did not answer"
    return reply.status, json.loads(reply.body)


def no_errors(host) -> None:
    assert not [r for r in host.logs if r.level >= LogLevel.ERROR], list(host.logs)


def test_unary_call(mock_host, host_mode):
    host = mock_host(PLUGIN, mode=host_mode, clusters=["echo-grpc"])
    stream = open_request(host, "/unary/alice")
    (call,) = host.grpc_calls
    assert (call.cluster, call.service_name, call.method) == ("echo-grpc", "pywasm.test.Echo", "Unary")
    assert Hello.FromString(call.message).name == "alice" and call.timeout_ms == 5000
    assert ("x-client", "pywasm") in call.metadata
    call.respond(Reply(text="hello alice").SerializeToString())
    status, body = answer(stream)
    assert status == 200 and body["text"] == "hello alice"
    assert body["initial"] == [] and body["trailing"] == []  # as in Envoy: no metadata on a unary answer
    no_errors(host)


def test_bidirectional_stream(mock_host, host_mode):
    host = mock_host(PLUGIN, mode=host_mode, clusters=["echo-grpc"])
    stream = open_request(host, "/chat/one,two")
    (grpc,) = host.grpc_streams
    assert [Hello.FromString(m).name for m in grpc.sent] == ["one"]
    grpc.send_message(Reply(text="ONE").SerializeToString())
    assert [Hello.FromString(m).name for m in grpc.sent] == ["one", "two"] and grpc.local_closed
    grpc.send_message(Reply(text="TWO").SerializeToString())
    grpc.close(0)
    status, body = answer(stream)
    assert status == 200 and body["texts"] == ["ONE", "TWO"] and body["status"] == 0
    no_errors(host)


def test_cancelled_stream_is_forgotten(mock_host, host_mode):
    """Found in Envoy: after GrpcStream.cancel(), the end of the HTTP stream cancelled the token
    again, and Envoy's NOT_FOUND was logged as an exception."""
    host = mock_host(PLUGIN, mode=host_mode, clusters=["echo-grpc"])
    stream = open_request(host, "/cancel-stream")
    (grpc,) = host.grpc_streams
    grpc.send_message(Reply(text="first for cancel me").SerializeToString())
    assert grpc.state == "cancelled"
    assert answer(stream) == (200, {"first": "first for cancel me", "closed": None})
    stream.complete()
    no_errors(host)


def test_deadline_is_unavailable_with_envoys_text(mock_host, host_mode):
    host = mock_host(PLUGIN, mode=host_mode, clusters=["echo-grpc"])
    stream = open_request(host, "/deadline/300")
    (call,) = host.grpc_calls
    assert call.timeout_ms == 300
    call.timeout()
    status, body = answer(stream)
    assert status == 504
    assert body == {"status": 14, "message": "upstream request timeout{response_timeout}"}


@pytest.mark.mock_host(allow_pending_calls=True)
def test_the_end_of_the_stream_cancels_its_unary_call(mock_host, host_mode):
    host = mock_host(PLUGIN, mode=host_mode, clusters=["echo-grpc"])
    stream = open_request(host, "/hang")
    (call,) = host.grpc_calls
    stream.complete()
    assert call.state == "cancelled"
    no_errors(host)
