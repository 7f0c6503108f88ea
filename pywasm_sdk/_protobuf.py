"""Just enough protobuf encoding for the messages hostcalls take (no protobuf runtime needed).

Wire format: each field is a varint key ``(number << 3) | wire_type`` and a value; strings and
nested messages are length-delimited (wire type 2), enums and ints varints (wire type 0).
"""

from __future__ import annotations


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int32/int64 are sent as 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, value: bytes) -> bytes:
    """A length-delimited field (string, bytes or nested message)."""
    return varint(number << 3 | 2) + varint(len(value)) + value


def field_varint(number: int, value: int) -> bytes:
    """A varint field (int, enum, bool); proto3 omits the default 0."""
    return varint(number << 3) + varint(value) if value else b""
