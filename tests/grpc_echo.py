"""A real gRPC server (grpcio) on 127.0.0.1 for the plugins' gRPC calls: the service
``pywasm.test.Echo`` of tests/plugins/grpc_client/echo_messages.py.

It records every call it gets (method, metadata, requests, the deadline it was given) and when
the call ended and how (``ended``, ``cancelled``), so a test can see what Envoy really sent and
whether a cancellation or a deadline reached the server.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from .conftest import PLUGINS

_spec = importlib.util.spec_from_file_location("echo_messages", PLUGINS / "grpc_client" / "echo_messages.py")
messages: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(messages)
Hello, Reply, SERVICE = messages.Hello, messages.Reply, messages.SERVICE

#: how long Hang waits before giving up by itself (a test never waits that long)
HANG_LIMIT = 30.0


@dataclass
class Call:
    method: str
    metadata: dict[str, str]
    deadline: float | None  # seconds left when the call arrived; None: no deadline
    requests: list[Any] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    finished: bool = False  # the handler got to its end
    cancelled: bool = False  # the call ended before the handler did: cancel, reset or deadline

    def wait_ended(self, timeout: float = 10.0) -> bool:
        return self.ended.wait(timeout)


class EchoServer:
    """``with EchoServer() as server:`` serves on ``server.address`` until the block ends."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="grpc-echo"))
        unary = dict(request_deserializer=Hello.FromString, response_serializer=Reply.SerializeToString)
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary, **unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream, **unary),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat, **unary),
            "Hang": grpc.unary_unary_rpc_method_handler(self._hang, **unary),
            "HangStream": grpc.unary_stream_rpc_method_handler(self._hang_stream, **unary),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = ("127.0.0.1", self.port)

    # -- bookkeeping ---------------------------------------------------------------------------

    def _record(self, method: str, context: grpc.ServicerContext) -> Call:
        call = Call(method, {k: v for k, v in context.invocation_metadata() if isinstance(v, str)},
                    context.time_remaining())

        def done() -> None:
            call.cancelled = not call.finished
            call.ended.set()

        context.add_callback(done)
        with self._lock:
            self.calls.append(call)
        return call

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for_call(self, method: str, timeout: float = 10.0) -> Call:
        deadline = time.monotonic() + timeout
        while not (found := self.calls_to(method)):
            if time.monotonic() > deadline:
                raise AssertionError(f"the server never got a call to {method}; it got "
                                     f"{[c.method for c in self.calls]}")
            time.sleep(0.02)
        return found[-1]

    # -- the methods ---------------------------------------------------------------------------

    def _unary(self, request: Any, context: grpc.ServicerContext) -> Any:
        call = self._record("Unary", context)
        call.requests.append(request)
        context.send_initial_metadata((("x-server", "grpcio"), ("x-echo-client", call.metadata.get("x-client", ""))))
        context.set_trailing_metadata((("x-served-requests", "1"),))
        call.finished = True
        return Reply(text=f"hello {request.name}", index=0)

    def _server_stream(self, request: Any, context: grpc.ServicerContext) -> Any:
        call = self._record("ServerStream", context)
        call.requests.append(request)
        context.send_initial_metadata((("x-server", "grpcio"),))
        context.set_trailing_metadata((("x-sent", str(request.count)),))
        for i in range(request.count):
            yield Reply(text=f"{request.name} #{i}", index=i)
        call.finished = True

    def _chat(self, requests: Any, context: grpc.ServicerContext) -> Any:
        call = self._record("Chat", context)
        for i, request in enumerate(requests):
            call.requests.append(request)
            yield Reply(text=request.name.upper(), index=i)
        call.finished = True

    def _hang(self, request: Any, context: grpc.ServicerContext) -> Any:
        call = self._record("Hang", context)
        call.requests.append(request)
        call.ended.wait(HANG_LIMIT)  # set by the termination callback: cancel, deadline, stop
        context.abort(grpc.StatusCode.ABORTED, "Hang gave up waiting")

    def _hang_stream(self, request: Any, context: grpc.ServicerContext) -> Any:
        call = self._record("HangStream", context)
        call.requests.append(request)
        yield Reply(text=f"first for {request.name}", index=0)
        call.ended.wait(HANG_LIMIT)

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> EchoServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # cancels what is still running: the termination callbacks release Hang's waits
        self._server.stop(grace=None).wait(10)
