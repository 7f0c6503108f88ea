"""examples/payload_masking: natively and as the built .wasm in the mock host, then in the real
Envoy (its envoy.yaml, Envoy's default PAUSE semantics) with the example's own interceptor and
customers API on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
from types import SimpleNamespace

import pytest

from pywasm_sdk.testing import Action, LogLevel
from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling.envoy import Reply, Request

from .conftest import EXAMPLES
from .test_examples_helpers import (example_services, local_envoy_config, reproduce_manifest,
                                    services_script)

MASKING = EXAMPLES / "payload_masking"
ENV = {"INTERCEPTOR_CLUSTER": "interceptor", "INTERCEPTOR_API_KEY": "demo-key",
       "INTERCEPTOR_CLIENT_ID": "demo-client", "INTERCEPTOR_CLIENT_SECRET": "demo-secret"}
REQUEST = {":method": "GET", ":path": "/customers", ":authority": "api.example", ":scheme": "http",
           "accept-encoding": "gzip, br"}
services = example_services("payload_masking")


def api_host(mock_host, mode, env=None, **options):
    host = mock_host(MASKING, mode=mode, env=env or ENV, clusters=["interceptor"], **options)
    assert host.configured, host.logs.text()
    return host


def json_response(stream, body: bytes, content_type="application/json", parts=3):
    """The API answers ``body`` in ``parts`` chunks; returns the plugin's action for each step."""
    head = stream.send_response_headers({":status": "200", "content-type": content_type,
                                         "content-length": str(len(body))})
    size = -(-len(body) // parts)
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    actions = [stream.send_response_body(c, end_of_stream=i == len(chunks) - 1) for i, c in enumerate(chunks)]
    return head, actions


def intercepted(call) -> Reply:
    """What the example's interceptor answers to the call the plugin made."""
    return services.intercept(Request(call.method, call.path, dict(call.headers), call.body))


CUSTOMERS = json.dumps([services.customer(n) for n in range(1, 4)]).encode()


# -- mock host: natively and as .wasm -------------------------------------------------------------

def test_json_body_is_replaced_by_the_interceptors_answer(mock_host, host_mode):
    host = api_host(mock_host, host_mode)
    stream = host.http_stream()
    assert stream.send_request_headers(REQUEST) == Action.CONTINUE
    assert stream.request_header("accept-encoding") is None  # the API is asked for plain JSON
    head, actions = json_response(stream, CUSTOMERS)
    assert head == Action.CONTINUE  # never held: works with Envoy's default PAUSE semantics
    assert stream.response_header("content-length") is None  # the length changes
    assert actions == [Action.PAUSE] * 3  # the whole body is held until the interceptor answers
    (call,) = host.http_calls
    assert (call.cluster, call.method, call.path, call.authority) == ("interceptor", "POST", "/v1/mask", "interceptor")
    assert call.timeout_ms == 2000 and call.body == CUSTOMERS  # every chunk, in one call
    assert call.header("x-api-key") == "demo-key"
    assert call.header("authorization") == "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ="  # demo-client:demo-secret
    assert call.header("x-masking-fields") == "email,phone,card_number"
    assert call.header("x-masking-style") == "partial" and call.header("x-original-path") == "/customers"
    assert call.header("content-length") == str(len(CUSTOMERS))
    answer = intercepted(call)
    call.respond(answer.status, headers=answer.headers, body=answer.body)
    assert not stream.response_paused and stream.reset is None
    masked = json.loads(stream.response_body)
    assert masked == services.mask(json.loads(CUSTOMERS), {"email", "phone", "card_number"}, "partial")
    assert masked[0]["email"] == "*" * 17 + ".com" and masked[0]["name"] == "Customer 1"
    stream.complete()


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/problem+json",
                                          "Application/JSON"])
def test_json_media_types(mock_host, content_type):
    host = api_host(mock_host, "native")
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    json_response(stream, b'{"email": "a@b.example"}', content_type, parts=1)
    host.http_calls[0].respond(200, body=b'{"email": "****"}')
    assert stream.response_body == b'{"email": "****"}'


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", "text/json-ish", None])
def test_other_responses_pass_untouched(mock_host, host_mode, content_type):
    host = api_host(mock_host, host_mode)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    body = b"card 4111 1111 1111 0001\n"
    headers = {":status": "200", "content-length": str(len(body))}
    if content_type:
        headers["content-type"] = content_type
    assert stream.send_response_headers(headers) == Action.CONTINUE
    assert stream.send_response_body(body[:10]) == Action.CONTINUE
    assert stream.send_response_body(body[10:], end_of_stream=True) == Action.CONTINUE
    assert stream.response_header("content-length") == str(len(body)) and stream.response_body == body
    assert host.http_calls == []


