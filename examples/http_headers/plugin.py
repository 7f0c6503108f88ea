"""Add the response headers that the plugin configuration names.

The configuration is either lines of ``name=value``::

    x-frame-options=DENY
    x-served-by=python

or a JSON object of strings (what Istio's WasmPlugin ``pluginConfig`` delivers)::

    {"x-frame-options": "DENY", "x-served-by": "python"}

A configuration that is neither (a line without ``=``, JSON that is not an object of strings,
a header name that is not a valid token) is rejected: on_configure logs what is wrong and
returns false, so Envoy refuses the configuration instead of serving without the headers.
"""

import json
import re

from pywasm_sdk import ConfigurationError, HttpContext, RootContext, log, register

# RFC 9110 token characters; pseudo-headers (":status") cannot be added by a filter.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_config(raw: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of a configuration, or ConfigurationError saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"the configuration is not UTF-8 text (byte {exc.start})") from None
    if text.lstrip()[:1] in ("{", "[", '"'):  # JSON (a line of name=value never starts so)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise ConfigurationError("the JSON is nested too deeply") from None
        if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
            raise ConfigurationError('JSON configuration must be an object of strings, e.g. {"x-name": "value"}')
        pairs = list(obj.items())
    else:
        pairs = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise ConfigurationError(f"line {number}: {line.strip()!r} has no '=' (expected name=value)")
            pairs.append((name.strip(), value.strip()))
    for name, value in pairs:
        if not _TOKEN.fullmatch(name):
            raise ConfigurationError(f"{name!r} is not a valid header name")
        if any(c in value for c in "\r\n\0"):
            raise ConfigurationError(f"the value of {name!r} contains a line break or NUL")
    return [(name.lower(), value) for name, value in pairs]


class AddHeaders(HttpContext):
    root: "HeadersPlugin"

    def on_response_headers(self, num_headers: int, end_of_stream: bool) -> None:
        for name, value in self.root.headers:
            self.response_headers.add(name, value)


class HeadersPlugin(RootContext):
    http_context = AddHeaders
    headers: list[tuple[str, str]] = []

    def on_configure(self, plugin_config: bytes) -> bool:
        self.headers = parse_config(plugin_config)
        log.info("http_headers: adding %d response header(s): %s",
                 len(self.headers), ", ".join(name for name, _ in self.headers) or "(none)")
        return True


register(HeadersPlugin)
