"""Helpers shared by the tests of the examples (this module holds no tests).

Each example ships files a reader runs as they are: ``services.py`` (the helper services of a
local run), ``envoy.yaml`` (ports and the module path fixed for ``envoy -c``) and Istio manifests
made by ``pywasm manifests``. The tests use those very files: the services module is imported,
the Envoy configuration is run with its loopback ports and module path swapped for the test's,
and each manifest is made again with the command written in its header and compared.
"""

from __future__ import annotations

import importlib.util
import io
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from pywasm_sdk.tooling.cli import main
from pywasm_sdk.tooling.run import wasm_filters

from .conftest import EXAMPLES, REPO


def example_services(example: str) -> ModuleType:
    """``examples/<example>/services.py``, imported (once) under a name of its own."""
    name = f"_example_{example}_services"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / example / "services.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _address(entry: dict[str, Any]) -> dict[str, Any]:
    return entry["address"]["socket_address"]


def local_envoy_config(example: str, wasm: Path, *, listeners: dict[str, int], admin_port: int,
                       clusters: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """The example's ``envoy.yaml`` with the test's module, listener ports and cluster addresses.

    Every listener and cluster of the file must be given, so a change to the file's shape fails
    here rather than sending the test's traffic somewhere unexpected. A listener's
    ``additional_addresses`` keep their IPs and get its port.
    """
    text = (EXAMPLES / example / "envoy.yaml").read_text()
    shipped = f"/tmp/{example}.wasm"
    assert shipped in text, f"examples/{example}/envoy.yaml should load {shipped}"
    config = yaml.safe_load(text.replace(shipped, str(wasm)))
    config["admin"]["address"]["socket_address"]["port_value"] = admin_port
    resources = config["static_resources"]
    assert {lst["name"] for lst in resources["listeners"]} == set(listeners)
    for listener in resources["listeners"]:
        _address(listener)["port_value"] = listeners[listener["name"]]
        for extra in listener.get("additional_addresses", []):  # other IPs, the same port
            _address(extra)["port_value"] = listeners[listener["name"]]
        listener["enable_reuse_port"] = False  # a taken port fails the start instead of being shared
    assert {c["name"] for c in resources["clusters"]} == set(clusters)
    for cluster in resources["clusters"]:
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        host, port = clusters[cluster["name"]]
        endpoint["endpoint"]["address"]["socket_address"] = {"address": host, "port_value": port}
    return config


def manifest_command(path: Path) -> list[str]:
    """The ``pywasm manifests ...`` command written in a manifest's header comment."""
    lines = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("pywasm manifests "))
    command = ""
    for line in lines[start:]:
        command += line.removesuffix("\\") + " "
        if not line.endswith("\\"):
            break
    argv = shlex.split(command)
    assert argv[:2] == ["pywasm", "manifests"]
    return argv[1:]


def reproduce_manifest(path: Path, wasm: Path) -> tuple[list[Any], list[Any]]:
    """(the documents of the shipped manifest, those its header's command makes for ``wasm``).

    The command names the module as ``/tmp/<name>.wasm`` and any ``--config @FILE`` relative to
    the repository's root, as a reader would run it.
    """
    argv = manifest_command(path)
    module = argv[1]
    assert module.startswith("/tmp/") and module.endswith(".wasm"), argv
    argv[1] = str(wasm)
    argv = [f"@{REPO / a[1:]}" if a.startswith("@") else a for a in argv]
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(argv) == 0, f"`pywasm {' '.join(argv)}` failed"
    return list(yaml.safe_load_all(path.read_text())), list(yaml.safe_load_all(out.getvalue()))


@contextmanager
def services_script(example: str, *args: str) -> Iterator[str]:
    """``python examples/<example>/services.py ARGS`` as a reader runs it; yields its first line
    (printed once it serves) and stops it with SIGTERM, which it must obey with status 0."""
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / example / "services.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, f"services.py printed nothing: {proc.stderr.read() if proc.stderr else ''}"
        yield line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            status = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("services.py did not stop on SIGTERM") from None
    assert status == 0, proc.stderr.read() if proc.stderr else status


def wasm_plugin_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The PluginConfig of every wasm filter of a bootstrap, in document order (to read or change
    its ``configuration``)."""
    return [entry["typed_config"]["config"] for entry in wasm_filters(config)]
