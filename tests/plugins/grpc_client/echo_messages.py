"""The messages of the test service ``pywasm.test.Echo``, written by hand with protobuf's
pure-Python runtime (no protoc): a FileDescriptorProto, and classes made from it.

The plugin builds its requests with these classes inside the proxy, and the grpcio test server
(tests/grpc_echo.py) uses the very same module, so both sides agree on the wire format.

    message Hello { string name = 1; int32 count = 2; repeated string words = 3; }
    message Reply { string text = 1; int32 index = 2; }
    service Echo {
      rpc Unary(Hello) returns (Reply);                 // "hello NAME"
      rpc ServerStream(Hello) returns (stream Reply);   // COUNT replies
      rpc Chat(stream Hello) returns (stream Reply);    // one reply per request
      rpc Hang(Hello) returns (Reply);                  // never answers: deadlines, cancellation
      rpc HangStream(Hello) returns (stream Reply);     // one reply, then never ends
    }
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "pywasm.test"
SERVICE = f"{PACKAGE}.Echo"

_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="pywasm_test_echo.proto", package=PACKAGE, syntax="proto3")
    hello = f.message_type.add(name="Hello")
    hello.field.add(name="name", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    hello.field.add(name="count", number=2, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    hello.field.add(name="words", number=3, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED)
    reply = f.message_type.add(name="Reply")
    reply.field.add(name="text", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    reply.field.add(name="index", number=2, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    return f


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())
Hello = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.Hello"))
Reply = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.Reply"))
