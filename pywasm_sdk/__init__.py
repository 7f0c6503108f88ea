"""pywasm-sdk: write Envoy and Istio proxy-wasm filters in Python.

A plugin module subclasses the contexts and registers its root::

    from pywasm_sdk import HttpContext, register

    class AddHeader(HttpContext):
        def on_response_headers(self, num_headers, end_of_stream):
            self.response_headers.add("x-hello", "from Python")

    register(http=AddHeader)

and ``pywasm build plugin.py -o plugin.wasm`` turns it into a module Envoy loads. Everything a
plugin needs is importable from here; the submodules are implementation detail unless named
in the docs. This package is compiled into every plugin: it imports no tooling.
"""

from . import log
from ._abi import (ABI_VERSION, Action, BufferType, LogLevel, MapType, MetricType, PeerType,
                   Status, StreamType)
from ._dispatch import register
from .contexts import Context, HttpContext, RootContext, StreamContext
from .errors import (BadArgument, CasMismatch, ConfigurationError, HostCallError, NoHostError,
                     NotFound, ParseFailure, PyWasmError, Unimplemented)
from .http import Buffer, HeaderMap
from .properties import get_property, get_property_str, set_property

__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION", "Action", "BadArgument", "Buffer", "BufferType", "CasMismatch",
    "ConfigurationError", "Context", "HeaderMap", "HostCallError", "HttpContext", "LogLevel",
    "MapType", "MetricType", "NoHostError", "NotFound", "ParseFailure", "PeerType",
    "PyWasmError", "RootContext", "Status", "StreamContext", "StreamType", "Unimplemented",
    "get_property", "get_property_str", "log", "register", "set_property",
]
