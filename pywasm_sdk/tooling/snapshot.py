"""The pre-initialised memory of a module: read it, find the SDK's anchor in it, clean it, and
write it back as data segments.

Rule of this module: it changes only bytes it can prove unused. componentize-py snapshots the
whole linear memory after importing the plugin; that includes the payload of every block
libc's allocator (dlmalloc) has freed: garbage left by the import machinery and the compiler.
Freed payloads are never read again before being written, so they are zeroed here, and runs of
zeros are left out of the data segments (memory starts zeroed). The allocator's own fields
in a free chunk (its size, its list and tree links) are kept as they are.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from .wasm_module import Data

__all__ = ["Anchor", "AnchorError", "Memory", "free_chunks", "pack"]

_PINUSE = 1
# bytes kept at the start of a free chunk: prev_foot, head, fd, bk; and the tree links (child[2],
# parent, index) of a large chunk, one dlmalloc keeps in a tree bin (MIN_LARGE_SIZE: 256)
_KEEP_SMALL, _KEEP_LARGE, _MIN_LARGE = 16, 32, 256


class AnchorError(ValueError):
    """The snapshot has no anchor of the expected format, or more than one."""


class Memory:
    """The initial contents of linear memory, as the data segments describe them."""

    def __init__(self, datas: list[Data]) -> None:
        if any(d.offset is None for d in datas):
            raise ValueError("passive data segments are not part of the initial memory")
        placed = [(d.offset or 0, d.data) for d in datas]
        self.bytes = bytearray(max((at + len(data) for at, data in placed), default=0))
        for at, data in placed:
            self.bytes[at:at + len(data)] = data

    def u32(self, address: int) -> int:
        value: int = struct.unpack_from("<I", self.bytes, address)[0]
        return value

    def write_u32(self, address: int, value: int) -> None:
        struct.pack_into("<I", self.bytes, address, value)

    def find(self, needle: bytes) -> list[int]:
        found, at = [], self.bytes.find(needle)
        while at >= 0:
            found.append(at)
            at = self.bytes.find(needle, at + 1)
        return found


@dataclass
class Anchor:
    """What pywasm_sdk/_bridge.py left in memory for the linker."""

    address: int
    entries: list[int]  # PyObject* per ABI callback, 0 for callbacks not exported
    bind: int
    context_entries: list[int]  # PyObject* of _bridge.CONTEXT_ENTRIES, in that order
    flags: int  # _bridge.EAGER_DELETE
    raw_count: int
    modules: list[str]  # builtin modules the plugin uses
    area: int  # address of the reserved area
    area_size: int

    @classmethod
    def find(cls, memory: Memory, magic: bytes, fmt: int, callbacks: int, context_entries: int) -> Anchor:
        candidates = []
        fixed = callbacks + 1 + context_entries + 4  # bind, context entries, flags, raw_count, sizes
        for at in memory.find(magic):
            p = at + len(magic)
            if p + 8 > len(memory.bytes) or memory.u32(p) != fmt or memory.u32(p + 4) != callbacks:
                continue
            words = list(struct.unpack_from(f"<{fixed}I", memory.bytes, p + 8))
            entries, bind = words[:callbacks], words[callbacks]
            contexts = words[callbacks + 1:callbacks + 1 + context_entries]
            flags, raw_count, area_size, names_size = words[callbacks + 1 + context_entries:]
            names_at = p + 8 + 4 * fixed
            names = bytes(memory.bytes[names_at:names_at + names_size]).rstrip(b"\0").decode()
            candidates.append(cls(at, entries, bind, contexts, flags, raw_count,
                                  [n for n in names.split(",") if n], names_at + names_size, area_size))
        if len(candidates) != 1:
            raise AnchorError(f"expected one pywasm anchor (format {fmt}) in the snapshot, found "
                              f"{len(candidates)}: was the plugin built through the generated entry module?")
        return candidates[0]


def free_chunks(memory: Memory, heap_base: int, memory_size: int) -> list[tuple[int, int]]:
    """(address, size) of every free dlmalloc chunk between heap_base and the end of memory.

    The walk must go from chunk to chunk up to the top chunk, the last one in the snapshot, which
    ends inside linear memory (``memory_size`` bytes); anything else means the heap is not laid
    out as assumed, and nothing is returned.
    """
    data = memory.bytes
    end = len(data)
    p = heap_base
    while (p + 8) % 16:
        p += 1
    chunks: list[tuple[int, int]] = []
    while p + 8 <= end:
        size = struct.unpack_from("<I", data, p + 4)[0] & ~7
        if size < 16 or size % 8:
            return []
        nxt = p + size
        if nxt + 8 > end:
            # the top chunk: free space up to the end of dlmalloc's segment, whose record
            # follows it (kept); the walk covered the whole heap without a gap
            if nxt > memory_size:
                return []
            chunks.append((p, size))
            return chunks
        if not struct.unpack_from("<I", data, nxt + 4)[0] & _PINUSE:
            chunks.append((p, size))
        p = nxt
    return chunks if p == end else []


def zero_free(memory: Memory, chunks: list[tuple[int, int]]) -> int:
    """Zero the payload of free chunks (keeping the allocator's fields); bytes zeroed."""
    zeroed = 0
    end = len(memory.bytes)  # the top chunk reaches past the last initialised byte
    for p, size in chunks:
        keep = _KEEP_LARGE if size >= _MIN_LARGE else _KEEP_SMALL
        start, stop = p + keep, min(p + size, end)
        if stop > start:
            zeroed += stop - start
            memory.bytes[start:stop] = bytes(stop - start)
    return zeroed


def pack(memory: Memory, gap: int = 64) -> list[Data]:
    """Data segments for the memory's non-zero bytes; zero runs of ``gap`` bytes or more split
    segments (a segment costs about 7 bytes of encoding; few segments keep instantiation cheap)."""
    data = bytes(memory.bytes)
    segments: list[Data] = []
    start = 0
    for zeros in re.finditer(rb"\0{%d,}" % gap, data):
        _add(segments, data, start, zeros.start())
        start = zeros.end()
    _add(segments, data, start, len(data))
    return segments


def _add(segments: list[Data], data: bytes, start: int, end: int) -> None:
    while start < end and data[start] == 0:
        start += 1
    while end > start and data[end - 1] == 0:
        end -= 1
    if start < end:
        segments.append(Data(start, data[start:end]))
