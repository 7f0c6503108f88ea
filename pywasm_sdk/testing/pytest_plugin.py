"""pytest fixtures for testing plugins with the mock host.

Enabled through the ``pytest11`` entry point of pywasm-sdk (or ``-p pywasm_sdk.testing.pytest_plugin``).

Fixtures:

``mock_host``
    A factory: ``mock_host(plugin, mode="native" | "wasm", **options) -> MockHost``. ``plugin`` is
    what ``pywasm build`` takes (a .py file or a folder with plugin.py) or a built ``.wasm``; a
    relative path is relative to the test file's folder (not the working directory);
    ``mode="wasm"`` builds the plugin once per test session. ``options`` are MockHost's
    (``plugin_config``, ``vm_config``, ``root_id``, ``env``, ``clusters``, ``properties``...).
    Every host it made is closed after the test, and the test fails at teardown if the plugin
    dispatched HTTP/gRPC calls that nobody answered (opt out with
    ``@pytest.mark.mock_host(allow_pending_calls=True)``). A test may hold several hosts at
    once, native and wasm, of one plugin or of several.
``host_mode``
    Parametrizes a test over ``"native"`` and ``"wasm"``: request it and pass it as ``mode=`` to
    run the same test both ways (they must agree).
``pywasm_build``
    Session-scoped: ``pywasm_build(plugin, **build_options) -> Path`` of the built .wasm, built at
    most once (``build_options``: the keyword options of ``pywasm_sdk.tooling.build.build``); a
    relative ``plugin`` is relative to the folder of the file whose code calls it.

Example::

    def test_denies_without_token(mock_host, host_mode):
        host = mock_host("plugin.py", mode=host_mode, clusters=["auth"])
        stream = host.http_stream()
        stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"})
        assert stream.local_response.status == 401
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .mock import MockHost

__all__ = ["host_mode", "mock_host", "pywasm_build"]

MODES = ("native", "wasm")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mock_host(allow_pending_calls=False): options of the mock_host fixture; "
        "allow_pending_calls=True accepts HTTP/gRPC calls left unanswered at the end of the test",
    )


def _beside(file: str | os.PathLike[str] | None, plugin: str | os.PathLike[str]) -> Path:
    """``plugin`` as given when absolute, else relative to the folder of ``file`` (the test
    file), so a test finds its plugin whatever folder pytest was started from."""
    path = Path(plugin)
    if path.is_absolute() or file is None:
        return path
    return Path(file).resolve().parent / path


class _Builds:
    """Plugin sources built into .wasm files: once per session, and reused across sessions
    while nothing the build depends on changed (the content-hash cache of ``pywasm run``)."""

    def __init__(self) -> None:
        self._built: dict[tuple[Path, tuple[tuple[str, Any], ...]], Path] = {}

    def __call__(self, plugin: str | os.PathLike[str], **options: Any) -> Path:
        from ..tooling.build_cache import cached_build  # the build toolchain only when a test needs it

        # relative to the file that names it (a test module, a conftest), not the working directory
        source = _beside(sys._getframe(1).f_globals.get("__file__"), plugin).resolve()
        key = (source, tuple(sorted(options.items())))
        if key not in self._built:
            self._built[key] = cached_build(source, lambda _message: None, **options)[0]
        return self._built[key]


@pytest.fixture(scope="session")
def pywasm_build() -> Callable[..., Path]:
    """``pywasm_build(plugin, **build_options)`` -> the path of the plugin's .wasm, built at most
    once per session (and not again while the modules it imports, the SDK, the tools and the
    options are unchanged: the build cache, see docs/workflow.md)."""
    return _Builds()


@pytest.fixture(params=MODES)
def host_mode(request: pytest.FixtureRequest) -> str:
    """``"native"`` then ``"wasm"``: a test using it runs once per mode."""
    return str(request.param)


@pytest.fixture
def mock_host(request: pytest.FixtureRequest,
              pywasm_build: Callable[[str | os.PathLike[str]], Path]) -> Iterator[Callable[..., MockHost]]:
    """A factory of MockHosts that closes them after the test (see the module docstring)."""
    hosts: list[MockHost] = []

    def make(plugin: str | os.PathLike[str], *, mode: str = "native", **options: Any) -> MockHost:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        path = _beside(request.path, plugin)
        if path.suffix == ".wasm":
            host = MockHost.from_wasm(path, **options)
        elif mode == "wasm":
            host = MockHost.from_wasm(pywasm_build(path), **options)
        else:
            host = MockHost.from_plugin(path, **options)
        hosts.append(host)
        return host

    yield make

    for host in hosts:
        host.close()
    marker = request.node.get_closest_marker("mock_host")
    allow_pending = bool(marker and marker.kwargs.get("allow_pending_calls"))
    pending = [call for host in hosts for call in host.pending_calls()]
    if pending and not allow_pending:
        listed = "\n  ".join(repr(call) for call in pending)
        pytest.fail(f"the plugin dispatched calls the test never answered:\n  {listed}\nanswer them "
                    "(call.respond(...), .fail(), .timeout()) or mark the test "
                    "@pytest.mark.mock_host(allow_pending_calls=True)", pytrace=False)
