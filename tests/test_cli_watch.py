"""`pywasm run --watch` end to end: edit the plugin, see the new behaviour through the same
listener and the same client connection; a broken edit keeps the previous module serving."""

from __future__ import annotations

import http.client
import signal

import pytest

from pywasm_sdk.tooling import envoy as E

from .test_cli_helpers import RunningCli

pytestmark = pytest.mark.envoy

PLUGIN = '''\
from pywasm_sdk import HttpContext, RootContext, log, register

VERSION = "{version}"


class Versioned(HttpContext):
    def on_response_headers(self, num_headers, end_of_stream):
        self.response_headers.add("x-plugin-version", VERSION)


class Root(RootContext):
    http_context = Versioned

    def on_configure(self, plugin_config):
        log.info("watched plugin %s configured", VERSION)
        return True


register(Root)
'''


def version_over(conn: http.client.HTTPConnection) -> str | None:
    """One request on an open keep-alive connection: the plugin version that answered."""
    conn.request("GET", "/watched")
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    assert not response.will_close, "Envoy wants to close the connection"
    return response.getheader("x-plugin-version")


def admin_stats(admin_port: int) -> dict[str, int]:
    status, _, body = E.http_request(admin_port, "/stats")
    assert status == 200
    return {name: int(value) for name, _, value in
            (line.partition(": ") for line in body.decode().splitlines()) if value.isdigit()}


def test_watch_swaps_the_module_into_the_same_listener(tmp_path):
    project = tmp_path / "watched"
    project.mkdir()
    source = project / "plugin.py"
    source.write_text(PLUGIN.format(version="1"))
    port = E.free_port()
    run = RunningCli("run", project, "--watch", "--port", port)
    try:
        run.wait_for("plugin log", timeout=600)
        pid = int(run.wait_for(r"envoy ready in [\d.]+ s \(pid (\d+)\)", stream="stderr").group(1))
        admin = int(run.wait_for(r"starting envoy \(admin 127\.0\.0\.1:(\d+)", stream="stderr").group(1))
        assert any(line.startswith(f"watching {project}/**/*.py") for line in run.stdout)
        run.wait_for(r"^  \[info\] watched plugin 1 configured$")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert version_over(conn) == "1"
        local = conn.sock.getsockname()

        # a new version: rebuilt, swapped in, served over the same client connection
        source.write_text(PLUGIN.format(version="2"))
        run.wait_for(r"^changed: plugin\.py; rebuilding$", timeout=30)
        built = run.wait_for(r"^rebuilt in ([\d.]+) s; Envoy is loading the new module", timeout=600)
        assert float(built.group(1)) > 0
        run.wait_for(rf"^new module serving \(Envoy loaded it in [\d.]+ s; same listener, envoy pid {pid}\)",
                     timeout=300)
        run.wait_for(r"^  \[info\] watched plugin 2 configured$")
        assert version_over(conn) == "2"
        assert conn.sock.getsockname() == local  # the very connection opened before the swap

        # a broken version: the build fails, the error is printed, version 2 keeps serving
        source.write_text(PLUGIN.format(version="3").replace("def on_configure(self, plugin_config):",
                                                              "def on_configure(self, plugin_config)"))
        run.wait_for(r"^build failed after [\d.]+ s; the previous module keeps serving:$", timeout=300)
        run.wait_for(r"plugin\.py:\d+", timeout=5)  # the error names the file and line
        assert version_over(conn) == "2" and conn.sock.getsockname() == local

        # the listener never went away: one listener, never modified or drained; one connection
        stats = admin_stats(admin)
        assert stats["listener_manager.total_listeners_active"] == 1
        assert stats["listener_manager.listener_modified"] == 0
        assert stats["listener_manager.total_listeners_draining"] == 0
        assert stats[f"listener.127.0.0.1_{port}.downstream_cx_total"] == 1
        assert stats["extension_config_discovery.http_filter.pywasm.update_success"] == 2
        conn.close()
    finally:
        assert run.stop(signal.SIGTERM) == 0
