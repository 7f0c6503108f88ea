"""Test proxy-wasm plugins without Envoy: a mock host with Envoy's semantics, for pytest.

The same plugin runs two ways under one host state machine, and a test can check both agree::

    from pywasm_sdk.testing import MockHost

    def test_adds_header():
        with MockHost.from_plugin("examples/http_headers", plugin_config="x-a=1") as host:
            stream = host.http_stream()
            stream.send_request_headers({":method": "GET", ":path": "/", ":authority": "x"})
            stream.send_response_headers({":status": "200"})
            assert ("x-a", "1") in stream.response_headers

``MockHost.from_wasm("plugin.wasm", ...)`` runs the very .wasm that ships, in wasmtime, with every
``env.proxy_*`` import and the WASI functions Envoy provides; ``MockHost.from_plugin(path)`` runs
the plugin's Python in this process (fast, debuggable). With pytest, the ``mock_host`` fixture
(:mod:`.pytest_plugin`) builds, caches and closes hosts for you.

Module map: :mod:`.host` answers hostcalls (:class:`HostState`), :mod:`.mock` drives callbacks
(:class:`MockHost`), :mod:`.streams` are HTTP streams and TCP connections, :mod:`.calls` the
HTTP/gRPC calls a test answers, :mod:`.wasm`/:mod:`.wasi`/:mod:`.cache` run modules in wasmtime,
:mod:`.native` runs Python natively, :mod:`.scripted` runs raw-ABI scripts, :mod:`.errors` is the
exception tree.
"""

from .._abi import Action, LogLevel, MetricType, PeerType
from .cache import ModuleCache
from .calls import GrpcCall, GrpcStream, HttpCall
from .errors import (HostMisuseError, MockHostError, PluginLoadError, PluginTrap, UnsupportedByMockHost,
                     VmFailedError)
from .guest import Guest
from .host import KNOWN_FILTER_STATE_KEYS, HostConfig, HostState
from .mock import MockHost
from .native import NativeGuest
from .records import LocalResponse, LogRecord, Logs, Metric, Metrics
from .scripted import ScriptedGuest
from .shared import SharedData, SharedQueues, SharedStore
from .streams import HttpStream, TcpConnection
from .wasm import WasmGuest

__all__ = [
    "Action", "Guest", "GrpcCall", "GrpcStream", "HostConfig", "HostMisuseError", "HostState",
    "HttpCall", "HttpStream", "KNOWN_FILTER_STATE_KEYS", "LocalResponse", "LogLevel", "LogRecord",
    "Logs", "Metric", "MetricType", "Metrics", "MockHost", "MockHostError", "ModuleCache",
    "NativeGuest", "PeerType", "PluginLoadError", "PluginTrap", "ScriptedGuest", "SharedData", "SharedQueues",
    "SharedStore", "TcpConnection", "UnsupportedByMockHost", "VmFailedError", "WasmGuest",
]