def test_responses_without_a_body(mock_host):
    host = api_host(mock_host, "native")
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert stream.send_response_headers({":status": "204", "content-type": "application/json"},
                                        end_of_stream=True) == Action.CONTINUE
    stream = host.http_stream()  # a JSON response whose body turns out empty: nothing to ask
    stream.send_request_headers(REQUEST)
    stream.send_response_headers({":status": "200", "content-type": "application/json"})
    assert stream.send_response_body(b"", end_of_stream=True) == Action.CONTINUE
    assert host.http_calls == [] and stream.reset is None


@pytest.mark.parametrize("outcome", ["connection_failure", "timeout", "fail", "401", "500", "422"])
def test_interceptor_failure_never_lets_the_original_body_out(mock_host, host_mode, outcome):
    host = api_host(mock_host, host_mode)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    json_response(stream, CUSTOMERS)
    call = host.http_calls[0]
    if outcome.isdigit():
        call.respond(int(outcome), body=b"no")
    else:
        getattr(call, outcome)()
    assert stream.reset == "wasm_close_stream"  # the client sees the response cut short
    assert stream.response_body == b"" and b"customer1@" not in stream.response_body
    assert host.logs.find("payload_masking: /customers: interceptor", level=LogLevel.WARN)


def test_unknown_interceptor_cluster_fails_closed(mock_host, host_mode):
    host = api_host(mock_host, host_mode, {**ENV, "INTERCEPTOR_CLUSTER": "nowhere"})
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    json_response(stream, CUSTOMERS)
    assert host.http_calls == [] and stream.reset == "wasm_close_stream"
    assert host.logs.find("interceptor unavailable: proxy_http_call failed with BAD_ARGUMENT")


def test_encoded_json_is_refused_before_the_headers_leave(mock_host, host_mode):
    host = api_host(mock_host, host_mode)
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    assert stream.send_response_headers({":status": "200", "content-type": "application/json",
                                         "content-encoding": "gzip"}) == Action.PAUSE
    reply = stream.local_response
    assert reply.status == 502 and reply.details == "masking_encoded"
    assert stream.response_header(":status") == "502" and host.http_calls == []


def test_trailers_after_a_json_body_fail_closed(mock_host):
    host = api_host(mock_host, "native")
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    stream.send_response_headers({":status": "200", "content-type": "application/json"})
    assert stream.send_response_body(CUSTOMERS) == Action.PAUSE
    stream.send_response_trailers({"x-checksum": "1"})
    assert stream.reset == "wasm_close_stream" and stream.response_body == b""


def test_a_bug_fails_closed(mock_host, monkeypatch):
    from pywasm_sdk import http

    host = api_host(mock_host, "native")
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    json_response(stream, CUSTOMERS)

    def broken(self, data):
        raise RuntimeError("a bug in the plugin")

    monkeypatch.setattr(http.Buffer, "replace", broken)
    host.http_calls[0].respond(200, body=b"[]")
    assert stream.reset == "wasm_close_stream" and stream.response_body == b""
    assert host.logs.find("RuntimeError: a bug in the plugin")


def test_settings_from_the_environment(mock_host, host_mode):
    env = {**ENV, "INTERCEPTOR_AUTHORITY": "interceptor.masking.svc", "INTERCEPTOR_PATH": "/mask",
           "INTERCEPTOR_TIMEOUT_MS": "250", "MASKING_FIELDS": " iban , ssn ", "MASKING_STYLE": "full"}
    host = api_host(mock_host, host_mode, env)
    assert host.logs.find("payload_masking: masking iban, ssn (full) of JSON responses through interceptor/mask")
    stream = host.http_stream()
    stream.send_request_headers(REQUEST)
    json_response(stream, b'{"iban": "GB33BUKB20201555555555"}', parts=1)
    call = host.http_calls[0]
    assert (call.path, call.authority, call.timeout_ms) == ("/mask", "interceptor.masking.svc", 250)
    assert call.header("x-masking-fields") == "iban,ssn" and call.header("x-masking-style") == "full"
    answer = intercepted(call)
    call.respond(answer.status, body=answer.body)
    assert json.loads(stream.response_body) == {"iban": "*" * 22}


