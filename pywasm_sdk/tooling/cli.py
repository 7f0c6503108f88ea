"""The ``pywasm`` command line (one sub-command per thing a plugin author does)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def _progress(quiet: bool) -> Callable[[str], None] | None:
    """Progress lines on stderr, unless --quiet or running in CI (CI=true)."""
    if quiet or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return None
    return lambda message: print(f"pywasm: {message}", file=sys.stderr, flush=True)


def _cmd_build(args: argparse.Namespace) -> int:
    from .build import BuildError, build

    output = args.output or os.path.splitext(os.path.basename(os.path.normpath(args.plugin)))[0] + ".wasm"
    try:
        result = build(args.plugin, output, progress=_progress(args.quiet), keep_temp=args.keep_temp)
    except BuildError as exc:
        print(f"pywasm build: error: {exc}", file=sys.stderr)
        return 1
    if args.quiet:
        return 0
    print(f"{result.output} ({result.size / 1e6:.1f} MB), callbacks: {', '.join(result.callbacks)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .build import BuildError
    from .run import run

    config = args.config or ""
    try:
        raw = open(config[1:], "rb").read() if config.startswith("@") else config.encode()
        return run(args.plugin, config=raw, port=args.port, upstream=args.upstream, tcp=args.tcp,
                   progress=_progress(args.quiet))
    except (BuildError, OSError, ValueError) as exc:
        print(f"pywasm run: error: {exc}", file=sys.stderr)
        return 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="pywasm", description="Build and run proxy-wasm plugins written in Python.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = sub.add_parser("build", help="build a plugin into a .wasm module Envoy loads",
                       description="Build PLUGIN (a .py file, or a folder with plugin.py) into a "
                                   "proxy-wasm 0.2.1 module.")
    b.add_argument("plugin", metavar="PLUGIN")
    b.add_argument("-o", "--output", metavar="OUT.wasm", help="where to write the module (default: PLUGIN's name + .wasm)")
    b.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    b.add_argument("--keep-temp", metavar="DIR", help="keep the intermediate files (component, fused module) in DIR")
    b.set_defaults(run=_cmd_build)

    from .run import DEFAULT_PORT

    r = sub.add_parser("run", help="serve a plugin through a local Envoy",
                       description="Build PLUGIN if its sources changed, start Envoy on 127.0.0.1 with "
                                   "the plugin in front of a built-in echo upstream (or --upstream), "
                                   "print a curl to try and stream the plugin's log. Ctrl-C stops it.")
    r.add_argument("plugin", metavar="PLUGIN", help="a .py file, a folder with plugin.py, or a built .wasm")
    r.add_argument("--config", metavar="TEXT|@FILE", help="the plugin configuration, inline or @file")
    r.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listener port (default {DEFAULT_PORT})")
    r.add_argument("--upstream", metavar="HOST:PORT", help="forward to this server instead of the echo upstream")
    r.add_argument("--tcp", action="store_true", default=None,
                   help="serve as a TCP (network) filter; default: decided by the plugin's callbacks")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    r.set_defaults(run=_cmd_run)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
