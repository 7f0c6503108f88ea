"""examples/authz: natively and as the built .wasm in the mock host, then in the real Envoy with
the example's own authorization service and backend on 127.0.0.1, through its envoy.yaml."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from pywasm_sdk.testing import Action, LogLevel
from pywasm_sdk.tooling import envoy as E

from .conftest import EXAMPLES
from .test_examples_helpers import (example_services, local_envoy_config, reproduce_manifest,
                                    services_script)

AUTHZ = EXAMPLES / "authz"
CONFIG = {"cluster": "authz", "authority": "authz.local", "timeout_ms": 500}
REQUEST = {":method": "GET", ":path": "/orders/7?x=1", ":authority": "shop.example", ":scheme": "http"}


def gateway(mock_host, mode, config=None, **options):
    host = mock_host(AUTHZ, mode=mode, plugin_config=json.dumps(config or CONFIG),
                     clusters=["authz"], **options)
    assert host.configured, host.logs.text()
    return host


def ask(host, headers):
    """A request through the plugin; returns the stream and the check it made (or None)."""
    stream = host.http_stream()
    calls = len(host.http_calls)
    action = stream.send_request_headers({**REQUEST, **headers})
    call = host.http_calls[calls] if len(host.http_calls) > calls else None
    assert action == (Action.PAUSE if call is not None or stream.local_response else Action.CONTINUE)
    return stream, call


# -- mock host: natively and as .wasm -------------------------------------------------------------

def test_allowed_request_carries_the_identity_the_service_returned(mock_host, host_mode):
    host = gateway(mock_host, host_mode)
    stream, call = ask(host, {"authorization": "Bearer alice-token", "x-auth-identity": "admin"})
    assert (call.cluster, call.method, call.path, call.authority) == ("authz", "GET", "/check", "authz.local")
    assert call.timeout_ms == 500 and call.body == b""
    assert call.header("authorization") == "Bearer alice-token"
    assert call.header("x-original-path") == "/orders/7?x=1" and call.header("x-original-method") == "GET"
    assert stream.request_paused
    call.respond(200, headers={"x-auth-identity": "alice"})
    assert not stream.request_paused and stream.local_response is None
    # the forged identity is gone: exactly one value, the service's
    assert [v for k, v in stream.request_headers if k == "x-auth-identity"] == ["alice"]
    assert stream.send_response_headers({":status": "200"}) == Action.CONTINUE
    stream.complete()


def test_allowed_without_identity_drops_the_clients(mock_host, host_mode):
    host = gateway(mock_host, host_mode)
    stream, call = ask(host, {"authorization": "Bearer x", "x-auth-identity": "admin"})
    call.respond(200)
    assert not stream.request_paused and stream.request_header("x-auth-identity") is None


@pytest.mark.parametrize("status", [401, 403, 404])
def test_denial_answers_403_with_the_services_body(mock_host, host_mode, status):
    host = gateway(mock_host, host_mode)
    stream, call = ask(host, {"authorization": "Bearer mallory-token"})
    call.respond(status, headers={"content-type": "text/plain"}, body="mallory is suspended\n")
    reply = stream.local_response
    assert reply.status == 403 and reply.body == b"mallory is suspended\n"
    assert ("x-denied-by", "authz") in reply.headers
    assert stream.request_paused  # the request never reaches the backend
    assert host.logs.find("authz: GET /orders/7?x=1: denied")


def test_denial_without_a_body_says_access_denied(mock_host):
    host = gateway(mock_host, "native")
    stream, call = ask(host, {"authorization": "Bearer nobody"})
    call.respond(403)
    assert stream.local_response.body == b"access denied\n"


def test_no_credentials_is_401_without_a_call(mock_host, host_mode):
    host = gateway(mock_host, host_mode)
    stream, call = ask(host, {"authorization": ""})
    assert call is None and host.http_calls == []
    reply = stream.local_response
    assert reply.status == 401 and reply.body == b"missing credentials\n"
    assert ("x-denied-by", "authz") in reply.headers and ("www-authenticate", "Bearer") in reply.headers


@pytest.mark.parametrize("outcome", ["connection_failure", "timeout", "fail", "500", "503"])
def test_unavailable_service_fails_closed(mock_host, host_mode, outcome):
    host = gateway(mock_host, host_mode)
    stream, call = ask(host, {"authorization": "Bearer alice-token"})
    if outcome.isdigit():
        call.respond(int(outcome), body="oops")
    else:
        getattr(call, outcome)()
    reply = stream.local_response
    assert reply.status == 503 and reply.body == b"authorization service unavailable\n"
    assert ("x-denied-by", "authz") in reply.headers and reply.details == "authz_503"
    assert host.logs.find("authorization service", level=LogLevel.WARN)


def test_a_cluster_envoy_does_not_have_fails_closed(mock_host, host_mode):
    host = gateway(mock_host, host_mode, {**CONFIG, "cluster": "no-such-cluster"})
    stream, call = ask(host, {"authorization": "Bearer alice-token"})
    assert call is None and stream.local_response.status == 503
    assert host.logs.find("authorization service unavailable: proxy_http_call failed with BAD_ARGUMENT")


def test_configured_names_and_timeout(mock_host, host_mode):
    config = {"cluster": "authz", "path": "/v1/verify", "timeout_ms": 1200, "credentials_header": "x-api-key",
              "identity_header": "x-user", "denied_by_header": "x-answered-by", "denied_by": "gw-auth",
              "challenge": "ApiKey"}
    host = gateway(mock_host, host_mode, config)
    stream, call = ask(host, {"x-api-key": "k1", "x-user": "root"})
    assert call.path == "/v1/verify" and call.timeout_ms == 1200 and call.authority == "authz"
    assert call.header("x-api-key") == "k1" and call.header("authorization") is None
    call.respond(200, headers={"x-user": "svc-7"})
    assert stream.request_header("x-user") == "svc-7"
    stream, _ = ask(host, {})
    assert ("x-answered-by", "gw-auth") in stream.local_response.headers
    assert ("www-authenticate", "ApiKey") in stream.local_response.headers


@pytest.mark.parametrize("config,message", [
    ("", "field 'cluster' is required"),
    ("{}", "field 'cluster' is required"),
    ("not json", "the configuration is not JSON"),
    ('["authz"]', "the configuration must be a JSON object"),
    ('{"cluster": "authz", "timeout": 5}', "unknown field 'timeout'"),
    ('{"cluster": ""}', "field 'cluster': expected a non-empty string"),
    ('{"cluster": "authz", "timeout_ms": 0}', "field 'timeout_ms': expected milliseconds from 1 to 60000, got 0"),
    ('{"cluster": "authz", "timeout_ms": "500"}', "field 'timeout_ms'"),
    ('{"cluster": "authz", "timeout_ms": true}', "field 'timeout_ms'"),
    ('{"cluster": "authz", "path": "check"}', "field 'path': must start with '/'"),
    ('{"cluster": "authz", "identity_header": "X User"}', "field 'identity_header': 'X User' is not a lower-case header name"),
    ('{"cluster": "authz", "denied_by": "a\\nb"}', "field 'denied_by': contains a line break"),
])
def test_wrong_configuration_is_rejected_naming_the_field(mock_host, config, message):
    host = mock_host(AUTHZ, plugin_config=config, clusters=["authz"])
    assert not host.configured
    assert host.logs.find(f"on_configure: configuration rejected: {message}"), host.logs.text()


def test_wrong_configuration_is_rejected_by_the_built_module(mock_host):
    host = mock_host(AUTHZ, mode="wasm", plugin_config='{"cluster": "authz", "timeout_ms": -1}')
    assert not host.configured
    assert host.logs.find("configuration rejected: field 'timeout_ms'")


def test_a_bug_fails_closed(mock_host, monkeypatch):
    """An exception inside the check is logged with its traceback and answers 503: the request
    does not go through (the SDK's own boundary would let it continue)."""
    from pywasm_sdk import http

    host = gateway(mock_host, "native")
    stream, call = ask(host, {"authorization": "Bearer alice-token"})

    def broken(self, name):
        raise RuntimeError("a bug in the plugin")

    monkeypatch.setattr(http.HeaderMap, "remove", broken)  # the plugin's next step raises
    call.respond(200, headers={"x-auth-identity": "alice"})
    assert stream.local_response.status == 503 and stream.request_paused
    assert host.logs.find("authz: the check raised, answering 503:", level=LogLevel.ERROR)
    assert host.logs.find("RuntimeError: a bug in the plugin")


# -- the shipped manifests and configuration -----------------------------------------------------

def test_istio_manifest_is_what_pywasm_manifests_makes(pywasm_build):
    shipped, made = reproduce_manifest(AUTHZ / "istio" / "wasmplugin.yaml", pywasm_build(AUTHZ))
    assert shipped == made
    (plugin,) = shipped
    assert plugin["spec"]["phase"] == "AUTHN" and plugin["spec"]["failStrategy"] == "FAIL_CLOSE"
    assert plugin["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert "match" not in plugin["spec"]  # a gateway: no sidecar traffic direction


def test_services_script_serves_what_the_readme_says():
    authz_port, backend_port = E.free_port(), E.free_port()
    with services_script("authz", "--authz-port", str(authz_port), "--backend-port", str(backend_port)) as line:
        assert f"authorization service on 127.0.0.1:{authz_port}" in line
        allowed = E.http_request(authz_port, "/check", headers={"authorization": "Bearer alice-token"})
        assert allowed[0] == 200 and allowed[1]["x-auth-identity"] == "alice"
        assert E.http_request(authz_port, "/check", headers={"authorization": "Bearer mallory-token"})[:3:2] == \
            (403, b"mallory is suspended\n")
        assert E.http_request(authz_port, "/check")[0] == 401
        assert json.loads(E.http_request(backend_port, "/echo")[2])["path"] == "/echo"


# -- the real Envoy -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def envoy_gateway(pywasm_build):
    services = example_services("authz")
    wasm = pywasm_build(AUTHZ)
    authz = services.authorization_service().start()
    backend = E.EchoUpstream().start()
    port = E.free_port()
    config = local_envoy_config("authz", wasm, listeners={"gateway": port}, admin_port=E.free_port(),
                                clusters={"authz": authz.address, "backend": backend.address})
    run = SimpleNamespace(port=port, authz=authz, backend=backend)  # a test may replace the service
    try:
        with E.Envoy(config) as run.envoy:
            yield run
    finally:
        run.authz.stop()
        backend.stop()



@pytest.mark.envoy
def test_envoy_allows_with_the_services_identity(envoy_gateway):
    envoy, port, authz, backend = envoy_gateway.envoy, envoy_gateway.port, envoy_gateway.authz, \
        envoy_gateway.backend
    status, _, body = E.http_request(port, "/orders/7", headers={
        "authorization": "Bearer alice-token", "x-auth-identity": "admin"})
    assert status == 200
    assert json.loads(body)["headers"]["x-auth-identity"] == "alice"  # replaced, not appended
    check = authz.requests[-1]
    assert check.path == "/check" and check.headers["authorization"] == "Bearer alice-token"
    assert check.headers["host"] == "authz.local" and check.headers["x-original-path"] == "/orders/7"


@pytest.mark.envoy
def test_envoy_denial_is_403_from_the_plugin(envoy_gateway):
    envoy, port, authz, backend = envoy_gateway.envoy, envoy_gateway.port, envoy_gateway.authz, \
        envoy_gateway.backend
    seen = len(backend.requests)
    status, headers, body = E.http_request(port, "/orders/7", headers={"authorization": "Bearer mallory-token"})
    assert (status, body, headers["x-denied-by"]) == (403, b"mallory is suspended\n", "authz")
    status, headers, body = E.http_request(port, "/", headers={"authorization": "Bearer forged"})
    assert (status, body) == (403, b"unknown token\n")
    assert len(backend.requests) == seen  # neither reached the backend
    envoy.wait_for_log(r"wasm log authz authz: authz: GET /orders/7: denied \(403\)")


@pytest.mark.envoy
def test_envoy_no_credentials_is_401_without_asking(envoy_gateway):
    envoy, port, authz, backend = envoy_gateway.envoy, envoy_gateway.port, envoy_gateway.authz, \
        envoy_gateway.backend
    asked = len(authz.requests)
    status, headers, body = E.http_request(port, "/")
    assert (status, body) == (401, b"missing credentials\n")
    assert headers["www-authenticate"] == "Bearer" and headers["x-denied-by"] == "authz"
    assert len(authz.requests) == asked


@pytest.mark.envoy
def test_envoy_slow_service_fails_closed_at_the_timeout(envoy_gateway):
    envoy, port, authz, backend = envoy_gateway.envoy, envoy_gateway.port, envoy_gateway.authz, \
        envoy_gateway.backend
    seen = len(backend.requests)
    authz.delay = 5.0  # far beyond the configured 500 ms
    try:
        started = time.monotonic()
        status, headers, body = E.http_request(port, "/", headers={"authorization": "Bearer alice-token"})
        waited = time.monotonic() - started
    finally:
        authz.delay = 0.0
    assert (status, body, headers["x-denied-by"]) == (503, b"authorization service unavailable\n", "authz")
    assert waited < 4.0, "the plugin waited for the service instead of its own timeout"
    assert len(backend.requests) == seen
    envoy.wait_for_log(r"authorization service unavailable: HTTP call failed: timeout")


@pytest.mark.envoy
def test_envoy_service_down_fails_closed(envoy_gateway):
    envoy, port, authz, backend = envoy_gateway.envoy, envoy_gateway.port, envoy_gateway.authz, \
        envoy_gateway.backend
    authz.stop()  # nothing listens on its port any more
    try:
        status, _, body = E.http_request(port, "/", headers={"authorization": "Bearer alice-token"})
    finally:
        envoy_gateway.authz = example_services("authz").authorization_service(authz.port).start()
    assert (status, body) == (503, b"authorization service unavailable\n")
    envoy.wait_for_log(r"authorization service unavailable: HTTP call failed: connection failure")
    # and it recovers once the service is back
    assert E.http_request(port, "/", headers={"authorization": "Bearer bob-token"})[0] == 200


@pytest.mark.envoy
def test_envoy_rejects_a_wrong_configuration_naming_the_field(pywasm_build):
    config = local_envoy_config("authz", pywasm_build(AUTHZ), listeners={"gateway": E.free_port()},
                                admin_port=E.free_port(),
                                clusters={"authz": ("127.0.0.1", 1), "backend": ("127.0.0.1", 1)})
    wasm_filter = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["http_filters"][0]
    wasm_filter["typed_config"]["config"]["configuration"]["value"] = '{"cluster": "authz", "timeout_ms": "fast"}'
    with pytest.raises(E.EnvoyError) as rejected:
        E.validate_config(config)
    assert "field 'timeout_ms': expected milliseconds from 1 to 60000, got \"fast\"" in str(rejected.value)