@pytest.mark.parametrize("change,message", [
    ({"INTERCEPTOR_CLUSTER": None}, "environment variable INTERCEPTOR_CLUSTER is not set"),
    ({"INTERCEPTOR_API_KEY": " "}, "environment variable INTERCEPTOR_API_KEY is not set"),
    ({"INTERCEPTOR_CLIENT_SECRET": None}, "environment variable INTERCEPTOR_CLIENT_SECRET is not set"),
    ({"INTERCEPTOR_TIMEOUT_MS": "2s"}, "INTERCEPTOR_TIMEOUT_MS must be milliseconds from 1 to 60000, got '2s'"),
    ({"INTERCEPTOR_PATH": "mask"}, "INTERCEPTOR_PATH must start with '/'"),
    ({"MASKING_STYLE": "hash"}, "MASKING_STYLE must be partial or full, got 'hash'"),
    ({"MASKING_FIELDS": ", ,"}, "MASKING_FIELDS names no field"),
])
def test_wrong_settings_are_rejected_naming_the_variable(mock_host, change, message):
    env = {k: v for k, v in {**ENV, **change}.items() if v is not None}
    host = mock_host(MASKING, env=env, clusters=["interceptor"])
    assert not host.configured
    assert host.logs.find(f"on_configure: configuration rejected: {message}"), host.logs.text()


def test_wrong_settings_are_rejected_by_the_built_module(mock_host):
    host = mock_host(MASKING, mode="wasm", env={**ENV, "MASKING_STYLE": "hash"})
    assert not host.configured and host.logs.find("MASKING_STYLE must be partial or full")


# -- the shipped manifests ------------------------------------------------------------------------

def test_istio_manifest_is_what_pywasm_manifests_makes(pywasm_build):
    shipped, made = reproduce_manifest(MASKING / "istio" / "wasmplugin.yaml", pywasm_build(MASKING))
    assert shipped == made
    (plugin,) = shipped
    env = {e["name"]: e for e in plugin["spec"]["vmConfig"]["env"]}
    assert env["INTERCEPTOR_CLIENT_SECRET"] == {"name": "INTERCEPTOR_CLIENT_SECRET", "valueFrom": "HOST"}
    assert env["INTERCEPTOR_API_KEY"]["valueFrom"] == "HOST"
    assert "pluginConfig" not in plugin["spec"]  # everything comes from the VM's environment
    assert "allow_on_headers_stop_iteration" not in json.dumps(plugin)


def test_services_script_serves_what_the_readme_says():
    masker_port, api_port = E.free_port(), E.free_port()
    with services_script("payload_masking", "--interceptor-port", str(masker_port),
                         "--api-port", str(api_port)) as line:
        assert f"interceptor on 127.0.0.1:{masker_port}, customers API on 127.0.0.1:{api_port}" in line
        status, headers, body = E.http_request(api_port, "/customers")
        assert status == 200 and headers["content-type"] == "application/json"
        auth = {"x-api-key": "demo-key", "authorization": "Basic ZGVtby1jbGllbnQ6ZGVtby1zZWNyZXQ=",
                "x-masking-fields": "email", "x-masking-style": "full"}
        status, _, masked = E.http_request(masker_port, "/v1/mask", method="POST", headers=auth, body=body)
        assert status == 200 and json.loads(masked)[0]["email"] == "*" * len("customer1@example.com")
        assert E.http_request(masker_port, "/v1/mask", method="POST", body=body)[0] == 401
        assert E.http_request(masker_port, "/v1/mask", method="POST", headers=auth, body=b"<xml/>")[0] == 422
        assert E.http_request(api_port, "/status.txt")[1]["content-type"] == "text/plain"


# -- the real Envoy -------------------------------------------------------------------------------

def get(port: int, path: str) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, complete): a response cut short gives what arrived, complete False."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"accept-encoding": "gzip"})
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            return response.status, headers, response.read(), True
        except http.client.IncompleteRead as cut:
            return response.status, headers, cut.partial, False
    finally:
        conn.close()


@pytest.fixture(scope="module")
def envoy_api(pywasm_build):
    wasm = pywasm_build(MASKING)
    masker = services.interceptor().start()
    api = services.customers_api().start()
    config = local_envoy_config("payload_masking", wasm, listeners={"api": (port := E.free_port())},
                                admin_port=E.free_port(),
                                clusters={"interceptor": masker.address, "backend": api.address})
    env = pytest.MonkeyPatch()
    env.setenv("INTERCEPTOR_CLIENT_SECRET", services.CLIENT_SECRET)  # host_env_keys: from Envoy's env
    run = SimpleNamespace(port=port, masker=masker, api=api)  # a test may replace the interceptor
    try:
        with E.Envoy(config) as run.envoy:
            yield run
    finally:
        env.undo()
        run.masker.stop()
        api.stop()


