"""HTTP calls, gRPC calls and gRPC streams a plugin started, for the test to answer.

A plugin's ``proxy_http_call`` / ``proxy_grpc_call`` / ``proxy_grpc_stream`` is recorded here as
Envoy would send it; nothing is sent anywhere. The test then answers (``respond``), fails or
times out the call, and the host delivers the outcome to the plugin's ROOT context the way Envoy
does (``proxy_on_http_call_response``, ``proxy_on_grpc_*``). Answer a call only from the test,
never from inside a callback, and only once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..wire import to_str
from ._state import HeaderInput, normalize_pairs
from .errors import HostMisuseError

__all__ = ["GrpcCall", "GrpcStream", "HttpCall"]

class CallAnswerer(Protocol):
    """The host side that delivers answers to the plugin (the MockHost)."""

    def _answer_http_call(self, call: HttpCall, headers: list[tuple[bytes, bytes]] | None,
                          body: bytes, trailers: list[tuple[bytes, bytes]] | None) -> None: ...

    def _answer_grpc(self, token: int, event: str, payload: object, status: int = 0,
                     message: str = "") -> None: ...


def _text_pairs(pairs: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(to_str(k), to_str(v)) for k, v in pairs]


@dataclass(eq=False)
class HttpCall:
    """An HTTP call a plugin dispatched (``proxy_http_call``), as Envoy would send it.

    ``headers`` are the request headers as (str, str) pairs with names lower-cased, plus the
    ``content-length`` Envoy adds when there is a body. ``context_id`` is the context whose
    callback dispatched it; the answer goes to ``root_context_id`` (Envoy's rule).
    ``state``: ``"pending"``, ``"answered"``, ``"failed"``, ``"timed out"``, ``"refused"`` (connection_failure).
    """

    token: int
    cluster: str
    headers_bytes: list[tuple[bytes, bytes]]
    body: bytes
    trailers_bytes: list[tuple[bytes, bytes]]
    timeout_ms: int
    context_id: int
    root_context_id: int
    _host: CallAnswerer = field(repr=False)
    state: str = "pending"

    @property
    def headers(self) -> list[tuple[str, str]]:
        return _text_pairs(self.headers_bytes)

    @property
    def trailers(self) -> list[tuple[str, str]]:
        return _text_pairs(self.trailers_bytes)

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def header(self, name: str) -> str | None:
        """The first value of a request header of the call, or None."""
        key = name.lower().encode()
        return next((to_str(v) for k, v in self.headers_bytes if k == key), None)

    @property
    def method(self) -> str | None:
        return self.header(":method")

    @property
    def path(self) -> str | None:
        return self.header(":path")

    @property
    def authority(self) -> str | None:
        return self.header(":authority")

    def _check(self) -> None:
        if self.state != "pending":
            raise HostMisuseError(f"HTTP call {self.token} to {self.cluster!r} was already {self.state}; "
                                  "Envoy delivers one outcome per call")

    def respond(self, status: int = 200, headers: HeaderInput = None, body: bytes | str = b"",
                trailers: HeaderInput = None) -> None:
        """The upstream answers: the plugin's root gets ``proxy_on_http_call_response`` with
        ``:status`` plus ``headers``, ``body`` and ``trailers`` readable during that callback."""
        self._check()
        pairs = [(b":status", str(int(status)).encode())] + normalize_pairs(headers)
        self.state = "answered"
        self._host._answer_http_call(self, pairs, body.encode() if isinstance(body, str) else bytes(body),
                                     normalize_pairs(trailers) or None)

    def fail(self) -> None:
        """The call fails (connection reset): the callback sees 0 headers, and ``proxy_get_status``
        answers BROKEN_CONNECTION with message ``"reset"``, as in Envoy."""
        self._check()
        self.state = "failed"
        self._host._answer_http_call(self, None, b"", None)

    def timeout(self) -> None:
        """The call times out: Envoy's router answers it with a local 504 "upstream request
        timeout", which is what the plugin receives."""
        self._envoy_reply("timed out", 504, b"upstream request timeout")

    def connection_failure(self) -> None:
        """Nothing listens at the cluster's address (the service is down): Envoy's router answers
        the call with its local 503 "upstream connect error or disconnect/reset before headers.
        reset reason: remote connection failure", which is what the plugin receives."""
        self._envoy_reply("refused", 503, b"upstream connect error or disconnect/reset "
                          b"before headers. reset reason: remote connection failure")

    def _envoy_reply(self, state: str, status: int, body: bytes) -> None:
        """An answer Envoy's router makes itself (no ``date`` header: no upstream sent it)."""
        self._check()
        self.state = state
        headers = [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode()),
                   (b"content-type", b"text/plain")]
        self._host._answer_http_call(self, headers, body, None)


