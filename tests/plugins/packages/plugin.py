"""Popular pure-Python packages inside the proxy (the table in docs/packages.md), in one plugin.

Each request path exercises one package and answers with a local response whose body is JSON:
``/jwt`` verifies the request's HS256 bearer token (the key is the plugin configuration) and
signs a new one; ``/cachetools``, ``/attrs``, ``/dateutil``, ``/idna``, ``/msgpack``, ``/yaml`` and
``/protobuf`` do a little real work each; ``/limits`` uses what cannot work inside the proxy and
reports the errors; ``/proxy-python`` reports what the interpreter had when the plugin was imported
(inside the proxy: during the build).
"""

import asyncio
import datetime
import importlib.util
import json
import select
import socket
import ssl
import subprocess
import sys
import threading

import attrs
import cachetools
import idna
import jwt
import msgpack
import yaml
from dateutil import parser as date_parser
from dateutil import relativedelta, rrule
from google.protobuf import struct_pb2
from google.protobuf.internal import api_implementation

from pywasm_sdk import Action, HttpContext, NotAvailableInProxy, RootContext, register
from pywasm_sdk.tooling.proxy_python import BROKEN_STDLIB  # the survey this plugin checks


def _imports(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def _missing(name):
    try:
        return importlib.util.find_spec(name) is None
    except ImportError:  # the build's native check refuses what the proxy lacks
        return True


#: what the interpreter had at import time; inside the proxy that is the build's interpreter
IMPORT_TIME = {
    "version": list(sys.version_info[:2]),
    "missing_stdlib": sorted(n for n in sys.stdlib_module_names if _missing(n)),
    "broken_that_imported": sorted(n for n in BROKEN_STDLIB if _imports(n)),
}


@attrs.define
class Route:
    cluster: str
    weight: int = attrs.field(validator=attrs.validators.ge(0))
    tags: list[str] = attrs.Factory(list)


def use_jwt(ctx):
    key = ctx.root.key
    token = (ctx.request_headers.get("authorization") or "").removeprefix("Bearer ")
    try:
        claims = jwt.decode(token, key, algorithms=["HS256"])
    except jwt.InvalidTokenError as exc:
        return 401, {"error": type(exc).__name__}
    signed = jwt.encode({"sub": claims["sub"], "role": "checked"}, key, algorithm="HS256")
    return 200, {"claims": claims, "signed": signed}


def use_cachetools(ctx):
    lru = cachetools.LRUCache(maxsize=2)
    lru["a"], lru["b"] = 1, 2
    lru["a"]  # a is now the most recently used: c evicts b
    lru["c"] = 3
    calls = []

    @cachetools.cached(cachetools.TTLCache(maxsize=8, ttl=60))
    def square(n):
        calls.append(n)
        return n * n

    return 200, {"lru": sorted(lru), "squares": [square(3), square(3), square(4)], "calls": calls}


def use_attrs(ctx):
    route = Route("backend", 3, ["blue"])
    moved = attrs.evolve(route, cluster="canary")
    try:
        Route("x", -1)
    except ValueError as exc:
        refused = str(exc).split(" ")[0]
    return 200, {"route": attrs.asdict(moved), "equal": route == Route("backend", 3, ["blue"]),
                 "refused": refused}


def use_dateutil(ctx):
    when = date_parser.isoparse("2024-01-31T12:30:00+01:00")
    later = when + relativedelta.relativedelta(months=+1)
    rule = rrule.rrule(rrule.WEEKLY, count=3, dtstart=datetime.datetime(2024, 1, 1))
    parsed = date_parser.parse("Thu, 29 Feb 2024 08:00:00 GMT")
    return 200, {"later": later.isoformat(), "weekly": [d.date().isoformat() for d in rule],
                 "parsed": parsed.isoformat()}


def use_idna(ctx):
    encoded = idna.encode("bücher.example")
    try:
        idna.encode("a..b")
    except idna.IDNAError:
        refused = True
    return 200, {"encoded": encoded.decode(), "decoded": idna.decode(encoded), "refused": refused}


def use_msgpack(ctx):
    value = {"id": 7, "tags": ["a", "b"], "blob": b"\x00\xff", "ratio": 0.5}
    packed = msgpack.packb(value)
    back = msgpack.unpackb(packed)
    return 200, {"round_trip": back == value, "size": len(packed), "hex": packed.hex(),
                 "implementation": msgpack.Packer.__module__}


def use_yaml(ctx):
    doc = yaml.safe_load("routes:\n  - name: a\n    weight: 3\n  - {name: b, weight: 1}\nenabled: yes\n")
    return 200, {"doc": doc, "dumped": yaml.safe_dump({"b": [1, 2], "a": "x"}, sort_keys=True),
                 "libyaml": yaml.__with_libyaml__}


def use_protobuf(ctx):
    message = struct_pb2.Struct()
    message.update({"user": "alice", "roles": ["admin", "dev"], "limit": 5})
    wire = message.SerializeToString()
    back = struct_pb2.Struct.FromString(wire)
    return 200, {"round_trip": back == message, "user": back["user"], "roles": list(back["roles"]),
                 "implementation": api_implementation.Type()}


def use_limits(ctx):
    attempts = {
        "ssl": ssl.create_default_context,
        "socket": lambda: socket.create_connection(("127.0.0.1", 80)),
        "select": lambda: select.select([], [], [], 0),
        "subprocess": lambda: subprocess.run(["true"]),
        "threading": lambda: threading.Thread(target=print).start(),
        "asyncio": lambda: asyncio.run(asyncio.sleep(0)),
    }
    found = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            found[name] = "worked"
        except NotAvailableInProxy as exc:
            found[name] = str(exc)
    return 200, found


def use_proxy_python(ctx):
    return 200, IMPORT_TIME


ROUTES = {"/jwt": use_jwt, "/cachetools": use_cachetools, "/attrs": use_attrs, "/dateutil": use_dateutil,
          "/idna": use_idna, "/msgpack": use_msgpack, "/yaml": use_yaml, "/protobuf": use_protobuf,
          "/limits": use_limits, "/proxy-python": use_proxy_python}


class Packages(HttpContext):
    def on_request_headers(self, num_headers, end_of_stream):
        route = ROUTES.get(self.request_headers.get(":path") or "")
        if route is None:
            return Action.CONTINUE
        status, body = route(self)
        self.send_local_response(status, json.dumps(body), [("content-type", "application/json")])
        return Action.PAUSE


class PackagesRoot(RootContext):
    http_context = Packages
    key = b""

    def on_configure(self, plugin_config):
        self.key = plugin_config
        return True


register(PackagesRoot)
