"""`pywasm run --watch` end to end: edit the plugin, see the new behaviour through the same
listener and the same client connection; a broken edit keeps the previous module serving."""

from __future__ import annotations

import http.client
import signal

import pytest
import yaml

from pywasm_sdk.tooling import envoy as E

from .test_cli_helpers import RunningCli

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
        return VERSION != "refused"


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


@pytest.mark.envoy
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

        # a module Envoy refuses (on_configure says no): version 2 keeps serving
        source.write_text(PLUGIN.format(version="refused"))
        run.wait_for(r"^rebuilt in [\d.]+ s; Envoy is loading the new module", timeout=600)
        run.wait_for(r"^Envoy refused the new module \(its reason is in the log above\); the previous "
                     r"module keeps serving$", timeout=300)
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


def test_the_wasm_filters_become_ecds_references(tmp_path):
    """What Envoy is given: each wasm filter a config_discovery reference to a file that holds
    the filter's own configuration; a swap rewrites the file with the new module's path."""
    from pywasm_sdk.tooling.watch import DynamicFilters

    original = E.tcp_bootstrap(wasm_path=tmp_path / "a.wasm", plugin_config="{}", listener_port=1,
                               admin_port=2, clusters={"upstream": ("127.0.0.1", 3)}, default_cluster="upstream")
    dynamic = DynamicFilters(original, tmp_path)
    (network_filter, tcp_proxy) = dynamic.bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    assert network_filter == {"name": "pywasm", "config_discovery": {
        "config_source": {"path_config_source": {"path": str(tmp_path / "ecds-0.yaml")}, "resource_api_version": "V3"},
        "type_urls": ["type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"]}}
    assert tcp_proxy["name"] == "envoy.filters.network.tcp_proxy"
    assert dynamic.bootstrap["node"] == {"id": "pywasm-run", "cluster": "pywasm-run"}
    assert "node" not in original  # the caller's configuration is left alone

    def served_module() -> str:
        (resource,) = yaml.safe_load((tmp_path / "ecds-0.yaml").read_text())["resources"]
        assert resource["name"] == "pywasm"
        assert resource["typed_config"]["config"]["configuration"]["value"] == "{}"
        return resource["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]

    assert served_module() == str(tmp_path / "a.wasm")
    dynamic.swap(tmp_path / "b.wasm")
    assert served_module() == str(tmp_path / "b.wasm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ecds-0.yaml"]  # no partial file left


def test_the_watcher_sees_added_changed_and_removed_files(tmp_path):
    from pywasm_sdk.tooling.watch import SourceFiles

    (tmp_path / "plugin.py").write_text("from pywasm_sdk import register\n")
    (tmp_path / "helpers.py").write_text("X = 1\n")
    files = SourceFiles(tmp_path)
    assert files.describe() == f"{tmp_path}/**/*.py" and files.changes() == []
    (tmp_path / "helpers.py").write_text("X = 22\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.py").write_text("")
    (tmp_path / "notes.txt").write_text("not a source")
    assert files.changes() == ["helpers.py", "more.py"]
    (tmp_path / "sub" / "more.py").unlink()
    assert files.changes() == ["more.py"] and files.changes() == []
    single = SourceFiles(tmp_path / "helpers.py")
    assert single.describe() == str(tmp_path / "helpers.py")
