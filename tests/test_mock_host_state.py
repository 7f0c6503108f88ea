"""The mock host's Envoy semantics, pinned at the ABI level with scripted guests (no SDK, no build).

Each test states which hostcalls a "plugin" makes in which callback and asserts what Envoy
answers (sources: proxy-wasm-cpp-host src/exports.cc, src/context.cc; Envoy
source/extensions/common/wasm/context.cc, foreign.cc).
"""

from __future__ import annotations

import re
import struct
import zlib

import pytest

from pywasm_sdk._abi import BufferType, LogLevel, MapType, MetricType, PeerType, Status, StreamType
from pywasm_sdk.testing import (Action, HostMisuseError, MockHost, ScriptedGuest, SharedStore,
                                UnsupportedByMockHost)
from pywasm_sdk.testing.host import HostState
from pywasm_sdk.wire import decode_pairs, encode_pairs

OK, NOT_FOUND, BAD_ARGUMENT = Status.OK, Status.NOT_FOUND, Status.BAD_ARGUMENT
REQ_H, REQ_T, RESP_H, RESP_T = (MapType.HTTP_REQUEST_HEADERS, MapType.HTTP_REQUEST_TRAILERS,
                                MapType.HTTP_RESPONSE_HEADERS, MapType.HTTP_RESPONSE_TRAILERS)
REQUEST = [(":method", "GET"), (":path", "/x"), (":authority", "example.com")]


def scripted(**callbacks) -> MockHost:
    options = {k: callbacks.pop(k) for k in list(callbacks) if not k.startswith("on_")}
    options.setdefault("clusters", ["auth", "grpc"])
    return MockHost.from_guest(ScriptedGuest(callbacks), **options)


def field(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def filter_state_args(path: str, value: str, span: int = 0) -> bytes:
    return field(1, path.encode()) + field(2, value.encode()) + bytes([3 << 3, span])


# -- header maps ------------------------------------------------------------------------------

def test_header_get_is_first_value_and_names_are_lowercased():
    seen = {}

    def on_request_headers(host, ctx, n, eos):
        seen["first"] = host.proxy_get_header_map_value(REQ_H, b"X-Dup")
        seen["pairs"] = decode_pairs(host.proxy_get_header_map_pairs(REQ_H)[1])
        seen["missing"] = host.proxy_get_header_map_value(REQ_H, b"x-none")
        seen["n"] = n
        return 0

    host = scripted(on_request_headers=on_request_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST + [("X-Dup", "one"), ("x-dup", "two")])
    assert seen["first"] == (OK, b"one")
    assert seen["missing"] == (NOT_FOUND, b"")
    assert seen["n"] == 5
    assert seen["pairs"][-2:] == [(b"x-dup", b"one"), (b"x-dup", b"two")]


def test_header_edits_follow_envoy():
    def on_request_headers(host, ctx, n, eos):
        assert host.proxy_remove_header_map_value(REQ_H, b"absent") == OK
        assert host.proxy_add_header_map_value(REQ_H, b"X-New", b"1") == OK
        assert host.proxy_replace_header_map_value(REQ_H, b"x-a", b"replaced") == OK  # moves to the end
        assert host.proxy_add_header_map_value(REQ_H, b":pseudo", b"p") == OK  # pseudo-headers first
        assert host.proxy_get_header_map_size(REQ_H) == (OK, sum(
            len(k) + len(v) for k, v in decode_pairs(host.proxy_get_header_map_pairs(REQ_H)[1])))
        return 0

    host = scripted(on_request_headers=on_request_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST + [("x-a", "1"), ("x-b", "2"), ("x-a", "3")])
    assert stream.request_headers == [(":method", "GET"), (":path", "/x"), (":authority", "example.com"),
                                      (":pseudo", "p"), ("x-b", "2"), ("x-new", "1"), ("x-a", "replaced")]


def test_maps_outside_their_phase():
    seen = {}

    def on_request_headers(host, ctx, n, eos):
        seen["resp_get"] = host.proxy_get_header_map_value(RESP_H, b":status")
        seen["resp_pairs"] = host.proxy_get_header_map_pairs(RESP_H)
        seen["resp_add"] = host.proxy_add_header_map_value(RESP_H, b"x", b"y")
        seen["resp_size"] = host.proxy_get_header_map_size(RESP_H)
        seen["bad_type"] = host.proxy_get_header_map_value(9, b"x")
        seen["call_map_write"] = host.proxy_add_header_map_value(MapType.HTTP_CALL_RESPONSE_HEADERS, b"x", b"y")
        return 0

    def on_response_headers(host, ctx, n, eos):
        # the request headers were continued: Envoy no longer holds them
        seen["req_get_later"] = host.proxy_get_header_map_value(REQ_H, b":path")
        seen["req_set_later"] = host.proxy_set_header_map_pairs(REQ_H, encode_pairs([(b"a", b"b")]))
        return 0

    def on_configure(host, root, size):
        seen["root_get"] = host.proxy_get_header_map_value(REQ_H, b":path")
        return True

    host = scripted(on_request_headers=on_request_headers, on_response_headers=on_response_headers,
                    on_configure=on_configure)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    stream.send_response_headers([(":status", "200")])
    assert seen == {"root_get": (BAD_ARGUMENT, b""), "resp_get": (BAD_ARGUMENT, b""),
                    "resp_pairs": (OK, b""), "resp_add": BAD_ARGUMENT, "resp_size": (BAD_ARGUMENT, 0),
                    "bad_type": (BAD_ARGUMENT, b""), "call_map_write": BAD_ARGUMENT,
                    "req_get_later": (BAD_ARGUMENT, b""), "req_set_later": BAD_ARGUMENT}


def test_access_log_phase_reads_final_maps():
    seen = {}

    def on_log(host, ctx):
        seen["path"] = host.proxy_get_header_map_value(REQ_H, b":path")
        seen["status"] = host.proxy_get_header_map_value(RESP_H, b":status")
        seen["req_trailer"] = host.proxy_get_header_map_value(REQ_T, b"x")  # no map: NOT_FOUND here
        seen["write"] = host.proxy_add_header_map_value(REQ_H, b"x", b"y")

    host = scripted(on_log=on_log)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST, end_of_stream=True)
    stream.send_response_headers([(":status", "204")], end_of_stream=True)
    stream.complete()
    assert seen == {"path": (OK, b"/x"), "status": (OK, b"204"), "req_trailer": (NOT_FOUND, b""),
                    "write": BAD_ARGUMENT}


