"""Function bodies, read instruction by instruction: what a body refers to, and the same body
with its indices renumbered.

Rule of this module: it decodes the instruction set the pinned toolchain emits (the MVP,
sign-extension, saturating truncation, bulk memory, reference types, tail calls, typed select,
multi-value blocks) and raises :class:`CodeError` naming any other opcode, so a new compiler
feature stops the build with a clear message instead of producing a wrong module.

Walking 6 MB of code takes well under a second in CPython: one pass finds everything the linker
needs (calls, function references, the constants added to globals that are how position-
independent code takes the address of a function or a static variable), a second pass rewrites
only the immediates whose index changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .wasm_module import encode_uleb

__all__ = ["CodeError", "Facts", "body_start", "facts", "rewrite", "straight_line_stores"]


class CodeError(ValueError):
    """A function body uses an instruction this decoder does not know."""


# immediate kinds
_NONE, _IDX, _MEMARG, _BLOCK, _I32, _I64, _F32, _F64, _BRTABLE, _INDIRECT, _SELECT_T, \
    _REFNULL, _PREFIX_FC, _BYTE = range(14)

_KIND: list[int | None] = [None] * 256
for _op in (0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1, *range(0x45, 0xC5)):
    _KIND[_op] = _NONE
for _op in (0x0C, 0x0D, 0x10, 0x12, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xD2):
    _KIND[_op] = _IDX
for _op in range(0x28, 0x3F):
    _KIND[_op] = _MEMARG
for _op in (0x02, 0x03, 0x04):
    _KIND[_op] = _BLOCK
_KIND[0x3F] = _KIND[0x40] = _BYTE
_KIND[0x41], _KIND[0x42], _KIND[0x43], _KIND[0x44] = _I32, _I64, _F32, _F64
_KIND[0x0E] = _BRTABLE
_KIND[0x11] = _KIND[0x13] = _INDIRECT
_KIND[0x1C] = _SELECT_T
_KIND[0xD0] = _REFNULL
_KIND[0xFC] = _PREFIX_FC

_CALL, _RETURN_CALL, _REF_FUNC = 0x10, 0x12, 0xD2
_GLOBAL_GET, _GLOBAL_SET, _I32_CONST, _I32_ADD = 0x23, 0x24, 0x41, 0x6A


def _uleb(d: bytes, p: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = d[p]
        p += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, p
        shift += 7


def _sleb(d: bytes, p: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = d[p]
        p += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return (result - (1 << shift) if b & 0x40 else result), p


def _skip_leb(d: bytes, p: int) -> int:
    while d[p] & 0x80:
        p += 1
    return p + 1


def body_start(body: bytes) -> int:
    """Offset of the first instruction (after the local declarations)."""
    count, p = _uleb(body, 0)
    for _ in range(count):
        p = _skip_leb(body, p) + 1
    return p


# An event is (opcode, position of the immediate, end of the immediate, value). The walker
# reports the opcodes whose immediates name something the linker may renumber or inspect.
Event = tuple[int, int, int, int]


def _events(body: bytes, wanted: frozenset[int]) -> list[Event]:
    """Walk a body; return the events for the opcodes in ``wanted`` (0xFC sub-ops as 0xFC00+n)."""
    d = body
    p = body_start(d)
    end = len(d)
    out: list[Event] = []
    kind = _KIND
    while p < end:
        op = d[p]
        p += 1
        k = kind[op]
        if k == _NONE:
            continue
        if k == _IDX:
            start = p
            b = d[p]
            if b < 0x80:
                value = b
                p += 1
            else:
                value, p = _uleb(d, p)
            if op in wanted:
                out.append((op, start, p, value))
        elif k == _MEMARG:
            align, p = _uleb(d, p)
            if align & 0x40:
                raise CodeError("a memory instruction names a memory (multiple memories)")
            p = _skip_leb(d, p)
        elif k == _I32:
            if op in wanted:
                start = p
                value, p = _sleb(d, p)
                out.append((op, start, p, value))
            else:
                p = _skip_leb(d, p)
        elif k == _BLOCK:
            b = d[p]
            if b == 0x40 or 0x6F <= b <= 0x7F:
                p += 1
            else:
                start = p
                value, p = _sleb(d, p)
                if op | 0x100 in wanted:  # a block typed by a type index
                    out.append((op | 0x100, start, p, value))
        elif k == _I64:
            p = _skip_leb(d, p)
        elif k == _BYTE:
            p += 1
        elif k == _INDIRECT:
            start = p
            type_index, p = _uleb(d, p)
            mid = p
            table, p = _uleb(d, p)
            if op in wanted:
                out.append((op, start, mid, type_index))
                out.append((op | 0x200, mid, p, table))
        elif k == _F32:
            p += 4
        elif k == _F64:
            p += 8
        elif k == _BRTABLE:
            n, p = _uleb(d, p)
            for _ in range(n + 1):
                p = _skip_leb(d, p)
        elif k == _SELECT_T:
            n, p = _uleb(d, p)
            p += n
        elif k == _REFNULL:
            p += 1
        elif k == _PREFIX_FC:
            sub, p = _uleb(d, p)
            if sub <= 7:
                continue
            if sub == 8:  # memory.init data 0
                p = _skip_leb(d, p) + 1
            elif sub == 10:  # memory.copy 0 0
                p += 2
            elif sub == 11:  # memory.fill 0
                p += 1
            elif sub in (9, 13):  # data.drop, elem.drop
                p = _skip_leb(d, p)
            elif sub in (12, 14):  # table.init elem table, table.copy table table
                start = p
                first, p = _uleb(d, p)
                mid = p
                second, p = _uleb(d, p)
                if 0xFC00 | sub in wanted:
                    out.append((0xFC00 | sub, start, mid, first))
                    out.append((0xFD00 | sub, mid, p, second))
            elif sub in (15, 16, 17):  # table.grow/size/fill table
                start = p
                table, p = _uleb(d, p)
                if 0xFC00 | sub in wanted:
                    out.append((0xFC00 | sub, start, p, table))
            else:
                raise CodeError(f"unsupported instruction 0xfc {sub}")
        else:
            raise CodeError(f"unsupported opcode 0x{op:02x} at byte {p - 1} of a function body")
    return out


@dataclass
class Facts:
    """What a body refers to."""

    calls: list[int] = field(default_factory=list)  # direct calls and tail calls
    ref_funcs: list[int] = field(default_factory=list)
    #: (global index, constant) for every ``global.get G`` (constant 0) and every
    #: ``global.get G; i32.const K; i32.add`` or ``i32.const K; global.get G; i32.add``
    #: (constant K): how position-independent code forms addresses from a base.
    global_offsets: list[tuple[int, int]] = field(default_factory=list)
    #: (global index, constant) formed from a base kept in a local: less certain than
    #: global_offsets (a local may be reused), so only good as an over-approximation
    derived_offsets: list[tuple[int, int]] = field(default_factory=list)
    indirect_calls: int = 0


_LOCAL_GET, _LOCAL_SET, _LOCAL_TEE = 0x20, 0x21, 0x22
_FACT_OPS = frozenset({_CALL, _RETURN_CALL, _REF_FUNC, _GLOBAL_GET, _I32_CONST, 0x11, 0x13,
                       _LOCAL_GET, _LOCAL_SET, _LOCAL_TEE})


def facts(body: bytes) -> Facts:
    """Calls, function references and global-relative constants of one body.

    ``global_offsets`` are the certain forms; a base read once and kept in a local
    (``global.get G; local.tee L`` ... ``local.get L; i32.const K; i32.add``: compilers keep
    ``__memory_base`` in a local when a function uses it more than once) goes to
    ``derived_offsets``.
    """
    f = Facts()
    events = _events(body, _FACT_OPS)
    last = len(events) - 1
    base_of: dict[int, int] = {}  # local -> the global it was set from
    for n, (op, start, end, value) in enumerate(events):
        if op == _CALL or op == _RETURN_CALL:
            f.calls.append(value)
        elif op == _REF_FUNC:
            f.ref_funcs.append(value)
        elif op == _GLOBAL_GET or (op == _LOCAL_GET and value in base_of):
            base = value if op == _GLOBAL_GET else base_of[value]
            out = f.global_offsets if op == _GLOBAL_GET else f.derived_offsets
            if op == _GLOBAL_GET:
                f.global_offsets.append((base, 0))
                if n < last and events[n + 1][0] in (_LOCAL_SET, _LOCAL_TEE) and events[n + 1][1] == end + 1:
                    base_of[events[n + 1][3]] = base
                    # global.get G; local.tee L; i32.const K; i32.add: the value stays on the stack
                    if events[n + 1][0] == _LOCAL_TEE and n + 1 < last:
                        tee_end = events[n + 1][2]
                        nop, nstart, nend, nvalue = events[n + 2]
                        if nop == _I32_CONST and nstart == tee_end + 1 and body[nend:nend + 1] == b"\x6a":
                            f.global_offsets.append((base, nvalue))
            # base; i32.const K; i32.add: the const's opcode is at `end`, the add after it
            if n < last:
                nop, nstart, nend, nvalue = events[n + 1]
                if nop == _I32_CONST and nstart == end + 1 and body[nend:nend + 1] == b"\x6a":
                    out.append((base, nvalue))
            if n > 0:
                pop, _pstart, pend, pvalue = events[n - 1]
                if pop == _I32_CONST and pend + 1 == start and body[end:end + 1] == b"\x6a":
                    out.append((base, pvalue))
        elif op in (_LOCAL_SET, _LOCAL_TEE) and value in base_of:
            # set from anything but the global it held: in text order it holds something else
            if not (n > 0 and events[n - 1][0] == _GLOBAL_GET and events[n - 1][2] + 1 == start):
                del base_of[value]
        elif op in (0x11, 0x13):
            f.indirect_calls += 1
    return f


Remap = Callable[[int], int] | Sequence[int] | None


def _mapper(m: Remap) -> Callable[[int], int] | None:
    if m is None or callable(m):
        return m
    return m.__getitem__


def rewrite(body: bytes, *, funcs: Remap = None, types: Remap = None, globals_: Remap = None,
            tables: Remap = None) -> bytes:
    """The body with function/type/global/table indices mapped (None leaves a space as is)."""
    fmap, tmap, gmap, tbmap = _mapper(funcs), _mapper(types), _mapper(globals_), _mapper(tables)
    wanted: set[int] = set()
    if fmap:
        wanted |= {_CALL, _RETURN_CALL, _REF_FUNC}
    if tmap or tbmap:
        wanted |= {0x11, 0x13}
    if tmap:
        wanted |= {0x102, 0x103, 0x104}
    if gmap:
        wanted |= {_GLOBAL_GET, _GLOBAL_SET}
    if tbmap:
        wanted |= {0x25, 0x26, 0xFC0C, 0xFC0E, 0xFC0F, 0xFC10, 0xFC11}
    if not wanted:
        return body
    pieces: list[bytes] = []
    last = 0
    for op, start, end, value in _events(body, frozenset(wanted)):
        if op in (_CALL, _RETURN_CALL, _REF_FUNC):
            new = fmap(value)  # type: ignore[misc]
        elif op in (0x11, 0x13):
            new = tmap(value) if tmap else value
        elif op in (0x102, 0x103, 0x104):
            new = tmap(value)  # type: ignore[misc]
            if new != value:
                pieces += [body[last:start], _sleb33(new)]
                last = end
            continue
        elif op in (_GLOBAL_GET, _GLOBAL_SET):
            new = gmap(value)  # type: ignore[misc]
        elif op in (0x211, 0x213, 0x25, 0x26, 0xFC0C, 0xFD0C, 0xFC0E, 0xFD0E, 0xFC0F, 0xFC10,
                    0xFC11):
            new = tbmap(value) if tbmap else value
        else:
            continue
        if new != value:
            pieces += [body[last:start], encode_uleb(new)]
            last = end
    if not pieces:
        return body
    pieces.append(body[last:])
    return b"".join(pieces)


def _sleb33(value: int) -> bytes:
    from .wasm_module import encode_sleb
    return encode_sleb(value)


def straight_line_stores(body: bytes, global_value: Callable[[int], int | None]) -> list[tuple[int, int]]:
    """Evaluate a function made only of constant address arithmetic and i32 stores (what the
    linker generates as ``__wasm_apply_data_relocs``); return its (address, value) stores.

    Anything else in the body raises CodeError: a relocation function of another shape must
    stop the build, not be half understood.
    """
    d = body
    p = body_start(d)
    stack: list[int] = []
    stores: list[tuple[int, int]] = []
    while p < len(d):
        op = d[p]
        p += 1
        if op == _I32_CONST:
            value, p = _sleb(d, p)
            stack.append(value & 0xFFFFFFFF)
        elif op == _GLOBAL_GET:
            index, p = _uleb(d, p)
            known = global_value(index)
            if known is None:
                raise CodeError(f"relocation code reads global {index}, which is not a constant")
            stack.append(known)
        elif op == _I32_ADD:
            b, a = stack.pop(), stack.pop()
            stack.append((a + b) & 0xFFFFFFFF)
        elif op == 0x36:  # i32.store align offset
            _align, p = _uleb(d, p)
            offset, p = _uleb(d, p)
            value, address = stack.pop(), stack.pop()
            stores.append(((address + offset) & 0xFFFFFFFF, value))
        elif op == 0x0B and p == len(d):
            break
        else:
            raise CodeError(f"opcode 0x{op:02x} in a relocation function")
    return stores


def trampoline_slot(body: bytes) -> tuple[int, int] | None:
    """(slot, table) when the body only forwards its parameters to a table slot.

    wit-component reaches every import of a component through such a trampoline and a table of
    imports; the slot is where the linker plugs in a replacement.
    """
    d = body
    p = body_start(d)
    while p < len(d) and d[p] == 0x20:  # local.get
        p = _skip_leb(d, p + 1)
    if p >= len(d) or d[p] != _I32_CONST:
        return None
    slot, p = _sleb(d, p + 1)
    if p >= len(d) or d[p] != 0x11:
        return None
    _type, p = _uleb(d, p + 1)
    table, p = _uleb(d, p)
    return (slot, table) if d[p:] == b"\x0b" else None
