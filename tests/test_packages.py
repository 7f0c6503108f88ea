"""Third-party packages in a plugin (docs/packages.md): the compatibility table, tested.

One plugin (tests/plugins/packages) imports every package of the table and is built once; each
package is exercised under the mock host, natively and as the built .wasm. What cannot work
inside the proxy imports and refuses clearly; a package that needs a compiled extension fails
the build's check with the package and the extension named.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jwt
import pytest

from pywasm_sdk.tooling import build as build_mod
from pywasm_sdk.tooling import proxy_python

PLUGIN = Path(__file__).resolve().parent / "plugins" / "packages"
KEY = b"k" * 32
MODES = ["native", "wasm"]


@pytest.fixture(scope="module", params=MODES)
def packages_host(request, pywasm_build):
    from pywasm_sdk.testing import MockHost

    if request.param == "wasm":
        host = MockHost.from_wasm(pywasm_build(PLUGIN), plugin_config=KEY)
    else:
        host = MockHost.from_plugin(PLUGIN, plugin_config=KEY)
    yield host
    host.close()


@pytest.fixture
def wasm_host(packages_host):
    if packages_host.kind != "wasm":
        pytest.skip("inside the proxy only: natively the plugin has the real modules")
    return packages_host


def ask(host, path: str, **headers: str) -> tuple[int, dict]:
    stream = host.http_stream()
    stream.send_request_headers([(":method", "GET"), (":path", path), (":authority", "example"),
                                 *headers.items()])
    reply = stream.local_response
    assert reply is not None, host.logs
    return reply.status, json.loads(reply.body)


def test_pyjwt_verifies_and_signs_hs256(packages_host):
    token = jwt.encode({"sub": "alice", "scope": "read"}, KEY, algorithm="HS256")
    status, body = ask(packages_host, "/jwt", authorization=f"Bearer {token}")
    assert status == 200 and body["claims"] == {"sub": "alice", "scope": "read"}
    assert jwt.decode(body["signed"], KEY, algorithms=["HS256"]) == {"sub": "alice", "role": "checked"}
    forged = jwt.encode({"sub": "mallory"}, b"x" * 32, algorithm="HS256")
    assert ask(packages_host, "/jwt", authorization=f"Bearer {forged}") == (401, {"error": "InvalidSignatureError"})


def test_cachetools(packages_host):
    assert ask(packages_host, "/cachetools") == (200, {"lru": ["a", "c"], "squares": [9, 9, 16], "calls": [3, 4]})


def test_attrs(packages_host):
    assert ask(packages_host, "/attrs") == (200, {"route": {"cluster": "canary", "weight": 3, "tags": ["blue"]},
                                                  "equal": True, "refused": "'weight'"})


def test_dateutil(packages_host):
    assert ask(packages_host, "/dateutil") == (200, {
        "later": "2024-02-29T12:30:00+01:00", "weekly": ["2024-01-01", "2024-01-08", "2024-01-15"],
        "parsed": "2024-02-29T08:00:00+00:00"})


def test_idna(packages_host):
    assert ask(packages_host, "/idna") == (200, {"encoded": "xn--bcher-kva.example",
                                                 "decoded": "bücher.example", "refused": True})


def test_msgpack(packages_host):
    status, body = ask(packages_host, "/msgpack")
    assert status == 200 and body["round_trip"] and body["size"] == 39
    assert body["hex"] == "84a2696407a47461677392a161a162a4626c6f62c40200ffa5726174696fcb3fe0000000000000"
    if packages_host.kind == "wasm":
        assert body["implementation"] == "msgpack.fallback"


def test_pyyaml(packages_host):
    status, body = ask(packages_host, "/yaml")
    assert status == 200
    assert body["doc"] == {"routes": [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}], "enabled": True}
    assert body["dumped"] == "a: x\nb:\n- 1\n- 2\n"
    if packages_host.kind == "wasm":
        assert body["libyaml"] is False


def test_protobuf_pure_python(packages_host):
    status, body = ask(packages_host, "/protobuf")
    assert status == 200 and body["round_trip"] and body["user"] == "alice" and body["roles"] == ["admin", "dev"]
    if packages_host.kind == "wasm":
        assert body["implementation"] == "python"


def test_what_cannot_work_refuses_with_what_to_do(wasm_host):
    status, body = ask(wasm_host, "/limits")
    assert status == 200
    assert body["ssl"].startswith("ssl.create_default_context: TLS is not available inside the proxy")
    assert "self.http_call" in body["ssl"]
    assert body["socket"].startswith("socket.create_connection: a plugin cannot open sockets")
    assert body["select"].startswith("select.select: there is nothing to wait on")
    assert body["subprocess"].startswith("subprocess.Popen: a plugin cannot start processes")
    assert body["threading"].startswith("threading.Thread.start: a plugin cannot start threads")
    assert body["asyncio"].startswith("asyncio.events.new_event_loop: an asyncio event loop cannot run")


def test_recorded_proxy_python_matches_the_built_plugin(wasm_host):
    """tooling/proxy_python.py's survey is what the pinned componentize-py's CPython really has."""
    status, body = ask(wasm_host, "/proxy-python")
    assert status == 200 and body["version"] == [3, 14]
    assert body["missing_stdlib"] == sorted(proxy_python.MISSING_C_MODULES)
    assert body["broken_that_imported"] == []


# -- the build's native check (no wasm build: each stops at the check) ---------------------------

def check(tmp_path: Path, source: str) -> str:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(textwrap.dedent(source) + "\nfrom pywasm_sdk import HttpContext, register\n"
                      "register(http=HttpContext)\n")
    with pytest.raises(build_mod.BuildError) as failed:
        build_mod.build(plugin, tmp_path / "out.wasm")
    assert not (tmp_path / "out.wasm").exists()
    return str(failed.value)


def test_a_package_that_needs_its_c_extension_fails_the_build_naming_both(tmp_path):
    pytest.importorskip("ujson")
    message = check(tmp_path, "import ujson\n")
    assert f"{tmp_path / 'plugin.py'}:1: cannot import module 'ujson'" in message
    assert "package 'ujson' needs its compiled extension module 'ujson' (" in message
    assert "cannot load compiled extensions" in message


def test_a_package_whose_extension_fails_inside_it_is_reported_with_the_extension(tmp_path):
    # componentize-py's own Python package is a compiled extension behind a pure __init__.py
    message = check(tmp_path, "import json\nimport componentize_py\n")
    assert f"{tmp_path / 'plugin.py'}:2:" in message
    assert "package 'componentize-py' needs its compiled extension module 'componentize_py.componentize_py'" in message


def test_a_stdlib_module_the_proxy_lacks_fails_the_check(tmp_path):
    message = check(tmp_path, "import lzma\n")
    assert "cannot import module 'lzma'" in message and "built without '_lzma'" in message


def test_the_check_refuses_a_module_the_proxy_lacks_even_when_already_imported():
    # zipfile imports lzma: whatever imports zipfile before the check must not let lzma through
    probe = ("import zipfile, sys\n"
             "from pywasm_sdk.tooling import proxy_python\n"
             "proxy_python.install()\n"
             "try:\n    import lzma\nexcept ModuleNotFoundError as exc:\n    print('refused', exc.name)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "refused lzma", done.stdout + done.stderr


def test_the_check_runs_with_the_proxys_stand_ins(tmp_path):
    message = check(tmp_path, "import socket\nsocket.create_connection(('127.0.0.1', 9))\n")
    assert f"{tmp_path / 'plugin.py'}:2:" in message
    assert "socket.create_connection: a plugin cannot open sockets" in message


def test_the_check_takes_pure_python_fallbacks_as_the_proxy_does(tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text("import msgpack, yaml\n"
                      "assert msgpack.Packer.__module__ == 'msgpack.fallback', msgpack.Packer.__module__\n"
                      "assert not yaml.__with_libyaml__\n"
                      "from pywasm_sdk import HttpContext, register\nregister(http=HttpContext)\n")
    assert build_mod.preflight(build_mod.resolve_plugin(plugin))["ok"]


def test_build_uses_the_packages_of_the_python_that_runs_it():
    paths = build_mod.package_paths()
    assert Path(jwt.__file__).resolve().parent.parent in paths
    assert Path(json.__file__).resolve().parent not in paths  # the standard library is the proxy's own


def test_stand_ins_natively(tmp_path):
    """_unavailable.install() in a fresh interpreter, as the build's check runs it."""
    script = textwrap.dedent("""
        from pywasm_sdk import _unavailable
        from pywasm_sdk.errors import NotAvailableInProxy
        _unavailable.install()
        _unavailable.install()  # twice is once
        import socket, ssl, threading
        from jwt import jwks_client  # imports ssl.SSLContext at module level
        assert ssl.PROTOCOL_TLS_CLIENT == 16 and ssl.CERT_REQUIRED == 2 and not ssl.HAS_SNI
        assert issubclass(ssl.SSLCertVerificationError, (ssl.SSLError, ValueError))
        class Mine(socket.socket):  # subclassing still works; making one does not
            pass
        for attempt in (ssl.create_default_context, lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
                        lambda: Mine(), lambda: threading.Thread(target=print).start()):
            try:
                attempt()
            except NotAvailableInProxy as exc:
                assert isinstance(exc, OSError) and isinstance(exc, RuntimeError)
                print(str(exc).split(":")[0])
        print(socket.getfqdn() != "", socket.inet_aton("10.0.0.1").hex())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:5] == ["ssl.create_default_context", "ssl.SSLContext", "socket.socket",
                                          "threading.Thread.start", "True 0a000001"]
