"""Mask what a JSON API answers: each JSON response body goes through an interceptor service.

The plugin sits in front of an API (an Istio sidecar, a plain ``WasmPlugin``). For a response
whose ``content-type`` is JSON it holds the body until its end, sends it to the interceptor
(``POST``, with the API key, the client's id and secret and the masking options) and sends the
client the interceptor's answer instead. Other responses pass untouched.

Everything comes from the VM's environment (Envoy ``vm_config.environment_variables``, Istio
``vmConfig.env``; secrets with ``valueFrom: HOST``), read once per VM; see ``SETTINGS``.

How it fits Envoy's defaults (no ``allow_on_headers_stop_iteration``, so a plugin cannot hold the
response headers while it reads the body):

- The response headers go on at once, without ``content-length``: the masked body has another
  length, so the client gets it chunked (HTTP/1.1) or as HTTP/2 data frames.
- The body is held (PAUSE per chunk) until its last chunk, then replaced.
- When the interceptor fails (down, slow, an error status) or the plugin cannot mask (an encoded
  body, trailers after the body), the original body must not reach the client: the stream is
  reset (the client sees the response cut short) or, before the headers left, answered 502.
"""

import base64
import os
import traceback
from collections.abc import Mapping

from pywasm_sdk import (Action, ConfigurationError, HostCallError, HttpCallError, HttpContext,
                        RootContext, log, register)

#: variable -> (default, meaning); default None: required
SETTINGS = {
    "INTERCEPTOR_CLUSTER": (None, "the Envoy cluster of the interceptor service"),
    "INTERCEPTOR_API_KEY": (None, "sent as x-api-key"),
    "INTERCEPTOR_CLIENT_ID": (None, "with the secret, sent as HTTP basic authorization"),
    "INTERCEPTOR_CLIENT_SECRET": (None, "the client's secret"),
    "INTERCEPTOR_AUTHORITY": ("", "the :authority of the calls; default: the cluster name"),
    "INTERCEPTOR_PATH": ("/v1/mask", "the :path of the calls"),
    "INTERCEPTOR_TIMEOUT_MS": ("2000", "how long to wait for the interceptor, in milliseconds"),
    "MASKING_FIELDS": ("email,phone,card_number", "comma-separated JSON keys to mask"),
    "MASKING_STYLE": ("partial", "partial (keep the last 4 characters) or full"),
}


class Settings:
    """The checked settings, from a mapping of environment variables."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        values = {}
        for name, (default, meaning) in SETTINGS.items():
            value = environ.get(name, "").strip()
            if not value:
                if default is None:
                    raise ConfigurationError(f"environment variable {name} is not set ({meaning})")
                value = default
            values[name] = value
        self.cluster = values["INTERCEPTOR_CLUSTER"]
        self.authority = values["INTERCEPTOR_AUTHORITY"] or self.cluster
        self.path = values["INTERCEPTOR_PATH"]
        if not self.path.startswith("/"):
            raise ConfigurationError(f"INTERCEPTOR_PATH must start with '/', got {self.path!r}")
        timeout = values["INTERCEPTOR_TIMEOUT_MS"]
        if not timeout.isdigit() or not 1 <= int(timeout) <= 60000:
            raise ConfigurationError(f"INTERCEPTOR_TIMEOUT_MS must be milliseconds from 1 to 60000, "
                                     f"got {timeout!r}")
        self.timeout = int(timeout) / 1000
        fields = [f.strip() for f in values["MASKING_FIELDS"].split(",") if f.strip()]
        if not fields:
            raise ConfigurationError("MASKING_FIELDS names no field (expected e.g. email,phone)")
        style = values["MASKING_STYLE"]
        if style not in ("partial", "full"):
            raise ConfigurationError(f"MASKING_STYLE must be partial or full, got {style!r}")
        for name in ("INTERCEPTOR_API_KEY", "INTERCEPTOR_CLIENT_ID", "INTERCEPTOR_CLIENT_SECRET"):
            if any(c in values[name] for c in "\r\n\0"):
                raise ConfigurationError(f"{name} contains a line break or NUL")
        basic = f"{values['INTERCEPTOR_CLIENT_ID']}:{values['INTERCEPTOR_CLIENT_SECRET']}".encode()
        self.headers = {
            "content-type": "application/json",
            "x-api-key": values["INTERCEPTOR_API_KEY"],
            "authorization": "Basic " + base64.b64encode(basic).decode(),
            "x-masking-fields": ",".join(fields),
            "x-masking-style": style,
        }
        self.fields, self.style = fields, style


def is_json(content_type: str | None) -> bool:
    """application/json, or any */*+json media type (application/problem+json...)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class MaskResponse(HttpContext):
    root: "MaskingRoot"
    masking = False  # this response's body is held for the interceptor
    path = ""

    def on_request_headers(self, num_headers: int, end_of_stream: bool) -> None:
        self.path = self.request_headers.get(":path") or ""
        # An encoded (gzip, br...) body cannot be masked: ask the API for plain JSON.
        self.request_headers.remove("accept-encoding")

    def on_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        if end_of_stream or not is_json(self.response_headers.get("content-type")):
            return Action.CONTINUE
        encoding = (self.response_headers.get("content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            log.warning("payload_masking: %s: a JSON body in %s encoding cannot be masked: 502",
                        self.path, encoding)
            self.send_local_response(502, "the response could not be masked\n", details="masking_encoded")
            return Action.PAUSE
        self.masking = True
        # The masked body has another length; these headers leave before the body is masked.
        self.response_headers.remove("content-length")
        return Action.CONTINUE

    async def on_response_body(self, body_size: int, end_of_stream: bool) -> Action:
        if not self.masking:
            return Action.CONTINUE
        if not end_of_stream:
            return Action.PAUSE  # Envoy keeps every chunk until the last one
        try:
            return await self.mask()
        except Exception:
            log.error("payload_masking: %s: masking raised:\n%s", self.path, traceback.format_exc())
            return self.withhold()

    async def mask(self) -> Action:
        settings = self.root.settings
        body = self.response_body.read()
        if not body:
            return Action.CONTINUE
        try:
            answer = await self.http_call(settings.cluster, method="POST", path=settings.path,
                                          authority=settings.authority, timeout=settings.timeout,
                                          headers={**settings.headers, "x-original-path": self.path},
                                          body=body)
        except (HttpCallError, HostCallError) as exc:  # down, slow, reset, or no such cluster
            log.warning("payload_masking: %s: interceptor unavailable: %s", self.path, exc)
            return self.withhold()
        if answer.status != 200:
            log.warning("payload_masking: %s: interceptor answered %s", self.path, answer.status)
            return self.withhold()
        self.response_body.replace(answer.body)
        log.debug("payload_masking: %s: masked %d bytes into %d", self.path, len(body), len(answer.body))
        return Action.CONTINUE

    def on_response_trailers(self, num_trailers: int) -> Action:
        if self.masking:  # the body ended without end_of_stream: it was never masked
            log.warning("payload_masking: %s: trailers after a JSON body: not masked", self.path)
            return self.withhold()
        return Action.CONTINUE

    def withhold(self) -> Action:
        """Never let the unmasked body out: the headers already left, so reset the stream."""
        self.reset()
        return Action.PAUSE


class MaskingRoot(RootContext):
    http_context = MaskResponse
    settings: Settings

    def on_configure(self, plugin_config: bytes) -> bool:
        self.settings = Settings(os.environ)
        log.info("payload_masking: masking %s (%s) of JSON responses through %s%s",
                 ", ".join(self.settings.fields), self.settings.style, self.settings.cluster,
                 self.settings.path)
        return True


register(MaskingRoot)
