"""An authentication filter for an ingress gateway: ask an authorization service about each request.

On the request headers the plugin sends the request's credentials to an authorization service
(an Envoy cluster) and waits for its answer (``await``), the request paused meanwhile:

- 200: the request goes on, carrying the identity the service returned in the identity header
  (any identity header the client sent is removed first, so it cannot be forged);
- 5xx, or no answer within ``timeout_ms`` (the service is down, slow or resets): 503, fail closed;
- any other status: 403, with the service's body (or ``access denied``);
- a request without credentials: 401 at once, without asking.

Every answer the plugin gives itself carries ``x-denied-by: authz`` (both configurable), so a
client and an operator can tell it from the backend's own 401/403/503.

The configuration is a JSON object (what Istio's ``WasmPlugin.pluginConfig`` delivers)::

    {"cluster": "authz", "timeout_ms": 500}

A configuration with a wrong field is rejected with a message naming the field; see
``parse_config`` for every field and its default.
"""

import json
import re
import traceback

from pywasm_sdk import (Action, ConfigurationError, HostCallError, HttpCallError, HttpContext,
                        RootContext, log, register)

# A header name as Envoy stores it: an RFC 9110 token, lower-case.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")

#: field -> (default, what it must be). ``None``: required.
FIELDS = {
    "cluster": (None, "the Envoy cluster of the authorization service"),
    "authority": ("", "the :authority (Host) of the check request; default: the cluster name"),
    "path": ("/check", "the :path of the check request"),
    "timeout_ms": (500, "how long to wait for the service, in milliseconds (1 to 60000)"),
    "credentials_header": ("authorization", "the request header with the credentials"),
    "identity_header": ("x-auth-identity", "the header the service answers the identity in, "
                                           "set on the request for the backend"),
    "denied_by_header": ("x-denied-by", "the header on the plugin's own 401/403/503"),
    "denied_by": ("authz", "its value"),
    "challenge": ("Bearer", "the www-authenticate value of a 401"),
}


class Config:
    """A checked configuration: every field of FIELDS as an attribute."""

    cluster: str
    authority: str
    path: str
    timeout_ms: int
    credentials_header: str
    identity_header: str
    denied_by_header: str
    denied_by: str
    challenge: str

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)


def _text(name: str, value: object, *, header: bool = False) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"field {name!r}: expected a non-empty string, got {json.dumps(value)}")
    if header and not _HEADER_NAME.fullmatch(value):
        raise ConfigurationError(f"field {name!r}: {value!r} is not a lower-case header name")
    if any(c in value for c in "\r\n\0"):
        raise ConfigurationError(f"field {name!r}: contains a line break or NUL")
    return value


def parse_config(raw: bytes) -> Config:
    """The configuration, checked; ConfigurationError names the field that is wrong."""
    try:
        given = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"the configuration is not JSON: {exc}") from None
    except RecursionError:
        raise ConfigurationError("the configuration's JSON is nested too deeply") from None
    if not isinstance(given, dict):
        raise ConfigurationError('the configuration must be a JSON object, e.g. {"cluster": "authz"}')
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ConfigurationError(f"unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    values = {}
    for name, (default, meaning) in FIELDS.items():
        value = given.get(name, default)
        if value is None:
            raise ConfigurationError(f"field {name!r} is required: {meaning}")
        if name == "timeout_ms":
            if type(value) is not int or not 1 <= value <= 60000:  # bool is an int: excluded
                raise ConfigurationError(f"field 'timeout_ms': expected milliseconds from 1 to 60000, "
                                         f"got {json.dumps(value)}")
        elif value != "" or name != "authority":  # an empty authority means the default
            value = _text(name, value, header=name.endswith("_header"))
        if name == "path" and not str(value).startswith("/"):
            raise ConfigurationError(f"field 'path': must start with '/', got {value!r}")
        values[name] = value
    values["authority"] = values["authority"] or values["cluster"]
    return Config(values)


class Authenticate(HttpContext):
    root: "AuthzRoot"

    async def on_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        try:
            return await self.check()
        except Exception:
            # A bug must not let a request through: fail closed, like an unreachable service.
            log.error("authz: the check raised, answering 503:\n%s", traceback.format_exc())
            return self.answer(503, "authorization failed\n")

    async def check(self) -> Action:
        config = self.root.config
        credentials = self.request_headers.get(config.credentials_header)
        if not credentials:
            return self.answer(401, "missing credentials\n", (("www-authenticate", config.challenge),))
        method = self.request_headers.get(":method") or ""
        path = self.request_headers.get(":path") or ""
        try:
            verdict = await self.http_call(
                config.cluster, path=config.path, authority=config.authority,
                timeout=config.timeout_ms / 1000,
                headers={config.credentials_header: credentials,
                         "x-original-method": method, "x-original-path": path})
        except (HttpCallError, HostCallError) as exc:  # down, slow, reset, or no such cluster
            log.warning("authz: %s %s: authorization service unavailable: %s", method, path, exc)
            return self.answer(503, "authorization service unavailable\n")
        status = verdict.status
        if status is not None and status >= 500:
            log.warning("authz: %s %s: authorization service answered %d", method, path, status)
            return self.answer(503, "authorization service unavailable\n")
        if status != 200:
            log.info("authz: %s %s: denied (%s)", method, path, status)
            return self.answer(403, verdict.body or b"access denied\n")
        identity = verdict.header(config.identity_header)
        self.request_headers.remove(config.identity_header)  # never the client's own
        if identity:
            self.request_headers.add(config.identity_header, identity)
        log.debug("authz: %s %s: allowed as %s", method, path, identity or "(no identity)")
        return Action.CONTINUE

    def answer(self, status: int, body: str | bytes, headers: tuple[tuple[str, str], ...] = ()) -> Action:
        """Answer the request from the plugin (with the denied-by header) and stop it."""
        config = self.root.config
        self.send_local_response(status, body, [(config.denied_by_header, config.denied_by), *headers],
                                 details=f"authz_{status}")
        return Action.PAUSE


class AuthzRoot(RootContext):
    http_context = Authenticate
    config: Config

    def on_configure(self, plugin_config: bytes) -> bool:
        self.config = parse_config(plugin_config)
        log.info("authz: checking %s at %s%s, timeout %d ms", self.config.credentials_header,
                 self.config.cluster, self.config.path, self.config.timeout_ms)
        return True


register(AuthzRoot)
