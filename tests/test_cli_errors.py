"""Every command has --help and reports a user's mistake in one line, without a traceback."""

from __future__ import annotations

import gzip
import socket

import pytest

from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling.cli import main, parser

from .test_cli_helpers import component_bytes, module_bytes, run_cli, write_module

COMMANDS = ("new", "build", "run", "inspect", "manifests", "oci", "bench")
MODULE_COMMANDS = ("inspect", "manifests", "oci", "run", "bench")


def fails(capsys, argv: list[str]) -> str:
    """Run ``pywasm argv`` in process; it must exit 1 with one ``pywasm CMD: error:`` message."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(ln for ln in err.splitlines() if "error:" in ln)
    assert line.startswith(f"pywasm {argv[0]}: error: "), err
    return err


def module_argv(command: str, path, tmp_path) -> list[str]:
    extra = {"oci": ["-o", str(tmp_path / "image.tar")], "run": ["--port", str(E.free_port())]}
    return [command, str(path), *extra.get(command, [])]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: pywasm {command}")
    assert len(out.splitlines()) > 5


def test_top_level_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command}" in out
    assert set(parser()._subparsers._group_actions[0].choices) == set(COMMANDS)  # nothing undocumented


def test_console_script_entry_point_runs():
    done = run_cli("--help")
    assert done.returncode == 0 and "pywasm new" in done.stdout


# -- the module argument, the same way in every command ---------------------------------------

BAD_FILES = {
    "missing": (None, "no such file"),
    "empty": (b"", "an empty file"),
    "text": (b"hello, world\n", "not a WebAssembly file"),
    "wat": (b'(module (memory (export "memory") 1))\n', "WebAssembly text (WAT)"),
    "gzip": (gzip.compress(b"\0asm"), "gzip-compressed"),
    "component": (component_bytes(), "is a WebAssembly component, not a core module"),
    "truncated": (module_bytes("http")[:-7], "truncated"),
    "future": (b"\0asm\x02\0\0\0", "unsupported WebAssembly version"),
}


@pytest.mark.parametrize("command", MODULE_COMMANDS)
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_file_that_is_not_a_module_is_named(command, case, tmp_path, capsys):
    data, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.wasm"
    if data is not None:
        path.write_bytes(data)
    err = fails(capsys, module_argv(command, path, tmp_path))
    assert f"{path}: " in err and expected in err
    assert not (tmp_path / "image.tar").exists()


@pytest.mark.parametrize("command", ("inspect", "manifests", "oci"))
def test_a_plugin_folder_instead_of_its_module(command, tmp_path, capsys):
    (tmp_path / "plugin.py").write_text("")
    err = fails(capsys, module_argv(command, tmp_path, tmp_path / "out"))
    assert "is a folder, not a .wasm module" in err and "pywasm build" in err


def test_run_refuses_a_module_envoy_would_not_load(tmp_path, capsys):
    err = fails(capsys, ["run", str(write_module(tmp_path, "bad")), "--port", str(E.free_port())])
    assert "Envoy would not load this module" in err and "env.not_a_hostcall" in err


def test_run_asks_which_filter_a_module_with_both_kinds_is(tmp_path, capsys):
    err = fails(capsys, ["run", str(write_module(tmp_path, "both")), "--port", str(E.free_port())])
    assert "--type http or --type network" in err


# -- options ----------------------------------------------------------------------------------

def test_run_port_in_use_is_reported_before_building(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # a plugin source that would take 20 s to build: the error must come first
        (tmp_path / "plugin.py").write_text("from pywasm_sdk import register\nregister()\n")
        err = fails(capsys, ["run", str(tmp_path), "--port", str(port)])
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in err


@pytest.mark.parametrize("argv, expected", [
    (["run", "x.wasm", "--port", "0"], "--port 0: a port is a number from 1 to 65535"),
    (["run", "x.wasm", "--port", "70000"], "--port 70000: a port is a number"),
    (["run", "x.wasm", "--upstream", "example.com:80"], "only IPv4 loopback"),
    (["run", "x.wasm", "--upstream", "8080"], "expected HOST:PORT"),
    (["run", "x.wasm", "--config", "@/nonexistent/config.json"], "--config @/nonexistent/config.json: no such file"),
    (["run", "x.wasm", "--cluster", "authz"], "--cluster 'authz': expected KEY=VALUE"),
    (["run", "x.wasm", "--cluster", "authz=10.0.0.1:80"], "--cluster authz '10.0.0.1:80': only IPv4 loopback"),
    (["run", "x.wasm", "--cluster", "upstream=127.0.0.1:80"], "`upstream` is the run's own cluster"),
    (["run", "x.wasm", "--env", "=x"], "--env '=x': expected KEY=VALUE"),
])
def test_run_option_errors(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_module(tmp_path, "http", "x")
    if "--port" not in argv:
        argv = [*argv, "--port", str(E.free_port())]
    assert expected in fails(capsys, argv)


_ADMIN = "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 9901}}}\n"
_WASM = ("static_resources:\n  listeners:\n  - name: l\n    address: {socket_address: {address: %s, port_value: 1}}\n"
         "    filter_chains: [{filters: [{name: envoy.filters.network.wasm, typed_config: {config: {}}}]}]\n")


@pytest.mark.parametrize("content, extra, expected", [
    (None, [], "--envoy-config {path}: no such file"),
    ("admin: [", [], "--envoy-config {path}: not YAML"),
    (_ADMIN, [], "not an Envoy bootstrap (it has no static_resources)"),
    ("static_resources: {}\n", [], "give Envoy an admin address"),
    (_ADMIN + "static_resources: {listeners: []}\n", [], "no wasm filter (envoy.filters.http.wasm or "
                                                          "envoy.filters.network.wasm) to load the plugin into"),
    (_ADMIN + _WASM % "10.0.0.1", [], "config.static_resources.listeners[0].address is '10.0.0.1'; only IPv4 loopback"),
    (_ADMIN + _WASM % "127.0.0.5", ["--port", "8000", "--tcp"], "--port, --type/--tcp: not with --envoy-config"),
    (_ADMIN + _WASM % "127.0.0.5", ["--concurrency", "0"], "--concurrency 0: Envoy needs at least one worker"),
], ids=["missing", "not-yaml", "not-bootstrap", "no-admin", "no-wasm-filter", "not-loopback", "port", "concurrency"])
def test_run_envoy_config_errors_come_before_the_build(content, extra, expected, tmp_path, capsys):
    (tmp_path / "plugin.py").write_text("from pywasm_sdk import register\nregister()\n")  # a 20 s build
    path = tmp_path / "envoy.yaml"
    if content is not None:
        path.write_text(content)
    err = fails(capsys, ["run", str(tmp_path), "--envoy-config", str(path), *extra])
    assert expected.format(path=path) in err


@pytest.mark.parametrize("extra, expected", [
    (["--url", "ftp://host/p.wasm"], "Istio fetches modules from oci://, http://, https://, file://"),
    (["--url", "https:///p.wasm"], "no host"),
    (["--selector", "app"], "--selector 'app': expected KEY=VALUE"),
    (["--selector", "app=no spaces"], "not a valid Kubernetes label"),
    (["--env", "1X=2"], "an environment variable name"),
    (["--sha256", "abc"], "expected 64 lower-case hex digits"),
    (["--name", "Bad Name!"], "a resource name must be"),
    (["--namespace", "Prod"], "not a valid namespace name"),
    (["--priority", str(1 << 31)], "32-bit"),
    (["--path", "relative.wasm"], "absolute path"),
    (["--upstream", "10.0.0.1:80"], "only IPv4 loopback"),
    (["--listen-port", "0"], "--listen-port 0"),
    (["--config", "x=1", "--kind", "wasmplugin"], "pluginConfig must be a JSON object"),
    (["--config", "[1, 2]"], "JSON but a list"),
    (["--reload-backoff", "2"], "only with --fail-strategy reload"),
    (["--fail-strategy", "reload", "--reload-backoff", "0"], "seconds from 0.01 to 86400"),
])
def test_manifests_option_errors(extra, expected, tmp_path, capsys):
    path = write_module(tmp_path, "http")
    assert expected in fails(capsys, ["manifests", str(path), *extra])


def test_manifests_ambiguous_module_asks_for_type(tmp_path, capsys):
    err = fails(capsys, ["manifests", str(write_module(tmp_path, "both"))])
    assert "--type http or --type network" in err
    assert main(["manifests", str(tmp_path / "both.wasm"), "--type", "network", "--kind", "envoy"]) == 0


@pytest.mark.parametrize("extra, expected", [
    (["--tag=-bad"], "tag '-bad'"),
    (["--tag", "x" * 129], "1-128"),
    (["--annotation", "novalue"], "expected KEY=VALUE"),
    (["--annotation", "module.wasm.image/variant=oci"], "set by pywasm oci"),
    (["--annotation", "bad key=1"], "annotation key"),
])
def test_oci_option_errors(extra, expected, tmp_path, capsys):
    path = write_module(tmp_path, "http")
    err = fails(capsys, ["oci", str(path), "-o", str(tmp_path / "image.tar"), *extra])
    assert expected in err
    assert not (tmp_path / "image.tar").exists()


def test_build_cache_takes_plugin_sources_only(tmp_path, capsys):
    err = fails(capsys, ["build", str(write_module(tmp_path, "http")), "--cache", "-o", str(tmp_path / "o.wasm")])
    assert "a plugin is a .py file or a folder with plugin.py" in err


def test_oci_output_that_is_a_folder(tmp_path, capsys):
    path = write_module(tmp_path, "http")
    assert "is a folder" in fails(capsys, ["oci", str(path), "-o", str(tmp_path)])


@pytest.mark.parametrize("argv", [
    ["manifests", "x.wasm", "--kind", "helm"],
    ["oci", "x.wasm"],                      # -o is required
    ["run", "x.wasm", "--tcp", "--type", "http"],
    ["inspect"],
    ["frobnicate"],
])
def test_malformed_command_lines_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert "usage: pywasm" in capsys.readouterr().err
