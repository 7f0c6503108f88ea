"""pytest fixtures for testing plugins with the mock host.

Enabled through the ``pytest11`` entry point of pywasm-sdk (or ``-p pywasm_sdk.testing.pytest_plugin``).

Fixtures:

``mock_host``
    A factory: ``mock_host(plugin, mode="native" | "wasm", **options) -> MockHost``. ``plugin`` is
    what ``pywasm build`` takes (a .py file or a folder with plugin.py) or a built ``.wasm``;
    ``mode="wasm"`` builds the plugin once per test session. ``options`` are MockHost's
    (``plugin_config``, ``vm_config``, ``root_id``, ``env``, ``clusters``, ``properties``...).
    Every host it made is closed after the test, and the test fails at teardown if the plugin
    dispatched HTTP/gRPC calls that nobody answered (opt out with
    ``@pytest.mark.mock_host(allow_pending_calls=True)``). Native hosts run one at a time per
    process: asking for a second native host closes the test's earlier one.
``host_mode``
    Parametrizes a test over ``"native"`` and ``"wasm"``: request it and pass it as ``mode=`` to
    run the same test both ways (they must agree).
``pywasm_build``
    Session-scoped: ``pywasm_build(plugin) -> Path`` of the built .wasm, built at most once.

Example::

    def test_denies_without_token(mock_host, host_mode):
        host = mock_host("plugin.py", mode=host_mode, clusters=["auth"])
        stream = host.http_stream()
        stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "a"})
        assert stream.local_response.status == 401
"""

from __future__ import annotations

import os
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


class _Builds:
    """Plugin sources built into .wasm files: once per session, and reused across sessions
    while nothing the build depends on changed (the content-hash cache of ``pywasm run``)."""

    def __init__(self) -> None:
        self._built: dict[Path, Path] = {}

    def __call__(self, plugin: str | os.PathLike[str]) -> Path:
        from ..tooling.run import cached_build  # the build toolchain only when a test needs it

        source = Path(plugin).resolve()
        if source not in self._built:
            self._built[source] = cached_build(source, lambda _message: None)[0]
        return self._built[source]


@pytest.fixture(scope="session")
def pywasm_build() -> Callable[[str | os.PathLike[str]], Path]:
    """``pywasm_build(plugin)`` -> the path of the plugin's .wasm, built at most once per session
    (and not again while its sources, the SDK and the tools are unchanged)."""
    return _Builds()


@pytest.fixture(params=MODES)
def host_mode(request: pytest.FixtureRequest) -> str:
    """``"native"`` then ``"wasm"``: a test using it runs once per mode."""
    return request.param


@pytest.fixture
def mock_host(request: pytest.FixtureRequest,
              pywasm_build: Callable[[str | os.PathLike[str]], Path]) -> Iterator[Callable[..., MockHost]]:
    """A factory of MockHosts that closes them after the test (see the module docstring)."""
    hosts: list[MockHost] = []

    def make(plugin: str | os.PathLike[str], *, mode: str = "native", **options: Any) -> MockHost:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        path = Path(plugin)
        if path.suffix == ".wasm":
            host = MockHost.from_wasm(path, **options)
        elif mode == "wasm":
            host = MockHost.from_wasm(pywasm_build(path), **options)
        else:
            # a native plugin holds the SDK's global state: release an earlier one of this test
            for earlier in hosts:
                if earlier.kind == "native":
                    earlier.close()
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