FIELDS = {"email", "phone", "card_number"}


@pytest.mark.envoy
def test_envoy_masks_a_json_body_and_reframes_it(envoy_api):
    envoy, port, masker, api = envoy_api.envoy, envoy_api.port, envoy_api.masker, envoy_api.api
    status, headers, body, complete = get(port, "/customers")
    assert status == 200 and complete
    assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    assert json.loads(body) == services.mask([services.customer(n) for n in range(1, 4)], FIELDS, "partial")
    assert "accept-encoding" not in api.requests[-1].headers
    call = masker.requests[-1]
    assert call.method == "POST" and call.path == "/v1/mask" and call.headers["host"] == "interceptor.local"
    assert call.headers["x-original-path"] == "/customers"
    envoy.wait_for_log(r"payload_masking: masking email, phone, card_number \(partial\) of JSON responses "
                       r"through interceptor/v1/mask")


@pytest.mark.envoy
def test_envoy_masks_a_body_of_unknown_length_in_many_chunks(envoy_api):
    envoy, port, masker, api = envoy_api.envoy, envoy_api.port, envoy_api.masker, envoy_api.api
    status, headers, body, complete = get(port, "/customers/export")
    assert status == 200 and complete and "content-length" not in headers
    rows = json.loads(body)
    assert len(rows) == 2000
    assert rows[1999] == services.mask(services.customer(2000), FIELDS, "partial")
    sent = masker.requests[-1].body
    assert len(sent) > 150_000 and json.loads(sent)[1999] == services.customer(2000)  # all of it, once
    envoy.wait_for_log(rf"payload_masking: /customers/export: masked {len(sent)} bytes into {len(body)}")


@pytest.mark.envoy
def test_envoy_passes_other_responses_untouched(envoy_api):
    envoy, port, masker, api = envoy_api.envoy, envoy_api.port, envoy_api.masker, envoy_api.api
    asked = len(masker.requests)
    status, headers, body, complete = get(port, "/status.txt")
    assert (status, body, complete) == (200, b"customer card 4111 1111 1111 0001 is fine\n", True)
    assert headers["content-length"] == str(len(body))
    assert len(masker.requests) == asked


@pytest.mark.envoy
@pytest.mark.parametrize("failure", ["error status", "slow", "down"])
def test_envoy_interceptor_failure_never_shows_the_original(envoy_api, failure):
    envoy, port, masker, api = envoy_api.envoy, envoy_api.port, envoy_api.masker, envoy_api.api
    original = masker.respond
    if failure == "error status":
        masker.respond = lambda request: Reply(500, {}, b"masking backend exploded\n")
    elif failure == "slow":
        masker.delay = 3.0  # beyond the configured 1000 ms
    else:
        masker.stop()
    try:
        status, headers, body, complete = get(port, "/customers/export")
    finally:
        masker.respond, masker.delay = original, 0.0
        if failure == "down":
            envoy_api.masker = services.interceptor(masker.port).start()
    assert status == 200 and not complete  # the headers had left; the stream was reset
    assert body == b"" and b"@example.com" not in body
    reason = {"error status": "interceptor answered 500",
              "slow": "interceptor unavailable: HTTP call failed: timeout",
              "down": "interceptor unavailable: HTTP call failed: connection failure"}[failure]
    envoy.wait_for_log(f"payload_masking: /customers/export: {reason}")
    assert get(port, "/customers")[3]  # and the next response is masked again


@pytest.mark.envoy
def test_envoy_rejects_the_plugin_without_its_secret(pywasm_build, monkeypatch):
    monkeypatch.delenv("INTERCEPTOR_CLIENT_SECRET", raising=False)
    config = local_envoy_config("payload_masking", pywasm_build(MASKING), listeners={"api": E.free_port()},
                                admin_port=E.free_port(),
                                clusters={"interceptor": ("127.0.0.1", 1), "backend": ("127.0.0.1", 1)})
    with pytest.raises(E.EnvoyError) as rejected:
        E.validate_config(config)
    assert "environment variable INTERCEPTOR_CLIENT_SECRET is not set" in str(rejected.value)
