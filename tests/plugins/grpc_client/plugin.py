"""gRPC calls and streams from a plugin to a real grpcio server, through Envoy's "echo-grpc" cluster.

Messages are built and parsed inside the proxy by protobuf's pure-Python runtime
(echo_messages.py). Every request is answered by the plugin itself with a JSON body:

/unary/NAME              unary call with metadata; {"text", "initial", "trailing", "protobuf"}
/unary-as-stream/NAME    the same method opened as a stream, for the server's metadata
/server-stream/NAME/N    server streaming: {"texts", "initial", "trailing", "status"}
/chat/A,B,C              bidirectional: sends A, and the next word after each reply; then half-closes
/cancel-stream           opens HangStream, cancels it after its first reply: {"first", "closed"}
/deadline/MS             unary Hang with a timeout of MS ms: 504 {"status", "message"}
/hang                    unary Hang without answer until the client goes away
"""

import json

from google.protobuf.internal import api_implementation

from echo_messages import SERVICE, Hello, Reply
from pywasm_sdk import Action, GrpcCallError, GrpcStreamHandler, HttpContext, log, register

CLUSTER = "echo-grpc"


def _answer(ctx, status, payload):
    ctx.send_local_response(status, json.dumps(payload, sort_keys=True) + "\n",
                            headers={"content-type": "application/json"})


class Collect(GrpcStreamHandler):
    """Gathers what a stream sends back; answers the HTTP request when it closes."""

    def __init__(self, ctx, next_words=()):
        self.ctx, self.next_words = ctx, list(next_words)
        self.initial, self.trailing, self.texts = [], [], []
        self.stream = None

    def on_initial_metadata(self, metadata):
        self.initial = metadata

    def on_message(self, message):
        self.texts.append(Reply.FromString(message).text)
        if self.next_words:  # the chat: one request per reply, then half-close
            self.stream.send(Hello(name=self.next_words.pop(0)).SerializeToString())
            if not self.next_words:
                self.stream.close()

    def on_trailing_metadata(self, metadata):
        self.trailing = metadata

    def on_close(self, status, message):
        _answer(self.ctx, 200, {"texts": self.texts, "initial": self.initial, "trailing": self.trailing,
                                "status": status, "message": message})


class CancelAfterFirst(GrpcStreamHandler):
    def __init__(self, ctx):
        self.ctx, self.stream, self.closed = ctx, None, None

    def on_message(self, message):
        first = Reply.FromString(message).text
        self.stream.cancel()
        log.info("grpc_client: cancelled the stream after %r", first)
        _answer(self.ctx, 200, {"first": first, "closed": self.closed})

    def on_close(self, status, message):
        self.closed = [status, message]  # Envoy sends no close after a cancel: never runs
        log.warning("grpc_client: a cancelled stream was closed: %d %s", status, message)


class GrpcClient(HttpContext):
    async def on_request_headers(self, num_headers, end_of_stream):
        parts = (self.request_headers.get(":path") or "/").strip("/").split("/")
        kind, args = parts[0], parts[1:]
        if kind == "unary":
            request = Hello(name=args[0], count=1).SerializeToString()
            response = await self.grpc_call(CLUSTER, SERVICE, "Unary", request, timeout=5,
                                            metadata={"x-client": "pywasm", "x-name": args[0]})
            _answer(self, 200, {"text": Reply.FromString(response.message).text,
                                "initial": response.initial_metadata, "trailing": response.trailing_metadata,
                                "protobuf": api_implementation.Type()})
        elif kind == "unary-as-stream":
            handler = Collect(self)
            handler.stream = self.open_grpc_stream(CLUSTER, SERVICE, "Unary", handler,
                                                   metadata={"x-client": "pywasm"})
            handler.stream.send(Hello(name=args[0]).SerializeToString(), end_of_stream=True)
        elif kind == "server-stream":
            handler = Collect(self)
            handler.stream = self.open_grpc_stream(CLUSTER, SERVICE, "ServerStream", handler,
                                                   metadata={"x-client": "pywasm"})
            handler.stream.send(Hello(name=args[0], count=int(args[1])).SerializeToString(), end_of_stream=True)
        elif kind == "chat":
            words = args[0].split(",")
            handler = Collect(self, words[1:])
            handler.stream = self.open_grpc_stream(CLUSTER, SERVICE, "Chat", handler)
            handler.stream.send(Hello(name=words[0]).SerializeToString())
            if len(words) == 1:
                handler.stream.close()
        elif kind == "cancel-stream":
            handler = CancelAfterFirst(self)
            handler.stream = self.open_grpc_stream(CLUSTER, SERVICE, "HangStream", handler)
            handler.stream.send(Hello(name="cancel me").SerializeToString(), end_of_stream=True)
        elif kind == "deadline":
            try:
                await self.grpc_call(CLUSTER, SERVICE, "Hang", Hello(name="late").SerializeToString(),
                                     timeout=int(args[0]) / 1000)
            except GrpcCallError as exc:
                _answer(self, 504, {"status": exc.status, "message": exc.message})
        elif kind == "hang":
            await self.grpc_call(CLUSTER, SERVICE, "Hang", Hello(name="hang").SerializeToString(), timeout=60)
            log.warning("grpc_client: Hang answered")  # it never does
        else:
            return Action.CONTINUE
        return Action.PAUSE


register(http=GrpcClient)
