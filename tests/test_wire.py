"""The pairs and property-path formats: annotated fixtures, round trips, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywasm_sdk import wire

# {"a": "1", "b": "22"}: count, then (key_len, value_len) per pair, then key\0value\0 per pair
TWO_PAIRS = bytes.fromhex(
    "02000000"          # 2 pairs
    "01000000 01000000" # "a" -> "1"
    "01000000 02000000" # "b" -> "22"
    "61 00 31 00"       # a\0 1\0
    "62 00 32 32 00"    # b\0 22\0
    .replace(" ", "")
)


def test_encode_matches_the_annotated_fixture():
    assert wire.encode_pairs([(b"a", b"1"), (b"b", b"22")]) == TWO_PAIRS


def test_decode_matches_the_annotated_fixture():
    assert wire.decode_pairs(TWO_PAIRS) == [(b"a", b"1"), (b"b", b"22")]


@pytest.mark.parametrize("blob", [b"", b"\0"])
def test_empty_map_forms(blob):
    assert wire.decode_pairs(blob) == []


def test_empty_map_encodes_to_a_zero_count():
    assert wire.encode_pairs([]) == b"\0\0\0\0"


pair_bytes = st.binary(max_size=64)


@given(st.lists(st.tuples(pair_bytes, pair_bytes), max_size=40))
def test_round_trip_arbitrary_bytes(pairs):
    assert wire.decode_pairs(wire.encode_pairs(pairs)) == pairs


@given(st.binary(max_size=200))
def test_decode_never_crashes_on_garbage(blob):
    try:
        pairs = wire.decode_pairs(blob)
    except wire.WireFormatError:
        return
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in pairs)


@pytest.mark.parametrize("blob,reason", [
    (b"\x05\0\0\0", "header bytes"),                         # count larger than the data
    (b"\x01\0\0\0\x01\0\0\0\x01\0\0\0a\x001", "NUL"),         # missing final NUL
    (b"\x01\0\0\0\x01\0\0\0\x01\0\0\0ax1\0", "NUL"),           # key not NUL-terminated
    (b"\x01\0\0", "too short"),
])
def test_decode_rejects_malformed_input(blob, reason):
    with pytest.raises(wire.WireFormatError, match=reason):
        wire.decode_pairs(blob)


def test_encode_refuses_more_pairs_than_the_host_reads():
    with pytest.raises(ValueError, match="at most 1024"):
        wire.encode_pairs([(b"k", b"v")] * 1025)


def test_encode_refuses_more_bytes_than_the_host_reads():
    with pytest.raises(ValueError, match="at most 1048576"):
        wire.encode_pairs([(b"k", b"v" * (1 << 20))])


def test_encode_accepts_the_largest_map_the_host_reads():
    blob = wire.encode_pairs([(b"k", b"v" * ((1 << 20) - 15))])  # 4 count + 8 sizes + k, v, two NULs
    assert len(blob) == 1 << 20


@pytest.mark.parametrize("path,expected", [
    (("source", "address"), b"source\0address"),
    (["request", b"headers", "x-id"], b"request\0headers\0x-id"),
    ("envoy.tcp_proxy.cluster", b"envoy.tcp_proxy.cluster"),  # one segment: dots are kept
    ((), b""),
])
def test_property_paths(path, expected):
    assert wire.encode_path(path) == expected


@given(st.binary())
def test_text_round_trip_preserves_any_bytes(raw):
    assert wire.to_bytes(wire.to_str(raw)) == raw


def test_to_bytes_rejects_other_types():
    with pytest.raises(TypeError, match="expected str or bytes, got int"):
        wire.to_bytes(3)  # type: ignore[arg-type]


@given(st.text())
def test_safe_text_is_always_encodable(text):
    assert isinstance(wire.safe_text(text).encode("utf-8"), bytes)


def test_safe_text_shows_each_undecodable_byte_once():
    assert wire.safe_text(wire.to_str(b"\xff\xfe ok \xc3(")) == "\ufffd\ufffd ok \ufffd("
    assert wire.safe_text("plain") == "plain"
    assert wire.safe_text("\ud800x") == "\ufffd\ufffd\ufffdx"
