"""The services the payload_masking example talks to, for a local run (and for its tests).

    python examples/payload_masking/services.py   # interceptor on 127.0.0.1:9002,
                                                  # customers API on 127.0.0.1:9003; Ctrl-C stops them

The interceptor accepts ``POST`` with ``x-api-key: demo-key`` and HTTP basic authorization
``demo-client:demo-secret`` (else 401), masks the JSON keys named in ``x-masking-fields``
wherever they occur (``x-masking-style``: ``partial`` keeps the last 4 characters, ``full``
keeps none) and answers the masked JSON; a body that is not JSON gets 422.

The customers API is a JSON API with personal data:

- ``GET /customers``: a few customers, with a content-length;
- ``GET /customers/export``: 2,000 customers (about 200 kB), sent in many pieces with chunked
  transfer encoding: a body of unknown length, larger than one chunk;
- ``GET /status.txt``: plain text, which the plugin passes untouched.
"""

from __future__ import annotations

import argparse
import base64
import json

from pywasm_sdk.tooling.envoy import HttpService, Reply, Request, wait_for_interrupt

INTERCEPTOR_PORT, API_PORT = 9002, 9003
API_KEY, CLIENT_ID, CLIENT_SECRET = "demo-key", "demo-client", "demo-secret"


def mask_value(value: object, style: str) -> object:
    """A masked copy of a JSON value (strings and numbers; structures are masked inside)."""
    if isinstance(value, (dict, list)):
        return value
    text = str(value)
    keep = 4 if style == "partial" and len(text) > 4 else 0
    return "*" * (len(text) - keep) + text[len(text) - keep:]


def mask(document: object, fields: set[str], style: str) -> object:
    """``document`` with the values of ``fields`` masked, at any depth."""
    if isinstance(document, dict):
        return {k: mask_value(v, style) if k in fields and not isinstance(v, (dict, list))
                else mask(v, fields, style) for k, v in document.items()}
    if isinstance(document, list):
        return [mask(item, fields, style) for item in document]
    return document


def intercept(request: Request) -> Reply:
    """The interceptor: check the caller, mask the JSON it sent."""
    expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    if request.headers.get("x-api-key") != API_KEY or request.headers.get("authorization") != expected:
        return Reply(401, {"content-type": "text/plain"}, b"bad api key or client credentials\n")
    try:
        document = json.loads(request.body)
    except ValueError:
        return Reply(422, {"content-type": "text/plain"}, b"the body is not JSON\n")
    fields = {f for f in request.headers.get("x-masking-fields", "").split(",") if f}
    masked = mask(document, fields, request.headers.get("x-masking-style", "partial"))
    return Reply(200, {"content-type": "application/json"}, json.dumps(masked).encode())


def customer(n: int) -> dict:
    return {"id": n, "name": f"Customer {n}", "email": f"customer{n}@example.com",
            "phone": f"+44 20 7946 {n:04d}", "card_number": f"4111 1111 1111 {n:04d}"}


def api(request: Request) -> Reply:
    """The customers API."""
    json_type = {"content-type": "application/json"}
    if request.path == "/customers":
        return Reply(200, json_type, json.dumps([customer(n) for n in range(1, 4)]).encode())
    if request.path == "/customers/export":
        rows = [json.dumps(customer(n)).encode() for n in range(1, 2001)]
        parts = [b"[" + b",".join(rows[i:i + 100]) for i in range(0, len(rows), 100)]
        parts = [parts[0]] + [b"," + p[1:] for p in parts[1:]] + [b"]"]
        return Reply(200, json_type, parts)  # chunked: no content-length
    if request.path == "/status.txt":
        return Reply(200, {"content-type": "text/plain"}, b"customer card 4111 1111 1111 0001 is fine\n")
    return Reply(404, json_type, json.dumps({"error": "not found", "path": request.path}).encode())


def interceptor(port: int = 0) -> HttpService:
    return HttpService(intercept, port=port)


def customers_api(port: int = 0) -> HttpService:
    return HttpService(api, port=port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interceptor-port", type=int, default=INTERCEPTOR_PORT)
    parser.add_argument("--api-port", type=int, default=API_PORT)
    args = parser.parse_args()
    with interceptor(args.interceptor_port) as masker, customers_api(args.api_port) as customers:
        print(f"interceptor on 127.0.0.1:{masker.port}, customers API on 127.0.0.1:{customers.port}; "
              "Ctrl-C stops them", flush=True)
        wait_for_interrupt()


if __name__ == "__main__":
    main()