@pytest.mark.parametrize("blob", [
    encode_pairs([(b"k%d" % i, b"v") for i in range(1024)])[:4].replace(b"\x00\x04", b"\x01\x04")
    + b"", b"\x01", b"garbage that is not pairs", encode_pairs([(b"a", b"b")]) + b"trailing",
])
def test_malformed_or_oversized_pairs_read_as_empty(blob):
    def on_request_headers(host, ctx, n, eos):
        assert host.proxy_set_header_map_pairs(REQ_H, blob) == OK
        return 0

    host = scripted(on_request_headers=on_request_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert stream.request_headers == []


def test_more_than_1024_pairs_read_as_empty():
    too_many = [(b"k%d" % i, b"v") for i in range(1025)]
    blob = len(too_many).to_bytes(4, "little") + b"".join(struct.pack("<II", len(k), len(v)) for k, v in too_many) \
        + b"".join(k + b"\0" + v + b"\0" for k, v in too_many)

    def on_request_headers(host, ctx, n, eos):
        host.proxy_set_header_map_pairs(REQ_H, blob)
        return 0

    host = scripted(on_request_headers=on_request_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert stream.request_headers == []


def test_trailers_can_be_added_in_the_last_body_callback():
    def on_request_body(host, ctx, size, eos):
        status = host.proxy_add_header_map_value(REQ_T, b"x-trailer", b"t")
        assert status == (OK if eos else BAD_ARGUMENT)
        return 0

    host = scripted(on_request_body=on_request_body)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    stream.send_request_body(b"a")
    stream.send_request_body(b"b", end_of_stream=True)
    assert stream.request_trailers == [("x-trailer", "t")]


# -- buffers ----------------------------------------------------------------------------------

def test_set_buffer_bytes_rules():
    seen = []

    def on_request_body(host, ctx, size, eos):
        body = BufferType.HTTP_REQUEST_BODY
        seen.append(host.proxy_get_buffer_bytes(body, 1, 3))
        seen.append(host.proxy_get_buffer_bytes(body, 10, 3))          # past the end: empty
        seen.append(host.proxy_set_buffer_bytes(body, 0, 2, b">>"))     # drop 2, prepend
        seen.append(host.proxy_set_buffer_bytes(body, 100, 0, b"<<"))   # start >= length: append
        seen.append(host.proxy_set_buffer_bytes(body, 3, 0, b"!"))      # in the middle: refused
        seen.append(host.proxy_get_buffer_status(body))
        return 0

    host = scripted(on_request_body=on_request_body)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    stream.send_request_body(b"abcdef", end_of_stream=True)
    assert seen == [(OK, b"bcd"), (OK, b""), OK, OK, BAD_ARGUMENT, (OK, 8, 0)]
    assert stream.request_body == b">>cdef<<"


def test_buffers_outside_their_callback_and_configuration():
    seen = {}

    def on_vm_start(host, root, size):
        seen["vm"] = host.proxy_get_buffer_bytes(BufferType.VM_CONFIGURATION, 0, size)
        seen["plugin_in_vm_start"] = host.proxy_get_buffer_bytes(BufferType.PLUGIN_CONFIGURATION, 0, 100)
        return True

    def on_configure(host, root, size):
        seen["plugin"] = host.proxy_get_buffer_bytes(BufferType.PLUGIN_CONFIGURATION, 0, size)
        seen["write_config"] = host.proxy_set_buffer_bytes(BufferType.PLUGIN_CONFIGURATION, 0, 0, b"x")
        return True

    def on_request_headers(host, ctx, n, eos):
        seen["plugin_later"] = host.proxy_get_buffer_status(BufferType.PLUGIN_CONFIGURATION)
        seen["body"] = host.proxy_get_buffer_bytes(BufferType.HTTP_REQUEST_BODY, 0, 10)
        seen["body_write"] = host.proxy_set_buffer_bytes(BufferType.HTTP_REQUEST_BODY, 0, 0, b"x")
        seen["call_body"] = host.proxy_get_buffer_bytes(BufferType.HTTP_CALL_RESPONSE_BODY, 0, 10)
        seen["bad"] = host.proxy_get_buffer_bytes(9, 0, 10)
        return 0

    host = scripted(on_vm_start=on_vm_start, on_configure=on_configure,
                    on_request_headers=on_request_headers, plugin_config="plugin", vm_config="vm")
    host.http_stream().send_request_headers(REQUEST)
    assert seen == {
        "vm": (OK, b"vm"), "plugin_in_vm_start": (NOT_FOUND, b""), "plugin": (OK, b"plugin"),
        "write_config": BAD_ARGUMENT, "plugin_later": (NOT_FOUND, 0, 0), "body": (OK, b""),
        "body_write": BAD_ARGUMENT, "call_body": (NOT_FOUND, b""), "bad": (BAD_ARGUMENT, b""),
    }


def test_pause_on_body_accumulates_the_body():
    sizes = []

    def on_request_body(host, ctx, size, eos):
        sizes.append(size)
        return 0 if eos else 1

    host = scripted(on_request_body=on_request_body)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert stream.send_request_body(b"abc") == Action.PAUSE
    assert stream.request_paused
    assert stream.send_request_body(b"def", end_of_stream=True) == Action.CONTINUE
    assert sizes == [3, 6]
    assert stream.request_body == b"abcdef" and not stream.request_paused


def test_pause_on_headers_holds_the_body_until_resumed():
    calls = []

    def on_request_headers(host, ctx, n, eos):
        calls.append(("headers", ctx))
        return 1

    def on_request_body(host, ctx, size, eos):
        calls.append(("body", size, eos))
        return 0

    def on_tick(host, root):
        stream_id = calls[0][1]
        assert host.proxy_set_effective_context(stream_id) == OK
        assert host.proxy_get_header_map_value(REQ_H, b":path") == (OK, b"/x")  # still held by Envoy
        assert host.proxy_continue_stream(StreamType.HTTP_REQUEST) == OK
        # Envoy drops its request pointers at once; the resume itself happens after the callback
        assert host.proxy_get_header_map_value(REQ_H, b":path") == (BAD_ARGUMENT, b"")
        calls.append(("tick",))

    def on_configure(host, root, size):
        host.proxy_set_tick_period_milliseconds(10)
        return True

    host = scripted(on_request_headers=on_request_headers, on_request_body=on_request_body,
                    on_tick=on_tick, on_configure=on_configure)
    stream = host.http_stream()
    assert stream.send_request_headers(REQUEST) == Action.PAUSE
    assert stream.send_request_body(b"abc") == Action.PAUSE   # held back from the plugin
    assert stream.send_request_body(b"def", end_of_stream=True) == Action.PAUSE
    assert calls == [("headers", stream.context_id)]
    with pytest.raises(HostMisuseError, match="paused the request headers"):
        stream.send_response_headers([(":status", "200")])
    host.advance_time(10)
    assert calls[1:] == [("tick",), ("body", 6, 1)]
    assert stream.request_body == b"abcdef" and not stream.request_paused


# -- local responses, continue, close ---------------------------------------------------------

def test_local_response_is_deferred_forces_stop_and_runs_response_callbacks():
    seen = []

    def on_request_headers(host, ctx, n, eos):
        pairs = encode_pairs([(b"X-Extra", b"1")])
        assert host.proxy_send_local_response(403, "denied by  plugin", b"no", pairs, -1) == OK
        seen.append(host.proxy_get_header_map_value(REQ_H, b":path"))  # still the request phase
        return 0  # Envoy stops anyway

    def on_response_headers(host, ctx, n, eos):
        seen.append(("response", decode_pairs(host.proxy_get_header_map_pairs(RESP_H)[1]), eos))
        host.proxy_add_header_map_value(RESP_H, b"x-by-plugin", b"yes")
        return 0

    def on_response_body(host, ctx, size, eos):
        seen.append(("body", host.proxy_get_buffer_bytes(BufferType.HTTP_RESPONSE_BODY, 0, size), eos))
        return 0

    host = scripted(on_request_headers=on_request_headers, on_response_headers=on_response_headers,
                    on_response_body=on_response_body)
    stream = host.http_stream()
    assert stream.send_request_headers(REQUEST) == Action.CONTINUE
    assert seen[0] == (OK, b"/x")
    assert seen[1] == ("response", [(b":status", b"403"), (b"x-extra", b"1"), (b"content-length", b"2"),
                                    (b"content-type", b"text/plain")], 0)
    assert seen[2] == ("body", (OK, b"no"), 1)
    local = stream.local_response
    assert (local.status, local.body, local.headers, local.grpc_status, local.details) == \
        (403, b"no", [("x-extra", "1")], None, "denied_by__plugin")
    assert stream.response_header("x-by-plugin") == "yes" and stream.response_body == b"no"
    assert stream.request_paused  # the request never reaches the upstream
    with pytest.raises(HostMisuseError, match="local response"):
        stream.send_response_headers([(":status", "200")])
    with pytest.raises(HostMisuseError, match="local response"):
        stream.send_request_body(b"more")
    stream.complete()


def test_local_response_to_a_grpc_request():
    def on_request_headers(host, ctx, n, eos):
        host.proxy_send_local_response(401, "", b"no token %", b"", -1)
        return 1

    host = scripted(on_request_headers=on_request_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST + [("content-type", "application/grpc")])
    assert dict(stream.response_headers) == {":status": "200", "content-type": "application/grpc",
                                             "grpc-status": "16", "grpc-message": "no token %25"}
    assert stream.response_body == b""


def test_local_response_while_filtering_the_upstream_response_replaces_it():
    calls = []

    def on_response_headers(host, ctx, n, eos):
        calls.append("headers")
        host.proxy_send_local_response(502, "", b"bad upstream", b"", 14)
        return 1

    host = scripted(on_response_headers=on_response_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST, end_of_stream=True)
    stream.send_response_headers([(":status", "200"), ("x-upstream", "1")])
    assert calls == ["headers"]  # Envoy sends it directly: the filter does not see it
    assert stream.response_headers[0] == (":status", "502")
    assert stream.response_header("x-upstream") is None and stream.response_body == b"bad upstream"
    assert stream.local_response.grpc_status == 14


def test_local_response_after_response_headers_left_resets_the_stream():
    def on_response_body(host, ctx, size, eos):
        host.proxy_send_local_response(500, "", b"", b"", -1)
        return 0

    host = scripted(on_response_body=on_response_body)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST, end_of_stream=True)
    stream.send_response_headers([(":status", "200")])
    stream.send_response_body(b"partial")
    assert stream.reset == "local reply after the response started"
    with pytest.raises(HostMisuseError, match="reset"):
        stream.send_response_body(b"more", end_of_stream=True)
    stream.complete()


def test_a_reset_drops_the_body_envoy_held():
    """What the client got of a reset response is what passed before the reset: the chunks
    the plugin held (PAUSE) never leave."""
    def on_response_body(host, ctx, size, eos):
        if not eos:
            return 0 if size == len(b"passed") else 1  # the first chunk passes, the rest is held
        host.proxy_close_stream(StreamType.HTTP_RESPONSE)
        return 1

    host = scripted(on_response_body=on_response_body)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST, end_of_stream=True)
    stream.send_response_headers([(":status", "200")])
    stream.send_response_body(b"passed")
    stream.send_response_body(b" held")
    assert stream.response_body == b"passed held"  # passed + what the plugin holds right now
    stream.send_response_body(b" too", end_of_stream=True)
    assert stream.reset == "wasm_close_stream" and stream.response_body == b"passed"


