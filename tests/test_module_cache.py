"""The mock host's compiled-module cache loads only files this user's cache wrote (an HMAC under
a 0600 key file), and recompiles anything else (pywasm_sdk/testing/cache.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat

import pytest
import wasmtime

from pywasm_sdk.testing import ModuleCache
from pywasm_sdk.testing.cache import KEY_FILE

A = wasmtime.wat2wasm('(module (func (export "proxy_on_tick") (param i32)))')
B = wasmtime.wat2wasm('(module (func (export "proxy_on_tick") (param i32)) (func (export "f")))')


def entry(folder, module: bytes):
    [path] = folder.glob(f"wasmtime-*/{hashlib.sha256(module).hexdigest()}.cwasm")
    return path


def loads_from(folder, module: bytes) -> tuple[str, list]:
    cache = ModuleCache(folder)
    cache.load(module)
    return cache.last_source, cache.refused


def test_the_key_is_private_to_the_user(tmp_path):
    ModuleCache(tmp_path).load(A)
    key = tmp_path / KEY_FILE
    info = key.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid() and info.st_size == 32
    secret = key.read_bytes()
    assert loads_from(tmp_path, A) == ("disk", [])  # a later session uses the same key
    assert key.read_bytes() == secret and not list(tmp_path.glob(".key.*"))


def test_a_tampered_entry_is_refused_and_replaced(tmp_path):
    ModuleCache(tmp_path).load(A)
    path = entry(tmp_path, A)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one byte of the compiled code
    path.write_bytes(bytes(data))
    assert loads_from(tmp_path, A) == ("compiled", [path])
    assert path.read_bytes() != bytes(data)
    assert loads_from(tmp_path, A) == ("disk", [])  # the replacement verifies


def test_an_entry_under_another_modules_name_is_refused(tmp_path):
    cache = ModuleCache(tmp_path)
    cache.load(A)
    cache.load(B)
    shutil.copyfile(entry(tmp_path, A), entry(tmp_path, B))  # validly signed, but for A
    source, refused = loads_from(tmp_path, B)
    assert source == "compiled" and refused == [entry(tmp_path, B)]


def test_entries_signed_with_another_key_or_unsigned_are_refused(tmp_path):
    ModuleCache(tmp_path / "theirs").load(A)
    ModuleCache(tmp_path / "mine").load(B)  # makes my key
    theirs = entry(tmp_path / "theirs", A)
    mine = tmp_path / "mine" / theirs.relative_to(tmp_path / "theirs")
    shutil.copyfile(theirs, mine)
    assert loads_from(tmp_path / "mine", A) == ("compiled", [mine])
    # what wasmtime serialized, as an older cache stored it: no HMAC at all
    mine.write_bytes(wasmtime.Module(wasmtime.Engine(), A).serialize())
    assert loads_from(tmp_path / "mine", A) == ("compiled", [mine])


@pytest.mark.parametrize("spoil", ["readable by others", "symbolic link", "wrong size"])
def test_a_key_that_cannot_be_trusted_turns_the_disk_cache_off(tmp_path, spoil):
    key = tmp_path / KEY_FILE
    if spoil == "readable by others":
        key.write_bytes(os.urandom(32))
        key.chmod(0o644)
        expected = "can be read or written by others"
    elif spoil == "symbolic link":
        (tmp_path / "elsewhere").write_bytes(os.urandom(32))
        (tmp_path / "elsewhere").chmod(0o600)
        key.symlink_to(tmp_path / "elsewhere")
        expected = "is a symbolic link"
    else:
        key.write_bytes(b"short")
        key.chmod(0o600)
        expected = "is not a key of 32 bytes"
    with pytest.warns(UserWarning, match=expected):
        source, _ = loads_from(tmp_path, A)
    assert source == "compiled"
    assert not list(tmp_path.glob("wasmtime-*/*.cwasm"))
