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

from . import _runtime  # first: the modules below refer to the running runtime
from . import log, properties
from ._abi import (ABI_VERSION, Action, BufferType, LogLevel, MapType, MetricType, PeerType,
                   Status, StreamType)
from ._runtime import register
from .callouts import (GrpcCallError, GrpcResponse, GrpcStream, GrpcStreamHandler, HttpCallError,
                       HttpResponse)
from .contexts import Context, HttpContext, RootContext, StreamContext
from .errors import (BadArgument, CasMismatch, ConfigurationError, HostCallError, NoHostError,
                     NotAvailableInProxy, NotFound, ParseFailure, PyWasmError, Unimplemented)
from .foreign import LifeSpan, call_foreign_function, clear_route_cache, set_envoy_filter_state
from .hostcalls import get_current_time_ns
from .http import Buffer, HeaderMap
from .metrics import Counter, Gauge, Histogram
from .properties import (get_property, get_property_bool, get_property_int, get_property_list,
                         get_property_map, get_property_str, set_property)
from .shared import SharedQueue, SharedValue, get_shared_data, set_shared_data, update_shared_data

__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION", "Action", "BadArgument", "Buffer", "BufferType", "CasMismatch",
    "ConfigurationError", "Context", "Counter", "Gauge", "GrpcCallError", "GrpcResponse",
    "GrpcStream", "GrpcStreamHandler", "HeaderMap", "Histogram", "HostCallError", "HttpCallError",
    "HttpContext", "HttpResponse", "LifeSpan", "LogLevel", "MapType", "MetricType", "NoHostError",
    "NotAvailableInProxy", "NotFound", "ParseFailure", "PeerType", "PyWasmError", "RootContext", "SharedQueue",
    "SharedValue", "Status", "StreamContext", "StreamType", "Unimplemented",
    "call_foreign_function", "clear_route_cache", "get_current_time_ns", "get_property",
    "get_property_bool", "get_property_int", "get_property_list", "get_property_map",
    "get_property_str", "get_shared_data", "log", "properties", "register", "set_envoy_filter_state",
    "set_property", "set_shared_data", "update_shared_data",
]
