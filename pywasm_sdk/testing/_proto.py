"""Just enough of the protobuf wire format for the few messages the host reads and writes.

Envoy takes some arguments as serialized protobuf (``set_envoy_filter_state``'s
``SetEnvoyFilterStateArguments``, gRPC's ``GrpcService``) and answers the ``node`` property with a
serialized ``Node``. Pulling in the protobuf runtime for that would be a heavy dependency for a
test helper, so this module reads and writes the wire format directly: varints, 64-bit fixed
fields and length-delimited fields. Pure functions; :class:`ProtoError` for bytes that are not a
valid message (where Envoy's ``ParseFromString`` returns false).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._protobuf import field_bytes as length_delimited
from .._protobuf import varint  # the SDK's encoder: one writer of the wire format

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class ProtoError(ValueError):
    """Bytes that do not parse as a protobuf message."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint longer than 10 bytes")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field: ints for varint/fixed, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ProtoError("field number 0")
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
            yield number, wire_type, value
        elif wire_type == FIXED64:
            if pos + 8 > len(data):
                raise ProtoError("truncated fixed64")
            yield number, wire_type, int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire_type == LENGTH_DELIMITED:
            size, pos = read_varint(data, pos)
            if pos + size > len(data):
                raise ProtoError("truncated length-delimited field")
            yield number, wire_type, data[pos:pos + size]
            pos += size
        elif wire_type == FIXED32:
            if pos + 4 > len(data):
                raise ProtoError("truncated fixed32")
            yield number, wire_type, int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        else:
            raise ProtoError(f"wire type {wire_type} is not supported")


def parse_strings(data: bytes, numbers: Mapping[int, str]) -> dict[str, Any]:
    """Decode a message whose interesting fields are strings or enums (last occurrence wins).

    ``numbers`` maps field numbers to names. String fields must be UTF-8 (proto3 rejects anything
    else); enum fields come back as ints. Other fields are checked for well-formedness and skipped.
    """
    out: dict[str, Any] = {}
    for number, wire_type, value in fields(data):
        name = numbers.get(number)
        if name is None:
            continue
        if isinstance(value, bytes):
            try:
                out[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtoError(f"field {number} ({name}) is not valid UTF-8") from None
        elif wire_type == VARINT:
            out[name] = value
        else:
            raise ProtoError(f"field {number} ({name}) has wire type {wire_type}")
    return out


# -- writing -------------------------------------------------------------------------------

def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def string_field(number: int, text: str) -> bytes:
    """A string field, omitted when empty (proto3's default)."""
    return length_delimited(number, text.encode("utf-8")) if text else b""


@dataclass(frozen=True)
class Message:
    """A protobuf message as a property value: its serialized bytes plus its fields by name.

    Envoy answers a property that is a message with the serialized message, and walks into it
    by field name for longer paths (``node`` vs ``node.id``).
    """

    serialized: bytes
    fields: Mapping[str, Any]


def struct_value(value: Any) -> bytes:
    """A Python value as a serialized ``google.protobuf.Value``."""
    if value is None:
        return tag(1, VARINT) + varint(0)
    if isinstance(value, bool):
        return tag(4, VARINT) + varint(int(value))
    if isinstance(value, (int, float)):
        return tag(2, FIXED64) + struct.pack("<d", float(value))
    if isinstance(value, str):
        return length_delimited(3, value.encode("utf-8"))
    if isinstance(value, Mapping):
        return length_delimited(5, struct_message(value))
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return length_delimited(6, b"".join(length_delimited(1, struct_value(v)) for v in value))
    raise TypeError(f"a google.protobuf.Value cannot hold {type(value).__name__}")


def struct_message(mapping: Mapping[str, Any]) -> bytes:
    """A mapping as a serialized ``google.protobuf.Struct``."""
    entries = (length_delimited(1, string_field(1, key) + length_delimited(2, struct_value(v)))
               for key, v in mapping.items())
    return b"".join(length_delimited(1, e) for e in entries)


def struct_to_cel(value: Any) -> Any:
    """What Envoy's CEL layer makes of a Struct value: numbers become doubles."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {k: struct_to_cel(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [struct_to_cel(v) for v in value]
    raise TypeError(f"a google.protobuf.Value cannot hold {type(value).__name__}")


def node_message(node_id: str, cluster: str, metadata: Mapping[str, Any]) -> Message:
    """The ``envoy.config.core.v3.Node`` the ``node`` property answers (id=1, cluster=2,
    metadata=3)."""
    serialized = string_field(1, node_id) + string_field(2, cluster)
    if metadata:
        serialized += length_delimited(3, struct_message(metadata))
    return Message(serialized, {"id": node_id, "cluster": cluster,
                                "metadata": struct_to_cel(dict(metadata))})
