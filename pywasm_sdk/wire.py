"""The byte formats proxy-wasm uses to pass structured values: pure functions, no host.

Pairs (header maps, trailers, gRPC metadata, maps and lists of properties), little-endian::

    u32 N | N x (u32 key_len, u32 value_len) | N x (key bytes, 0x00, value bytes, 0x00)

A property path is its segments joined with 0x00 (no trailing 0x00).
"""

from __future__ import annotations

import struct

from ._abi import PAIRS_MAX_BYTES, PAIRS_MAX_COUNT

Pairs = list[tuple[bytes, bytes]]

_U32 = struct.Struct("<I")


class WireFormatError(ValueError):
    """Bytes that do not follow the pairs format."""


def encode_pairs(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Serialize (key, value) byte pairs.

    Raises ValueError for more pairs or bytes than the host accepts (it would silently read an
    oversized map as empty).
    """
    if len(pairs) > PAIRS_MAX_COUNT:
        raise ValueError(f"{len(pairs)} pairs: the host accepts at most {PAIRS_MAX_COUNT}")
    sizes = [len(pairs).to_bytes(4, "little")]
    data: list[bytes] = []
    for key, value in pairs:
        sizes.append(struct.pack("<II", len(key), len(value)))
        data += (key, b"\0", value, b"\0")
    blob = b"".join(sizes) + b"".join(data)
    if len(blob) > PAIRS_MAX_BYTES:
        raise ValueError(f"{len(blob)} bytes of pairs: the host accepts at most {PAIRS_MAX_BYTES}")
    return blob


def decode_pairs(blob: bytes) -> Pairs:
    """Parse the pairs format; empty input (or a lone 0x00) is an empty map."""
    if len(blob) <= 1:
        return []
    if len(blob) < 4:
        raise WireFormatError(f"pairs: {len(blob)} bytes is too short for a count")
    (count,) = _U32.unpack_from(blob, 0)
    header_end = 4 + 8 * count
    if header_end > len(blob):
        raise WireFormatError(f"pairs: {count} pairs need {header_end} header bytes, have {len(blob)}")
    sizes = struct.unpack_from(f"<{2 * count}I", blob, 4)
    pairs, pos = [], header_end
    for i in range(count):
        klen, vlen = sizes[2 * i], sizes[2 * i + 1]
        end = pos + klen + vlen + 2
        if end > len(blob) or blob[pos + klen] != 0 or blob[end - 1] != 0:
            raise WireFormatError(f"pairs: pair {i} does not fit or lacks its NUL terminators")
        pairs.append((blob[pos : pos + klen], blob[pos + klen + 1 : end - 1]))
        pos = end
    return pairs


def encode_path(path: str | bytes | tuple[str | bytes, ...] | list[str | bytes]) -> bytes:
    """A property path: ("source", "address") -> b"source\\0address".

    A plain str or bytes is one segment: names such as "envoy.tcp_proxy.cluster" contain dots.
    """
    if isinstance(path, (str, bytes)):
        return to_bytes(path)
    return b"\0".join(to_bytes(s) for s in path)


def to_bytes(value: str | bytes) -> bytes:
    """str -> UTF-8 (lone surrogates from surrogateescape decoding go back to their bytes)."""
    # on every header a plugin writes: exact types first, and the plain encode, which is
    # about half the cost of one naming an error handler (measured in wasm instructions)
    cls = value.__class__
    if cls is bytes:
        return value  # type: ignore[return-value]
    if cls is str:
        try:
            return value.encode()  # type: ignore[union-attr]
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape")  # type: ignore[union-attr]
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def check_int(value: object, what: str, low: int, high: int) -> int:
    """``value`` if it is an int in [low, high]; else TypeError (a float, a str...) or ValueError.

    The host's integer parameters are fixed-width: a value the bindings cannot convert would
    trap the VM, so the SDK's wrappers check first and the plugin gets an exception it can catch.
    """
    if value.__class__ is not int and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"{what} takes an int, not {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what}: {value} is out of range ({low} to {high})")
    return value


def safe_text(value: str) -> str:
    """A str that is valid Unicode, for hostcall parameters typed ``string``.

    componentize-py aborts the whole VM (a Rust panic, not a Python exception) when asked to
    pass a str containing lone surrogates, which is what ``to_str`` makes of bytes that are not
    UTF-8. Here each byte that was not UTF-8 becomes one U+FFFD, as a plain decode would show
    it; ASCII text is returned as is.
    """
    if value.isascii():
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that did not come from bytes
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def to_str(value: bytes) -> str:
    """UTF-8 -> str; bytes that are not UTF-8 survive as surrogates (see to_bytes)."""
    return value.decode("utf-8", "surrogateescape")
