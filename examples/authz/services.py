"""The services the authz example talks to, for a local run (and for its tests).

    python examples/authz/services.py        # authorization service on 127.0.0.1:9001,
                                             # echo backend on 127.0.0.1:9000; Ctrl-C stops them

The authorization service knows three bearer tokens: ``alice-token`` and ``bob-token`` are
allowed (200, ``x-auth-identity: alice`` / ``bob``), ``mallory-token`` is refused (403, with a
body saying why); any other credentials get 401. ``--delay SECONDS`` makes it slow, to see the
plugin fail closed at its timeout. The backend answers every request with a JSON echo of it, so
the identity header the plugin added is visible in the response.
"""

from __future__ import annotations

import argparse

from pywasm_sdk.tooling.envoy import EchoUpstream, HttpService, Reply, Request, wait_for_interrupt

AUTHZ_PORT, BACKEND_PORT = 9001, 9000
TOKENS = {"alice-token": "alice", "bob-token": "bob"}
REFUSED = {"mallory-token": "mallory is suspended\n"}


def check(request: Request) -> Reply:
    """The authorization decision for the credentials of a check request."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return Reply(401, {"content-type": "text/plain"}, b"bearer token expected\n")
    if token in TOKENS:
        return Reply(200, {"x-auth-identity": TOKENS[token]})
    if token in REFUSED:
        return Reply(403, {"content-type": "text/plain"}, REFUSED[token].encode())
    return Reply(401, {"content-type": "text/plain"}, b"unknown token\n")


def authorization_service(port: int = 0, delay: float = 0.0) -> HttpService:
    """The authorization service (not started)."""
    return HttpService(check, port=port, delay=delay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authz-port", type=int, default=AUTHZ_PORT)
    parser.add_argument("--backend-port", type=int, default=BACKEND_PORT)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each authorization answer")
    args = parser.parse_args()
    with authorization_service(args.authz_port, args.delay) as authz, EchoUpstream(port=args.backend_port):
        print(f"authorization service on 127.0.0.1:{authz.port} (tokens: {', '.join([*TOKENS, *REFUSED])}), "
              f"echo backend on 127.0.0.1:{args.backend_port}; Ctrl-C stops them", flush=True)
        wait_for_interrupt()


if __name__ == "__main__":
    main()
