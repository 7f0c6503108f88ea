"""Reading and writing a wasm instance's linear memory, with Envoy's bounds rules.

Envoy's ``getMemory``/``setWord`` refuse any access outside the memory (the hostcall then answers
INVALID_MEMORY_ACCESS, or WASI's EFAULT) instead of trapping; :class:`GuestMemory` mirrors that:
readers return None and writers False out of bounds. Little-endian, 32-bit pointers.
"""

from __future__ import annotations

import struct

import wasmtime

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class GuestMemory:
    """The exported memory of one instance, bound to its store."""

    __slots__ = ("_memory", "_store")

    def __init__(self, memory: wasmtime.Memory, store: wasmtime.Store) -> None:
        self._memory = memory
        self._store = store

    @property
    def size(self) -> int:
        """Bytes of linear memory (a multiple of 64 KiB pages): what a leak makes grow."""
        return self._memory.data_len(self._store)

    def _fits(self, ptr: int, size: int) -> bool:
        return 0 <= ptr and 0 <= size and ptr + size <= self._memory.data_len(self._store)

    def read(self, ptr: int, size: int) -> bytes | None:
        """``size`` bytes at ``ptr``; None when out of bounds."""
        if size == 0:
            return b""
        if not self._fits(ptr, size):
            return None
        return bytes(self._memory.read(self._store, ptr, ptr + size))

    def write(self, ptr: int, data: bytes) -> bool:
        if not data:
            return self._fits(ptr, 0)
        if not self._fits(ptr, len(data)):
            return False
        self._memory.write(self._store, data, ptr)
        return True

    def read_u32(self, ptr: int) -> int | None:
        raw = self.read(ptr, 4)
        return None if raw is None else _U32.unpack(raw)[0]

    def write_u32(self, ptr: int, value: int) -> bool:
        return self.write(ptr, _U32.pack(value & 0xFFFFFFFF))

    def write_u64(self, ptr: int, value: int) -> bool:
        return self.write(ptr, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))