def test_continue_and_close_stream_statuses():
    seen = {}

    def on_request_headers(host, ctx, n, eos):
        seen["upstream"] = host.proxy_continue_stream(StreamType.UPSTREAM)
        seen["bad"] = host.proxy_continue_stream(7)
        seen["close_bad"] = host.proxy_close_stream(7)
        seen["close"] = host.proxy_close_stream(StreamType.HTTP_REQUEST)
        return 0

    host = scripted(on_request_headers=on_request_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert seen == {"upstream": Status.UNIMPLEMENTED, "bad": BAD_ARGUMENT, "close_bad": BAD_ARGUMENT,
                    "close": OK}
    assert stream.reset == "wasm_close_stream"


def test_effective_context_lasts_one_callback():
    seen = []

    def on_request_headers(host, ctx, n, eos):
        seen.append(host.proxy_set_effective_context(999))
        seen.append(host.proxy_set_effective_context(1))  # the root
        seen.append(host.proxy_get_header_map_value(REQ_H, b":path"))  # acts on the root now
        return 0

    def on_request_body(host, ctx, size, eos):
        seen.append(host.proxy_get_buffer_status(BufferType.HTTP_REQUEST_BODY))  # back to the stream
        return 0

    host = scripted(on_request_headers=on_request_headers, on_request_body=on_request_body)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    stream.send_request_body(b"xy", end_of_stream=True)
    assert seen == [BAD_ARGUMENT, OK, (BAD_ARGUMENT, b""), (OK, 2, 0)]


# -- HTTP and gRPC calls ----------------------------------------------------------------------

def call_headers(**extra: str) -> bytes:
    headers = {":method": "GET", ":path": "/check", ":authority": "auth", **extra}
    return encode_pairs([(k.encode(), v.encode()) for k, v in headers.items()])


def test_http_call_validation():
    seen = {}

    def on_request_headers(host, ctx, n, eos):
        seen["unknown"] = host.proxy_http_call("nope", call_headers(), b"", b"", 1000)
        seen["no_authority"] = host.proxy_http_call(
            "auth", encode_pairs([(b":method", b"GET"), (b":path", b"/")]), b"", b"", 1000)
        seen["negative_timeout"] = host.proxy_http_call("auth", call_headers(), b"", b"", 1 << 31)
        seen["ok"] = host.proxy_http_call("auth", call_headers(), b"body", b"", 1000)
        return 1

    host = scripted(on_request_headers=on_request_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert seen["unknown"] == (BAD_ARGUMENT, 0) and seen["no_authority"] == (BAD_ARGUMENT, 0)
    assert seen["negative_timeout"] == (BAD_ARGUMENT, 0)
    assert seen["ok"] == (OK, 4)  # Envoy's callout ids: 4, 8, ... for HTTP calls
    assert any("'nope' does not exist" in note for note in host.notes)
    call = host.http_calls[0]
    assert (call.cluster, call.method, call.path, call.authority, call.body) == ("auth", "GET", "/check", "auth", b"body")
    assert call.header("content-length") == "4" and call.context_id == stream.context_id
    assert host.pending_calls() == [call]
    call.fail()


def test_http_call_answers_go_to_the_root_with_the_response_readable():
    seen = []

    def on_request_headers(host, ctx, n, eos):
        host.proxy_http_call("auth", call_headers(), b"", b"", 1000)
        return 1

    def on_http_call_response(host, root, token, n_headers, body_size, n_trailers):
        seen.append((root, token, n_headers, body_size, n_trailers,
                     host.proxy_get_header_map_value(MapType.HTTP_CALL_RESPONSE_HEADERS, b":status"),
                     host.proxy_get_buffer_bytes(BufferType.HTTP_CALL_RESPONSE_BODY, 0, body_size),
                     host.proxy_get_header_map_pairs(MapType.HTTP_CALL_RESPONSE_TRAILERS),
                     host.proxy_get_status()))

    def on_tick(host, root):
        seen.append(("after", host.proxy_get_buffer_bytes(BufferType.HTTP_CALL_RESPONSE_BODY, 0, 10),
                     host.proxy_get_header_map_value(MapType.HTTP_CALL_RESPONSE_HEADERS, b":status")))

    def on_configure(host, root, size):
        host.proxy_set_tick_period_milliseconds(1)
        return True

    host = scripted(on_request_headers=on_request_headers, on_http_call_response=on_http_call_response,
                    on_tick=on_tick, on_configure=on_configure)
    for _ in range(4):
        host.http_stream().send_request_headers(REQUEST)
    ok, failed, slow, down = host.http_calls
    ok.respond(200, {"x-decision": "allow"}, b"yes", trailers=[("x-t", "1")])
    host.advance_time(1)
    failed.fail()
    slow.timeout()
    down.connection_failure()
    root = host.root_context_id
    assert seen[0][:5] == (root, ok.token, 2, 3, 1)
    assert seen[0][5:8] == ((OK, b"200"), (OK, b"yes"), (OK, encode_pairs([(b"x-t", b"1")])))
    assert seen[1] == ("after", (NOT_FOUND, b""), (BAD_ARGUMENT, b""))
    assert seen[2][:5] == (root, failed.token, 0, 0, 0) and seen[2][8] == (OK, 11, b"reset")
    assert seen[3][2:6] == (3, 24, 0, (OK, b"504"))
    # Envoy's own reply when nothing listens (checked against Envoy 1.40 in test_example_authz)
    assert seen[4][2:7] == (3, 98, 0, (OK, b"503"), (OK, b"upstream connect error or disconnect/reset "
                                                      b"before headers. reset reason: remote connection failure"))
    assert (slow.state, down.state) == ("timed out", "refused")
    with pytest.raises(HostMisuseError, match="already answered"):
        ok.respond(200)


def test_grpc_calls_and_streams():
    seen = []

    def on_request_headers(host, ctx, n, eos):
        seen.append(host.proxy_grpc_call(b"", "svc", "M", b"", b"", 1000))        # no service at all
        seen.append(host.proxy_grpc_call(b"no-such", "svc", "M", b"", b"", 1000))  # unknown cluster
        seen.append(host.proxy_grpc_call(b"grpc", "svc", "M", b"", b"req", 1000))  # a cluster name
        service = field(1, field(1, b"grpc"))  # GrpcService{envoy_grpc{cluster_name}}
        seen.append(host.proxy_grpc_stream(service, "svc", "Watch", encode_pairs([(b"k", b"v")])))
        stream_token = seen[-1][1]
        seen.append(host.proxy_grpc_send(stream_token, b"m1", 0))
        seen.append(host.proxy_grpc_send(seen[2][1], b"x", 0))   # a call is not a stream
        seen.append(host.proxy_grpc_send(stream_token + 4, b"x", 0))
        return 1

    def on_grpc_receive(host, root, token, size):
        seen.append(("receive", token, host.proxy_get_buffer_bytes(BufferType.GRPC_RECEIVE_BUFFER, 0, size)))

    def on_grpc_receive_initial_metadata(host, root, token, n):
        seen.append(("initial", token, host.proxy_get_header_map_value(MapType.GRPC_RECEIVE_INITIAL_METADATA, b"a")))

    def on_grpc_close(host, root, token, status):
        seen.append(("close", token, status, host.proxy_get_status()))

    host = scripted(on_request_headers=on_request_headers, on_grpc_receive=on_grpc_receive,
                    on_grpc_close=on_grpc_close, on_grpc_receive_initial_metadata=on_grpc_receive_initial_metadata)
    host.http_stream().send_request_headers(REQUEST)
    assert seen[:7] == [(BAD_ARGUMENT, 0), (Status.PARSE_FAILURE, 0), (OK, 5), (OK, 6), OK, BAD_ARGUMENT, NOT_FOUND]
    call, stream = host.grpc_calls[0], host.grpc_streams[0]
    assert (call.cluster, call.message, stream.cluster, stream.metadata, stream.sent) == \
        ("grpc", b"req", "grpc", [("k", "v")], [b"m1"])
    call.respond(b"reply")   # Envoy: on_grpc_receive only, no close for a unary success
    stream.send_initial_metadata({"a": "b"})
    stream.send_message(b"s1")
    stream.close(7, "nope")
    assert seen[7:] == [("receive", 5, (OK, b"reply")), ("initial", 6, (OK, b"b")),
                        ("receive", 6, (OK, b"s1")), ("close", 6, 7, (OK, 7, b"nope"))]
    assert host.pending_calls() == []


# -- shared data, queues, metrics -------------------------------------------------------------

def test_shared_data_compare_and_swap():
    seen = []

    def on_request_headers(host, ctx, n, eos):
        seen.append(host.proxy_get_shared_data(b"k"))
        seen.append(host.proxy_set_shared_data(b"k", b"v1", 0))
        status, value, cas = host.proxy_get_shared_data(b"k")
        seen.append(host.proxy_set_shared_data(b"k", b"v2", cas + 100))   # stale
        seen.append(host.proxy_set_shared_data(b"k", b"v2", cas))
        seen.append(host.proxy_set_shared_data(b"new", b"x", 12345))      # unknown key: cas ignored
        return 0

    store = SharedStore()
    host = scripted(on_request_headers=on_request_headers, shared=store)
    host.http_stream().send_request_headers(REQUEST)
    assert seen == [(NOT_FOUND, b"", 0), OK, Status.CAS_MISMATCH, OK, OK]
    assert dict(host.shared_data) == {"k": b"v2", "new": b"x"}
    other = scripted(shared=store)  # another VM (worker) with the same vm_id sees the same data
    assert other.shared_data["k"] == b"v2" and other.shared_data.cas("k") == host.shared_data.cas("k")
    other.shared_data["k"] = "from the test"
    assert host.shared_data["k"] == b"from the test"


def test_shared_queues_notify_the_owner_after_the_callback():
    events = []

    def on_configure(host, root, size):
        events.append(("register", host.proxy_register_shared_queue(b"q")))
        events.append(("resolve", host.proxy_resolve_shared_queue(b"", b"q"), host.proxy_resolve_shared_queue(b"", b"x")))
        events.append(("empty", host.proxy_dequeue_shared_queue(1)))
        return True

    def on_request_headers(host, ctx, n, eos):
        events.append(("enqueue", host.proxy_enqueue_shared_queue(1, b"item"),
                       host.proxy_enqueue_shared_queue(99, b"x")))
        return 0

    def on_queue_ready(host, root, token):
        events.append(("ready", root, token, host.proxy_dequeue_shared_queue(token)))

    host = scripted(on_configure=on_configure, on_request_headers=on_request_headers,
                    on_queue_ready=on_queue_ready)
    assert events[:3] == [("register", (OK, 1)), ("resolve", (OK, 1), (NOT_FOUND, 0)),
                          ("empty", (Status.EMPTY, b""))]
    host.http_stream().send_request_headers(REQUEST)
    assert events[3:] == [("enqueue", OK, NOT_FOUND), ("ready", 1, 1, (OK, b"item"))]
    host.shared_queues.enqueue("q", "from test")
    assert events[-1] == ("ready", 1, 1, (OK, b"from test"))
    assert host.shared_queues.names() == ["q"]


def test_metrics():
    seen = []

    def on_configure(host, root, size):
        _, counter = host.proxy_define_metric(MetricType.COUNTER, b"c")
        _, gauge = host.proxy_define_metric(MetricType.GAUGE, b"g")
        _, histogram = host.proxy_define_metric(MetricType.HISTOGRAM, b"h")
        seen.append((counter, gauge, histogram))
        seen.append(host.proxy_define_metric(3, b"bad"))
        seen.append([host.proxy_increment_metric(counter, 2), host.proxy_increment_metric(counter, 0),
                     host.proxy_increment_metric(counter, -1), host.proxy_record_metric(counter, 3)])
        seen.append([host.proxy_increment_metric(gauge, 5), host.proxy_increment_metric(gauge, -7),
                     host.proxy_record_metric(gauge, 9), host.proxy_get_metric(gauge)])
        seen.append([host.proxy_record_metric(histogram, 10), host.proxy_record_metric(histogram, 20),
                     host.proxy_increment_metric(histogram, 1), host.proxy_get_metric(histogram)])
        seen.append([host.proxy_get_metric(counter), host.proxy_get_metric(counter + 400),
                     host.proxy_record_metric(counter + 400, 1)])
        return True

    host = scripted(on_configure=on_configure)
    assert seen == [(4, 5, 6), (BAD_ARGUMENT, 0), [OK, BAD_ARGUMENT, BAD_ARGUMENT, OK],
                    [OK, OK, OK, (OK, 9)], [OK, OK, BAD_ARGUMENT, (BAD_ARGUMENT, 0)],
                    [(OK, 5), (NOT_FOUND, 0), NOT_FOUND]]
    assert host.metrics["c"].value == 5 and host.metrics["g"].value == 9
    assert host.metrics["h"].samples == [10, 20] and host.metrics["h"].type == MetricType.HISTOGRAM
    assert set(host.metrics) == {"c", "g", "h"} and host.metrics.value("never") == 0


# -- properties -------------------------------------------------------------------------------

def prop(host, *path: str):
    return host.proxy_get_property("\0".join(path).encode())


def test_property_values_are_encoded_like_envoy():
    seen = {}

    def on_request_headers(host, ctx, n, eos):
        seen["address"] = prop(host, "source", "address")
        seen["port"] = prop(host, "source", "port")
        seen["dest_port"] = prop(host, "destination", "port")
        seen["mtls"] = prop(host, "connection", "mtls")
        seen["path"] = prop(host, "request", "path")
        seen["query"] = prop(host, "request", "query")
        seen["headers"] = prop(host, "request", "headers")
        seen["header"] = prop(host, "request", "headers", "x-rep")
        seen["plugin"] = (prop(host, "plugin_name"), prop(host, "plugin_root_id"), prop(host, "plugin_vm_id"))
        seen["node_id"] = prop(host, "xds", "node", "id")
        seen["node_meta"] = prop(host, "xds", "node", "metadata", "ROLE")
        seen["node"] = prop(host, "xds", "node")
        seen["old_node"] = prop(host, "node", "id")  # Envoy 1.40 moved it under xds
        seen["unknown"] = prop(host, "no", "such")
        seen["cluster"] = prop(host, "xds", "cluster_name")
        seen["route"] = prop(host, "xds", "route_name")
        seen["upstream"] = prop(host, "upstream", "address")
        seen["list"] = prop(host, "metadata", "listeners", "1")
        seen["trailing_nul"] = host.proxy_get_property(b"plugin_name\0")
        seen["empty"] = host.proxy_get_property(b"")
        return 0

    host = scripted(on_request_headers=on_request_headers, plugin_name="p", root_id="r", vm_id="v",
                    node={"id": "n1", "cluster": "c1", "metadata": {"ROLE": "gw"}},
                    properties={"xds": {"cluster_name": "outbound|80||svc"}, "metadata": {"listeners": ["a", "b"]}})
    stream = host.http_stream(source="192.168.1.7:4000", destination="10.1.1.1:8443",
                              properties={"upstream": {"address": "10.9.9.9:80"}})
    stream.send_request_headers(REQUEST[:1] + [(":path", "/a/b?x=1")] + REQUEST[2:]
                                + [("x-rep", "1"), ("x-rep", "2")])
    assert seen["address"] == (OK, b"192.168.1.7:4000")
    assert seen["port"] == (OK, (4000).to_bytes(8, "little"))
    assert seen["dest_port"] == (OK, (8443).to_bytes(8, "little"))
    assert seen["mtls"] == (OK, b"\x00")
    assert seen["path"] == (OK, b"/a/b?x=1") and seen["query"] == (OK, b"x=1")
    assert decode_pairs(seen["headers"][1])[-1] == (b"x-rep", b"1,2") and seen["header"] == (OK, b"1,2")
    assert seen["plugin"] == ((OK, b"p"), (OK, b"r"), (OK, b"v"))
    assert seen["node_id"] == (OK, b"n1") and seen["node_meta"] == (OK, b"gw")
    assert seen["node"][0] == OK and b"n1" in seen["node"][1] and b"gw" in seen["node"][1]
    assert seen["old_node"] == (NOT_FOUND, b"") and seen["route"] == (OK, b"")
    assert seen["unknown"] == (NOT_FOUND, b"")
    assert seen["cluster"] == (OK, b"outbound|80||svc") and seen["upstream"] == (OK, b"10.9.9.9:80")
    assert seen["list"] == (OK, b"b") and seen["trailing_nul"] == (OK, b"p")
    assert seen["empty"] == (Status.SERIALIZATION_FAILURE, b"")


def test_request_properties_follow_the_reachability_of_the_headers():
    seen = []

    def on_request_headers(host, ctx, n, eos):
        seen.append(prop(host, "request", "method"))
        return 0

    def on_response_headers(host, ctx, n, eos):
        seen.append(prop(host, "request", "method"))  # Envoy: request headers are gone here
        seen.append(prop(host, "response", "code"))
        return 0

    host = scripted(on_request_headers=on_request_headers, on_response_headers=on_response_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST, end_of_stream=True)
    stream.send_response_headers([(":status", "201")])
    assert seen == [(OK, b"GET"), (NOT_FOUND, b""), (OK, (201).to_bytes(8, "little"))]


def test_set_property_writes_wasm_filter_state():
    seen = []

    def on_configure(host, root, size):
        seen.append(host.proxy_set_property(b"k", b"v"))  # a root context has no stream
        return True

    def on_request_headers(host, ctx, n, eos):
        seen.append(host.proxy_set_property(b"my_key", b"\x00\xffbytes"))
        seen.append(prop(host, "my_key"))
        seen.append(prop(host, "filter_state", "wasm.my_key"))
        return 0

    host = scripted(on_configure=on_configure, on_request_headers=on_request_headers)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert seen == [NOT_FOUND, OK, (OK, b"\x00\xffbytes"), (OK, b"\x00\xffbytes")]
    assert stream.filter_state == {"wasm.my_key": b"\x00\xffbytes"}


# -- foreign functions ------------------------------------------------------------------------

def test_set_envoy_filter_state_decodes_the_protobuf():
    seen = []

    def on_new_connection(host, ctx):
        call = host.proxy_call_foreign_function
        seen.append(call("set_envoy_filter_state", filter_state_args("envoy.tcp_proxy.cluster", "egress-a", 2)))
        seen.append(call("set_envoy_filter_state", filter_state_args("my.unknown.key", "x")))
        seen.append(call("set_envoy_filter_state", b"\xff\xff"))
        seen.append(call("set_envoy_filter_state", filter_state_args("envoy.upstream.dynamic_port", "http")))
        return 0

    host = scripted(on_new_connection=on_new_connection)
    conn = host.tcp_connection()
    conn.connect()
    assert seen == [(OK, b""), (NOT_FOUND, b""), (BAD_ARGUMENT, b""), (BAD_ARGUMENT, b"")]
    assert conn.filter_state == {"envoy.tcp_proxy.cluster": "egress-a"}
    assert any("my.unknown.key" in note for note in host.notes)


def test_other_foreign_functions():
    seen = []

    def on_request_headers(host, ctx, n, eos):
        call = host.proxy_call_foreign_function
        status, packed = call("compress", b"aaaa" * 10)
        seen.append((status, zlib.decompress(packed)))
        seen.append(call("uncompress", packed))
        seen.append(call("uncompress", b"not zlib"))
        seen.append(call("clear_route_cache", b""))
        seen.append(call("no_such_function", b""))
        seen.append(call("upper", b"abc"))
        return 0

    host = scripted(on_request_headers=on_request_headers, foreign_functions={"upper": bytes.upper})
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert seen == [(OK, b"aaaa" * 10), (OK, b"aaaa" * 10), (Status.SERIALIZATION_FAILURE, b""),
                    (OK, b""), (NOT_FOUND, b""), (OK, b"ABC")]
    assert stream.route_cache_cleared == 1


def test_envoy_functions_the_host_does_not_emulate_raise():
    def on_request_headers(host, ctx, n, eos):
        host.proxy_call_foreign_function("verify_signature", b"")
        return 0

    host = scripted(on_request_headers=on_request_headers)
    with pytest.raises(UnsupportedByMockHost, match="foreign_functions="):
        host.http_stream().send_request_headers(REQUEST)


# -- time, logs, lifecycle --------------------------------------------------------------------

def test_ticks_follow_the_clock():
    ticks = []

    def on_configure(host, root, size):
        host.proxy_set_tick_period_milliseconds(100)
        return True

    def on_tick(host, root):
        ticks.append(host.proxy_get_current_time_nanoseconds()[1])
        if len(ticks) == 3:
            host.proxy_set_tick_period_milliseconds(0)

    start = 1_700_000_000_000_000_000
    host = scripted(on_configure=on_configure, on_tick=on_tick, start_time_ns=start)
    host.advance_time(99)
    assert ticks == []
    host.advance_time(1000)
    assert ticks == [start + 100_000_000, start + 200_000_000, start + 300_000_000]
    assert host.now_ns == start + 1_099_000_000 and host.tick_period_ms == 0


def test_log_levels():
    seen = []

    def on_vm_start(host, root, size):
        seen.append(host.proxy_get_log_level())
        seen.append(host.proxy_log(6, "too high"))
        host.proxy_log(LogLevel.DEBUG, "dropped at info")
        host.proxy_log(LogLevel.WARN, "kept")
        return True

    host = scripted(on_vm_start=on_vm_start, log_level=LogLevel.INFO)
    assert seen == [(OK, LogLevel.INFO), BAD_ARGUMENT]
    assert [(r.level, r.message) for r in host.logs] == [(LogLevel.WARN, "kept")]
    assert host.logs.find("kept", level=LogLevel.WARN) and not host.logs.find("dropped")


def test_logs_helpers():
    def on_vm_start(host, root, size):
        host.proxy_log(LogLevel.INFO, "user alice logged in")
        host.proxy_log(LogLevel.ERROR, "user bob failed")
        return True

    host = scripted(on_vm_start=on_vm_start)
    logs = host.logs
    assert len(logs) == 2 and logs[0].context_id == host.root_context_id
    assert [r.message for r in logs.find("user")] == ["user alice logged in", "user bob failed"]
    assert [r.message for r in logs.find(re.compile(r"user \w+ failed"))] == ["user bob failed"]
    assert logs.find("user", min_level=LogLevel.WARN) == [logs[1]]
    assert logs.messages(LogLevel.INFO) == ["user alice logged in"]
    assert logs.text() == "[info] user alice logged in\n[error] user bob failed"
    logs.clear()
    assert list(logs) == []


def test_rejected_configuration():
    host = scripted(on_configure=lambda host, root, size: False)
    assert host.started and not host.configured
    with pytest.raises(HostMisuseError, match="rejected the plugin configuration"):
        host.http_stream()
    host = scripted(on_vm_start=lambda host, root, size: False)
    assert not host.started and not host.configured


def test_stream_callbacks_run_in_envoy_order():
    order = []

    def record(name):
        def callback(host, ctx, *args):
            order.append((name, args))
            return True if name == "on_done" else 0 if name.startswith("on_re") else None
        return callback

    names = ["on_context_create", "on_request_headers", "on_request_body", "on_request_trailers",
             "on_response_headers", "on_response_trailers", "on_log", "on_done", "on_delete"]
    host = scripted(**{n: record(n) for n in names})  # no on_response_body: skipped, as in Envoy
    order.clear()
    stream = host.http_stream()
    assert order == []  # the context is created with the request headers
    stream.send_request_headers(REQUEST)
    stream.send_request_body(b"ab")
    stream.send_request_trailers([("t", "1")])
    stream.send_response_headers([(":status", "200")])
    assert stream.send_response_body(b"xyz") == Action.CONTINUE
    stream.send_response_trailers([("t", "2")])
    stream.complete()
    root = host.root_context_id
    assert order == [("on_context_create", (root,)), ("on_request_headers", (3, 0)),
                     ("on_request_body", (2, 0)), ("on_request_trailers", (1,)),
                     ("on_response_headers", (1, 0)), ("on_response_trailers", (1,)),
                     ("on_log", ()), ("on_done", ()), ("on_delete", ())]
    assert stream.response_body == b"xyz"


def test_out_of_order_steps_are_refused():
    host = scripted()
    stream = host.http_stream()
    with pytest.raises(HostMisuseError, match="request headers first"):
        stream.send_request_body(b"x")
    with pytest.raises(HostMisuseError, match="request headers first"):
        stream.send_response_headers([(":status", "200")])
    stream.send_request_headers(REQUEST, end_of_stream=True)
    with pytest.raises(HostMisuseError, match="already ended"):
        stream.send_request_body(b"x")
    with pytest.raises(HostMisuseError, match="already sent"):
        stream.send_request_headers(REQUEST)
    with pytest.raises(HostMisuseError, match="response headers first"):
        stream.send_response_body(b"x")
    stream.complete()
    with pytest.raises(HostMisuseError, match="complete"):
        stream.send_response_headers([(":status", "200")])
    with pytest.raises(HostMisuseError, match="already called"):
        stream.complete()
    conn = host.tcp_connection()
    with pytest.raises(HostMisuseError, match="connect"):
        conn.send_downstream(b"x")
    with pytest.raises(HostMisuseError, match="forward"):
        host.advance_time(-1)


def test_hostcalls_outside_callbacks_are_misuse():
    state = HostState()
    with pytest.raises(HostMisuseError, match="outside of any callback"):
        state.proxy_get_log_level()


def test_shutdown_waits_for_proxy_done():
    events = []

    def on_done(host, root):
        events.append("done")
        return False

    def on_tick(host, root):
        events.append(("proxy_done", host.proxy_done(), host.proxy_done()))

    def on_configure(host, root, size):
        host.proxy_set_tick_period_milliseconds(5)
        return True

    host = scripted(on_done=on_done, on_tick=on_tick, on_configure=on_configure,
                    on_delete=lambda host, ctx: events.append(("delete", ctx)))
    assert host.shutdown() is False
    assert events == ["done"]
    host.advance_time(5)
    assert events[1:] == [("proxy_done", OK, NOT_FOUND), ("delete", 1)]


# -- TCP --------------------------------------------------------------------------------------

def test_tcp_connection_flow():
    order = []

    def on_downstream_data(host, ctx, size, eos):
        data = host.proxy_get_buffer_bytes(BufferType.DOWNSTREAM_DATA, 0, size)[1]
        order.append(("down", data, eos))
        return 0 if b"\n" in data else 1

    def on_upstream_data(host, ctx, size, eos):
        host.proxy_set_buffer_bytes(BufferType.UPSTREAM_DATA, 0, size, b"<" + host.proxy_get_buffer_bytes(
            BufferType.UPSTREAM_DATA, 0, size)[1] + b">")
        order.append(("up", eos))
        return 0

    def record(name):
        return lambda host, ctx, *args: order.append((name, *args))

    host = scripted(on_downstream_data=on_downstream_data, on_upstream_data=on_upstream_data,
                    on_new_connection=lambda host, ctx: order.append("new") or 0,
                    on_upstream_connection_close=record("upstream_close"),
                    on_downstream_connection_close=record("downstream_close"),
                    on_done=lambda host, ctx: order.append("done") or True,
                    on_log=record("log"), on_delete=record("delete"))
    conn = host.tcp_connection(source="10.0.0.9:999")
    assert conn.connect() == Action.CONTINUE
    assert conn.send_downstream(b"hel") == Action.PAUSE
    assert conn.send_downstream(b"lo\n") == Action.CONTINUE
    assert conn.to_upstream == b"hello\n"
    conn.send_upstream(b"hi", end_of_stream=True)
    assert conn.to_downstream == b"<hi>"
    conn.close()
    assert order == ["new", ("down", b"hel", 0), ("down", b"hello\n", 0), ("up", 1),
                     ("upstream_close", PeerType.UNKNOWN), ("downstream_close", PeerType.REMOTE),
                     "done", ("log",), ("delete",)]
    assert conn.closed
    with pytest.raises(HostMisuseError, match="closed"):
        conn.send_downstream(b"x")


def test_tcp_close_stream_closes_locally():
    order = []

    def on_downstream_data(host, ctx, size, eos):
        host.proxy_close_stream(StreamType.DOWNSTREAM)
        order.append("data")
        return 0

    host = scripted(on_downstream_data=on_downstream_data,
                    on_downstream_connection_close=lambda host, ctx, peer: order.append(("close", peer)))
    conn = host.tcp_connection()
    conn.connect()
    conn.send_downstream(b"bye")
    assert order == ["data", ("close", PeerType.LOCAL)]
    assert conn.closed and conn.close_reason == "closed by the plugin (close_stream)"


def test_allow_on_headers_stop_iteration_lets_the_body_reach_the_plugin():
    calls = []

    def on_request_headers(host, ctx, n, eos):
        return 1

    def on_request_body(host, ctx, size, eos):
        calls.append((size, eos))
        if eos:
            host.proxy_continue_stream(StreamType.HTTP_REQUEST)
        return 0

    for allow, expected in ((True, [(3, 0), (3, 1)]), (False, [(6, 1)])):
        calls.clear()
        host = scripted(on_request_headers=on_request_headers, on_request_body=on_request_body,
                        on_tick=lambda host, root: None, allow_on_headers_stop_iteration=allow)
        stream = host.http_stream()
        assert stream.send_request_headers(REQUEST) == Action.PAUSE
        stream.send_request_body(b"abc")
        stream.send_request_body(b"def", end_of_stream=True)
        if not allow:  # StopAllIteration: the body waits until something resumes the request
            assert calls == [] and stream.request_paused
            continue
        assert calls == expected and not stream.request_paused
        assert stream.request_body == b"abcdef"
        stream.send_response_headers([(":status", "200")])


def test_every_abi_hostcall_is_a_host_method_with_the_abi_parameters():
    import inspect

    from pywasm_sdk.tooling import abi as abi_mod

    abi = abi_mod.load()
    for call in (*abi.hostcalls.values(), *abi.sdk_imports.values()):
        method = getattr(HostState, call.name, None)
        assert method is not None, f"HostState lacks {call.name}"
        params = list(inspect.signature(method).parameters)[1:]
        assert params == [p.name for p in call.params], call.name
