"""What a line of Python costs inside the proxy, in wasm instructions: a call, an attribute, an object.

    python bench/op_costs.py [--iterations 100] [--streams 64] [--json out.json]

(from the repository root, with the package installed). It builds one plugin (through the build
cache: a second run builds nothing) whose stream callback runs one *construct* (a call to an
empty function, an attribute read, making an object, ...) ``--iterations`` times, the construct
chosen by the plugin configuration, and runs it in wasmtime through the mock host with fuel
metering: one unit of fuel is about one wasm instruction the module ran. A construct's cost is
the fuel per stream with it, minus the same loop with an empty body, divided by the iterations.

The figures do not depend on the machine or its load: they change only with the interpreter
(componentize-py's CPython) or the build. They are not V8's time, but they rank what a plugin
does per request: how `docs/workflow.md` ("Keeping a plugin cheap per request") came to its
rules of thumb. Takes about a minute once the plugin is built.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pywasm_sdk.testing import MockHost, WasmGuest
from pywasm_sdk.testing.cache import ModuleCache, default_directory
from pywasm_sdk.tooling.bench.costs import FUEL, one_stream
from pywasm_sdk.tooling.build_cache import cached_build

#: construct -> (what it is, the loop body); the names they use are the plugin's (PLUGIN below)
CONSTRUCTS: dict[str, tuple[str, str]] = {
    "empty": ("the loop itself (subtracted from the others)", "pass"),
    "global": ("read a module global", "GLOBAL"),
    "attribute": ("read an instance attribute", "obj.x"),
    "set_attribute": ("write an instance attribute", "obj.x = 1"),
    "call": ("call an empty function", "function()"),
    "call_2": ("call an empty function with two arguments", "function_2(1, 2)"),
    "method": ("call an empty method", "obj.method()"),
    "getattr_call": ("call a method by name, getattr(obj, name)()", 'getattr(obj, "method")()'),
    "property": ("read a property", "obj.prop"),
    "dict_get": ("dict.get", "table.get(1)"),
    "new_int": ("make an int beyond the cached small ones", "BIG + 1"),
    "object": ("make and free an object of a class with __init__", "Slotted(1, 2)"),
    "f_string": ("format an f-string of an int", 'f"n={BIG}"'),
}

PLUGIN = '''
from pywasm_sdk import HttpContext, RootContext, register

ITERATIONS = list(range({iterations}))
GLOBAL = 5
BIG = 10 ** 6
table = {{1: 2}}


def function():
    pass


def function_2(a, b):
    pass


class Slotted:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def method(self):
        pass

    @property
    def prop(self):
        return 1


obj = Slotted(1, 2)


def run(construct):
    if construct is None:
        return
{branches}


class Stream(HttpContext):
    def on_response_headers(self, num_headers, end_of_stream):
        run(self.root.construct)


class Root(RootContext):
    http_context = Stream
    construct = None

    def on_configure(self, plugin_config):
        self.construct = plugin_config.decode() or None
        return True


register(Root)
'''


def plugin_source(iterations: int) -> str:
    branches = "\n".join(f"    {'if' if n == 0 else 'elif'} construct == {name!r}:\n"
                         f"        for _ in ITERATIONS:\n            {body}"
                         for n, (name, (_, body)) in enumerate(CONSTRUCTS.items()))
    return PLUGIN.format(iterations=iterations, branches=branches)


def fuel_per_stream(wasm: Path, cache: ModuleCache, construct: str, streams: int) -> float:
    guest = WasmGuest(wasm, cache=cache, name=construct or "none")
    with MockHost.from_guest(guest, plugin_config=construct) as host:
        for _ in range(streams):  # warm-up: the interpreter specialises what runs twice
            one_stream(host)
        before = guest.fuel_left
        for _ in range(streams):
            one_stream(host)
        return (before - guest.fuel_left) / streams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=100, help="loop iterations per stream (default 100)")
    parser.add_argument("--streams", type=int, default=64,
                        help="measured streams per construct, after as many for warm-up (default 64)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.streams < 1:
        parser.error("--iterations and --streams must be at least 1")

    with tempfile.TemporaryDirectory(prefix="pywasm-op-costs-") as folder:
        source = Path(folder) / "op_costs_plugin.py"
        source.write_text(plugin_source(args.iterations))
        print("building the plugin (cached after the first run)...", file=sys.stderr)
        wasm, _ = cached_build(source, lambda message: print(f"  {message}", file=sys.stderr))
        cache = ModuleCache(default_directory() / "fuel-metered", fuel=FUEL)
        base = fuel_per_stream(wasm, cache, "", args.streams)
        per_iteration = {}
        for name in CONSTRUCTS:
            print(f"measuring {name}...", file=sys.stderr)
            per_iteration[name] = (fuel_per_stream(wasm, cache, name, args.streams) - base) / args.iterations
    empty = per_iteration["empty"]
    costs = {name: round(v - empty) for name, v in per_iteration.items() if name != "empty"}
    print(f"wasm instructions per construct (fuel; {args.iterations} iterations x {args.streams} "
          f"streams each; the loop's own {empty:.0f} per iteration subtracted)")
    for name, cost in costs.items():
        print(f"  {cost:>7,}  {CONSTRUCTS[name][0]}  ({CONSTRUCTS[name][1]})")
    if args.json:
        args.json.write_text(json.dumps({"loop": round(empty), "costs": costs,
                                         "iterations": args.iterations, "streams": args.streams}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
