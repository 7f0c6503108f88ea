"""A whole wasm module as data: every section decoded far enough to be edited, then re-encoded.

Rule of this module: it understands exactly the module shapes the build pipeline produces and
consumes (function types only, active or passive data, element segments of functions) and raises
:class:`WasmFormatError` naming anything else, never guesses. Code bodies are kept as bytes; what
is inside them is :mod:`.wasm_code`'s job. Indices are plain ints in wasm's index spaces
(imported functions first, then defined ones), exactly as in the binary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .._protobuf import varint
from .wasm_binary import WasmFormatError, _Reader

__all__ = ["Data", "Elem", "Export", "Global", "Import", "Module", "WasmFormatError",
           "const_i32", "encode_sleb", "encode_uleb", "name_bytes"]

_FUNCREF = 0x70
_END = 0x0B


def encode_uleb(value: int) -> bytes:
    """Unsigned LEB128: for a value >= 0 the same bytes as a protobuf varint."""
    if value < 0:
        raise ValueError(f"unsigned LEB128 of a negative value ({value})")
    return varint(value)


def encode_sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if (value == 0 and not byte & 0x40) or (value == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def name_bytes(name: str) -> bytes:
    raw = name.encode()
    return encode_uleb(len(raw)) + raw


def const_i32(value: int) -> bytes:
    """The constant expression ``i32.const value; end``."""
    if value >= 1 << 31:
        value -= 1 << 32
    return b"\x41" + encode_sleb(value) + bytes([_END])


def _vec(items: list[bytes]) -> bytes:
    return encode_uleb(len(items)) + b"".join(items)


@dataclass
class Import:
    module: str
    name: str
    kind: int  # 0 func, 1 table, 2 memory, 3 global
    desc: int | bytes  # a type index for functions, the raw descriptor otherwise

    def encode(self) -> bytes:
        desc = encode_uleb(self.desc) if self.kind == 0 else self.desc  # type: ignore[arg-type]
        return name_bytes(self.module) + name_bytes(self.name) + bytes([self.kind]) + desc  # type: ignore[operator]


@dataclass
class Global:
    valtype: int
    mutable: bool
    init: bytes  # a constant expression including its final `end`

    def encode(self) -> bytes:
        return bytes([self.valtype, int(self.mutable)]) + self.init

    @property
    def const_value(self) -> int | None:
        """The value of an ``i32.const N; end`` initialiser, else None."""
        if self.valtype != 0x7F or self.init[:1] != b"\x41":
            return None
        r = _Reader(self.init, 1)
        value = r.sleb()
        return value & 0xFFFFFFFF if r.pos == len(self.init) - 1 else None


@dataclass
class Export:
    name: str
    kind: int  # 0 func, 1 table, 2 memory, 3 global
    index: int

    def encode(self) -> bytes:
        return name_bytes(self.name) + bytes([self.kind]) + encode_uleb(self.index)


@dataclass
class Elem:
    """A segment of function references; ``None`` items are null references."""

    mode: str  # "active", "passive" or "declarative"
    table: int
    offset: bytes | None  # constant expression of an active segment
    items: list[int | None]

    @property
    def offset_value(self) -> int | None:
        return Global(0x7F, False, self.offset).const_value if self.offset else None

    def encode(self) -> bytes:
        exprs = any(i is None for i in self.items)
        if exprs:
            body = _vec([b"\xd0\x70\x0b" if i is None else b"\xd2" + encode_uleb(i) + b"\x0b"
                         for i in self.items])
            if self.mode != "active" or self.table != 0:
                body = bytes([_FUNCREF]) + body  # the reference type (implicit in flags 4)
        else:
            body = _vec([encode_uleb(i) for i in self.items])  # type: ignore[arg-type]
            if self.mode != "active" or self.table != 0:
                body = b"\x00" + body  # elemkind funcref
        flags = {"active": 0 if self.table == 0 else 2, "passive": 1, "declarative": 3}[self.mode]
        if exprs:
            flags |= 4
        head = encode_uleb(flags)
        if self.mode == "active":
            head += (encode_uleb(self.table) if self.table else b"") + (self.offset or b"")
        return head + body


@dataclass
class Data:
    offset: int | None  # memory address of an active segment, None for a passive one
    data: bytes

    def encode(self) -> bytes:
        if self.offset is None:
            return b"\x01" + encode_uleb(len(self.data)) + self.data
        return b"\x00" + const_i32(self.offset) + encode_uleb(len(self.data)) + self.data


@dataclass
class Module:
    types: list[tuple[bytes, bytes]] = field(default_factory=list)  # (param valtypes, result valtypes)
    imports: list[Import] = field(default_factory=list)
    functions: list[int] = field(default_factory=list)  # type index of each defined function
    tables: list[tuple[int, int, int | None]] = field(default_factory=list)  # (reftype, min, max)
    memories: list[bytes] = field(default_factory=list)  # raw limits
    globals: list[Global] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    start: int | None = None
    elems: list[Elem] = field(default_factory=list)
    codes: list[bytes] = field(default_factory=list)  # bodies (locals + instructions), unsized
    datas: list[Data] = field(default_factory=list)
    customs: list[tuple[str, bytes]] = field(default_factory=list)

    # -- index spaces ------------------------------------------------------------------
    @property
    def imported_functions(self) -> list[Import]:
        return [i for i in self.imports if i.kind == 0]

    @property
    def imported_globals(self) -> list[Import]:
        return [i for i in self.imports if i.kind == 3]

    def function_type(self, index: int) -> tuple[bytes, bytes]:
        """(params, results) of function ``index`` in the function index space."""
        imported = self.imported_functions
        if index < len(imported):
            return self.types[imported[index].desc]  # type: ignore[index]
        return self.types[self.functions[index - len(imported)]]

    def global_value(self, index: int) -> int | None:
        """The constant i32 value of an immutable defined global, else None."""
        n = len(self.imported_globals)
        if index < n:
            return None
        g = self.globals[index - n]
        return None if g.mutable else g.const_value

    def global_initial(self, index: int) -> int | None:
        """The initial i32 value of a defined global, mutable or not (None when not constant)."""
        n = len(self.imported_globals)
        return None if index < n else self.globals[index - n].const_value

    def exported(self, name: str, kind: int | None = None) -> Export | None:
        for e in self.exports:
            if e.name == name and (kind is None or e.kind == kind):
                return e
        return None

    def type_index(self, params: bytes, results: bytes) -> int:
        """The index of a function type, added when the module has none like it."""
        try:
            return self.types.index((params, results))
        except ValueError:
            self.types.append((params, results))
            return len(self.types) - 1

    def custom(self, name: str) -> bytes | None:
        return next((data for n, data in self.customs if n == name), None)

    # -- reading -----------------------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes) -> Module:
        if data[:8] != b"\0asm\x01\0\0\0":
            raise WasmFormatError("not a core wasm module (bad magic or version)")
        mod = cls()
        r = _Reader(data, 8)
        while r.pos < len(data):
            sid = r.byte()
            size = r.uleb()
            end = r.pos + size
            if end > len(data):
                raise WasmFormatError("a section runs past the end of the module: truncated?")
            s = _Reader(data, r.pos, end)
            reader = _SECTION_READERS.get(sid)
            if reader is None:
                raise WasmFormatError(f"unsupported section id {sid}")
            reader(mod, s)
            if sid != 0 and s.pos != end:
                raise WasmFormatError(f"section {sid} has {end - s.pos} unread bytes")
            r.pos = end
        if len(mod.codes) != len(mod.functions):
            raise WasmFormatError("function and code sections disagree")
        return mod

    def _read_custom(self, s: _Reader) -> None:
        name = s.name()
        self.customs.append((name, s.data[s.pos:s.end]))
        s.pos = s.end

    def _read_types(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            form = s.byte()
            if form != 0x60:
                raise WasmFormatError(f"type form 0x{form:02x} (only function types are supported)")
            params = s.take(s.uleb())
            results = s.take(s.uleb())
            self.types.append((params, results))

    def _read_imports(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            module, name, kind = s.name(), s.name(), s.byte()
            if kind == 0:
                self.imports.append(Import(module, name, 0, s.uleb()))
                continue
            start = s.pos
            if kind == 1:
                s.byte()
                s.limits()
            elif kind == 2:
                s.limits()
            elif kind == 3:
                s.byte()
                s.byte()
            else:
                raise WasmFormatError(f"import {module}.{name}: unsupported kind {kind}")
            self.imports.append(Import(module, name, kind, s.data[start:s.pos]))

    def _read_functions(self, s: _Reader) -> None:
        self.functions = [s.uleb() for _ in range(s.uleb())]

    def _read_tables(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            reftype = s.byte()
            lo, hi = s.limits()
            self.tables.append((reftype, lo, hi))

    def _read_memories(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            start = s.pos
            s.limits()
            self.memories.append(s.data[start:s.pos])

    def _read_globals(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            valtype, mutable = s.byte(), s.byte()
            self.globals.append(Global(valtype, bool(mutable), s.const_expr()))

    def _read_exports(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            self.exports.append(Export(s.name(), s.byte(), s.uleb()))

    def _read_start(self, s: _Reader) -> None:
        self.start = s.uleb()

    def _read_elems(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            flags = s.uleb()
            if flags > 7:
                raise WasmFormatError(f"element segment flags {flags}")
            mode = "active" if not flags & 1 else "passive" if not flags & 2 else "declarative"
            table, offset = 0, None
            if mode == "active":
                if flags & 2:
                    table = s.uleb()
                offset = s.const_expr()
            if flags & 4:
                if flags & 3:
                    reftype = s.byte()
                    if reftype != _FUNCREF:
                        raise WasmFormatError(f"element segment of reference type 0x{reftype:02x}")
                items = [_elem_expr(s.const_expr()) for _ in range(s.uleb())]
            else:
                if flags & 3 and s.byte() != 0:
                    raise WasmFormatError("element segment of a kind other than funcref")
                items = [s.uleb() for _ in range(s.uleb())]
            self.elems.append(Elem(mode, table, offset, items))

    def _read_datacount(self, s: _Reader) -> None:
        s.uleb()  # recomputed when written

    def _read_codes(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            self.codes.append(s.take(s.uleb()))

    def _read_datas(self, s: _Reader) -> None:
        for _ in range(s.uleb()):
            flags = s.uleb()
            if flags == 1:
                self.datas.append(Data(None, s.take(s.uleb())))
                continue
            if flags != 0:
                raise WasmFormatError(f"data segment flags {flags} (multiple memories?)")
            offset = Global(0x7F, False, s.const_expr()).const_value
            if offset is None:
                raise WasmFormatError("a data segment's offset is not an i32 constant")
            self.datas.append(Data(offset, s.take(s.uleb())))

    # -- writing -----------------------------------------------------------------------
    def encode(self) -> bytes:
        out = bytearray(b"\0asm\x01\0\0\0")

        def section(sid: int, payload: bytes) -> None:
            out.append(sid)
            out.extend(encode_uleb(len(payload)))
            out.extend(payload)

        def vec_section(sid: int, items: list[bytes]) -> None:
            if items:
                section(sid, _vec(items))

        vec_section(1, [b"\x60" + encode_uleb(len(p)) + p + encode_uleb(len(r)) + r
                        for p, r in self.types])
        vec_section(2, [i.encode() for i in self.imports])
        vec_section(3, [encode_uleb(t) for t in self.functions])
        vec_section(4, [bytes([rt]) + _limits(lo, hi) for rt, lo, hi in self.tables])
        vec_section(5, list(self.memories))
        vec_section(6, [g.encode() for g in self.globals])
        vec_section(7, [e.encode() for e in self.exports])
        if self.start is not None:
            section(8, encode_uleb(self.start))
        vec_section(9, [e.encode() for e in self.elems])
        if self.datas:
            section(12, encode_uleb(len(self.datas)))
        vec_section(10, [encode_uleb(len(c)) + c for c in self.codes])
        vec_section(11, [d.encode() for d in self.datas])
        for name, payload in self.customs:
            section(0, name_bytes(name) + payload)
        return bytes(out)


def _limits(lo: int, hi: int | None) -> bytes:
    return b"\x00" + encode_uleb(lo) if hi is None else b"\x01" + encode_uleb(lo) + encode_uleb(hi)


def _elem_expr(expr: bytes) -> int | None:
    if expr == b"\xd0\x70\x0b":
        return None
    if expr[:1] == b"\xd2":
        r = _Reader(expr, 1)
        index = r.uleb()
        if r.pos == len(expr) - 1:
            return index
    raise WasmFormatError(f"element expression {expr.hex()} (only ref.func and ref.null func)")


_SECTION_READERS = {
    0: Module._read_custom, 1: Module._read_types, 2: Module._read_imports,
    3: Module._read_functions, 4: Module._read_tables, 5: Module._read_memories,
    6: Module._read_globals, 7: Module._read_exports, 8: Module._read_start,
    9: Module._read_elems, 10: Module._read_codes, 11: Module._read_datas,
    12: Module._read_datacount,
}


def function_names(module: Module) -> dict[int, str]:
    """Function index -> name, from the ``name`` custom section (empty when there is none)."""
    payload = module.custom("name")
    names: dict[int, str] = {}
    if payload is None:
        return names
    r = _Reader(payload, 0)
    while r.pos < len(payload):
        kind = r.byte()
        size = r.uleb()
        end = r.pos + size
        if kind == 1:
            for _ in range(r.uleb()):
                index = r.uleb()
                names[index] = r.name()
        r.pos = end
    return names


def name_section(names: dict[int, str]) -> bytes:
    """A ``name`` custom section payload holding function names only."""
    entries = [encode_uleb(i) + name_bytes(n) for i, n in sorted(names.items())]
    sub = encode_uleb(len(entries)) + b"".join(entries)
    return b"\x01" + encode_uleb(len(sub)) + sub
