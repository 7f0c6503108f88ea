"""A plugin whose VM dies, under each failure policy, in the real Envoy.

The plugin (tests/plugins/crash.py) is an auth filter: only ``x-token: letmein`` passes, and
``/crash`` traps its VM on purpose. The Envoy configurations are the ones ``pywasm manifests
--fail-strategy ...`` writes. What Envoy 1.40 does (docs/failure-policies.md):

- FAIL_RELOAD: the crashing request gets 503; later requests get 503 until the reload backoff
  has passed, then a fresh VM (a new Python interpreter: on_vm_start and on_configure again)
  serves them;
- FAIL_CLOSED: every request gets 503 from then on, none reaches the upstream;
- FAIL_OPEN: requests bypass the dead filter: an auth plugin lets everything through.

Memory exhaustion alone does not kill a Python plugin's VM: at the 1 GiB cap Python raises
MemoryError like any exception (shown in Envoy and under the mock host).
"""

from __future__ import annotations

import re
import time

import pytest
import yaml

from pywasm_sdk.testing import Action, MockHost, PluginTrap, VmFailedError
from pywasm_sdk.tooling import envoy as E
from pywasm_sdk.tooling.cli import main

from .conftest import PLUGINS

CRASH = PLUGINS / "crash.py"
TOKEN = {"x-token": "letmein"}
TRAP = "Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"


@pytest.fixture
def upstream():
    with E.EchoUpstream() as server:
        yield server


def envoy_from_manifests(wasm, upstream, tmp_path, capsys, *options: str) -> tuple[E.Envoy, int]:
    """The Envoy bootstrap `pywasm manifests --kind envoy OPTIONS` writes for the plugin."""
    port, out = E.free_port(), tmp_path / "envoy.yaml"
    assert main(["manifests", str(wasm), "--kind", "envoy", "--name", "crash", "-o", str(out),
                 "--listen-port", str(port), "--admin-port", str(E.free_port()),
                 "--upstream", f"127.0.0.1:{upstream.port}", *options]) == 0, capsys.readouterr().err
    return E.Envoy(yaml.safe_load(out.read_text())), port


def get(port: int, path: str = "/doc", token: bool = True) -> tuple[int, dict[str, str]]:
    status, headers, _ = E.http_request(port, path, headers=TOKEN if token else {})
    return status, headers


def crash(envoy: E.Envoy, port: int) -> None:
    assert get(port, "/crash")[0] == 503  # the request that traps gets Envoy's 503
    envoy.wait_for_log(re.escape(TRAP))


@pytest.mark.envoy
def test_fail_reload_serves_again_after_the_vm_died(pywasm_build, upstream, tmp_path, capsys):
    envoy, port = envoy_from_manifests(pywasm_build(CRASH), upstream, tmp_path, capsys,
                                       "--fail-strategy", "reload", "--reload-backoff", "0.2")
    with envoy:
        status, headers = get(port)
        first_vm = headers["x-vm"]
        assert status == 200 and get(port, token=False)[0] == 403
        crash(envoy, port)
        seen_before = len(upstream.requests)
        answers = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, headers = get(port)
            answers.append(status)
            if status == 200:
                break
            time.sleep(0.05)
        assert answers[-1] == 200, f"no reload: {answers}"
        assert set(answers[:-1]) <= {503}  # until the reload: denied, never let through unchecked
        assert headers["x-vm"] != first_vm  # a new VM: a new interpreter, on_vm_start ran again
        status, headers = get(port, token=False)
        assert status == 403 and headers["x-vm"] not in ("", first_vm)  # and it still denies
        assert len(upstream.requests) == seen_before + 1
        assert envoy.stats()["wasm.crash.vm_reload_success"] >= 1
        assert envoy.admin_get("/ready").strip() == "LIVE"


@pytest.mark.envoy
def test_fail_closed_auth_plugin_denies_after_its_vm_died(pywasm_build, upstream, tmp_path, capsys):
    envoy, port = envoy_from_manifests(pywasm_build(CRASH), upstream, tmp_path, capsys,
                                       "--fail-strategy", "close")
    with envoy:
        # memory exhaustion is a MemoryError in Python, not a dead VM
        status, headers = get(port, "/hoard")
        vm = headers["x-vm"]
        assert status == 200
        hoarded = int(envoy.wait_for_log(r"crash: hoarded (\d+) MiB before MemoryError").group(1))
        assert 900 < hoarded < 1024  # the 1 GiB cap, less what the interpreter itself holds
        status, headers = get(port)
        assert status == 200 and headers["x-vm"] == vm  # the same VM
        crash(envoy, port)
        seen = len(upstream.requests)
        deadline = time.monotonic() + 1.5  # longer than FAIL_RELOAD's default backoff: no reload
        while time.monotonic() < deadline:
            assert get(port)[0] == 503
            assert get(port, token=False)[0] == 503
            time.sleep(0.1)
        assert len(upstream.requests) == seen  # nothing got through
        assert not envoy.stats().get("wasm.crash.vm_reload_success")
        assert envoy.admin_get("/ready").strip() == "LIVE"


@pytest.mark.envoy
def test_fail_open_bypasses_a_dead_plugin(pywasm_build, upstream, tmp_path, capsys):
    """Why an auth plugin must not fail open: once its VM is dead, nothing checks the requests."""
    envoy, port = envoy_from_manifests(pywasm_build(CRASH), upstream, tmp_path, capsys,
                                       "--fail-strategy", "open")
    with envoy:
        assert get(port, token=False)[0] == 403
        crash(envoy, port)
        status, headers = get(port, token=False)
        assert status == 200 and "x-vm" not in headers  # the filter is skipped altogether
        assert upstream.requests[-1]["headers"].get("x-auth") is None


def test_memory_exhaustion_under_the_mock_host(pywasm_build):
    """The mock host caps memory at 1 GiB as Envoy does: MemoryError, and the VM serves on;
    a trap fails the VM."""
    with MockHost.from_wasm(pywasm_build(CRASH)) as host:
        stream = host.http_stream()
        stream.send_request_headers([(":method", "GET"), (":path", "/hoard"), (":authority", "a"),
                                     ("x-token", "letmein")], end_of_stream=True)
        assert stream.request_header("x-auth") == "ok"
        [line] = host.logs.find(re.compile(r"hoarded (\d+) MiB before MemoryError"))
        assert 900 < int(re.search(r"(\d+) MiB", line.message).group(1)) < 1024
        stream = host.http_stream()
        assert stream.send_request_headers([(":method", "GET"), (":path", "/"), (":authority", "a")],
                                           end_of_stream=True) == Action.PAUSE
        assert stream.local_response.status == 403
        with pytest.raises(PluginTrap, match="unreachable"):
            host.http_stream().send_request_headers([(":method", "GET"), (":path", "/crash"),
                                                     (":authority", "a")])
        with pytest.raises(VmFailedError):
            host.http_stream()