@dataclass(eq=False)
class GrpcCall:
    """A unary gRPC call (``proxy_grpc_call``).

    ``cluster`` is the cluster the call goes to (from the cluster name or the ``GrpcService``
    proto the plugin passed). Answer with ``respond(message)``, ``fail(status, message)`` or
    ``timeout()``; ``state`` is ``"pending"``, ``"answered"``, ``"failed"`` or ``"cancelled"``
    (the plugin cancelled or closed it).
    """

    token: int
    cluster: str
    service: bytes
    service_name: str
    method: str
    metadata_bytes: list[tuple[bytes, bytes]]
    message: bytes
    timeout_ms: int
    context_id: int
    root_context_id: int
    _host: CallAnswerer = field(repr=False)
    state: str = "pending"

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return _text_pairs(self.metadata_bytes)

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def _check(self) -> None:
        if self.state != "pending":
            raise HostMisuseError(f"gRPC call {self.token} ({self.service_name}/{self.method}) was "
                                  f"already {self.state}")

    def respond(self, message: bytes = b"") -> None:
        """The call succeeds: the root gets ``proxy_on_grpc_receive`` with ``message`` in the
        GRPC_RECEIVE_BUFFER (Envoy sends no close callback for a successful unary call)."""
        self._check()
        self.state = "answered"
        self._host._answer_grpc(self.token, "message", bytes(message))

    def fail(self, status: int = 14, message: str = "") -> None:
        """The call fails with a gRPC status (default 14 UNAVAILABLE): ``proxy_on_grpc_close``."""
        self._check()
        self.state = "failed"
        self._host._answer_grpc(self.token, "close", None, status, message)

    def timeout(self) -> None:
        """The deadline passes: Envoy's router answers 504, which gRPC maps to 14 UNAVAILABLE
        (not 4 DEADLINE_EXCEEDED) with the message "upstream request timeout{response_timeout}"
        (Envoy 1.40's text, checked against a grpcio server in tests/test_e2e_grpc.py)."""
        self.fail(14, "upstream request timeout{response_timeout}")


@dataclass(eq=False)
class GrpcStream:
    """A gRPC stream (``proxy_grpc_stream``): what the plugin sent, and methods to answer.

    ``sent`` holds the messages the plugin sent (``proxy_grpc_send``), ``local_closed`` is true
    after it half-closed (``proxy_grpc_close`` or a send with end_of_stream), ``state`` is
    ``"open"``, ``"closed"`` (the test closed it) or ``"cancelled"`` (the plugin reset it).
    """

    token: int
    cluster: str
    service: bytes
    service_name: str
    method: str
    metadata_bytes: list[tuple[bytes, bytes]]
    context_id: int
    root_context_id: int
    _host: CallAnswerer = field(repr=False)
    sent: list[bytes] = field(default_factory=list)
    local_closed: bool = False
    remote_closed: bool = False
    state: str = "open"

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return _text_pairs(self.metadata_bytes)

    def _check(self) -> None:
        if self.state != "open" or self.remote_closed:
            raise HostMisuseError(f"gRPC stream {self.token} ({self.service_name}/{self.method}) is "
                                  f"{'closed by the test' if self.remote_closed else self.state}")

    def send_initial_metadata(self, metadata: HeaderInput) -> None:
        """The server sends initial metadata: ``proxy_on_grpc_receive_initial_metadata``."""
        self._check()
        self._host._answer_grpc(self.token, "initial_metadata", normalize_pairs(metadata))

    def send_message(self, message: bytes) -> None:
        """The server sends a message: ``proxy_on_grpc_receive``."""
        self._check()
        self._host._answer_grpc(self.token, "message", bytes(message))

    def send_trailing_metadata(self, metadata: HeaderInput) -> None:
        """The server sends trailing metadata: ``proxy_on_grpc_receive_trailing_metadata``."""
        self._check()
        self._host._answer_grpc(self.token, "trailing_metadata", normalize_pairs(metadata))

    def close(self, status: int = 0, message: str = "") -> None:
        """The server closes the stream with a gRPC status: ``proxy_on_grpc_close``."""
        self._check()
        self.remote_closed = True
        self._host._answer_grpc(self.token, "close", None, status, message)
