"""Read the interface of a wasm binary: sections, types, imports, exports. No code decoding.

Used to check a built module before it is written, and by ``pywasm inspect``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_SECTION_NAMES = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory",
                  6: "global", 7: "export", 8: "start", 9: "element", 10: "code", 11: "data",
                  12: "datacount", 13: "tag"}
_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128",
             0x70: "funcref", 0x6F: "externref"}
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}

Signature = tuple[tuple[str, ...], tuple[str, ...]]


class WasmFormatError(ValueError):
    """The bytes are not a wasm module this reader understands."""


@dataclass
class Import:
    module: str
    name: str
    kind: str
    signature: Signature | None = None  # functions only


@dataclass
class Export:
    name: str
    kind: str
    index: int
    signature: Signature | None = None  # functions only


@dataclass
class ModuleInfo:
    sections: list[tuple[str, int]] = field(default_factory=list)  # (name, size in bytes)
    imports: list[Import] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    function_count: int = 0
    memory_pages: int | None = None

    def export(self, name: str) -> Export | None:
        return next((e for e in self.exports if e.name == name), None)


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WasmFormatError("unexpected end of data")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    def sleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result - (1 << shift) if b & 0x40 else result

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise WasmFormatError("unexpected end of data")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def const_expr(self) -> bytes:
        """The bytes of a constant expression, its final ``end`` included."""
        start = self.pos
        while True:
            op = self.byte()
            if op == 0x0B:
                return self.data[start : self.pos]
            if op in (0x41, 0x42):
                self.sleb()
            elif op in (0x23, 0xD2):
                self.uleb()
            elif op == 0xD0:
                self.byte()
            elif op == 0x43:
                self.take(4)
            elif op == 0x44:
                self.take(8)
            elif op not in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):
                raise WasmFormatError(f"opcode 0x{op:02x} in a constant expression")

    def name(self) -> str:
        n = self.uleb()
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")

    def limits(self) -> tuple[int, int | None]:
        flags = self.byte()
        lo = self.uleb()
        hi = self.uleb() if flags & 1 else None
        return lo, hi


def read(data: bytes) -> ModuleInfo:
    """Parse the sections that describe a module's interface."""
    if data[:4] != b"\0asm":
        raise WasmFormatError("not a wasm binary (no \\0asm magic)")
    if data[4:8] != b"\x01\0\0\0":
        raise WasmFormatError("not a core wasm module (a component? build output must be a module)")
    info = ModuleInfo()
    types: list[Signature] = []
    func_types: list[int] = []
    r = _Reader(data, 8)
    while r.pos < len(data):
        sid = r.byte()
        try:
            size = r.uleb()
        except WasmFormatError:
            raise WasmFormatError("the file ends inside a section header: truncated?") from None
        start, end = r.pos, r.pos + size
        if end > len(data):
            raise WasmFormatError(f"a section of {size} bytes runs past the end of the file at "
                                  f"byte {len(data)}: truncated?")
        s = _Reader(data, start, end)
        name = _SECTION_NAMES.get(sid, f"unknown({sid})")
        if sid == 0:
            name = f"custom:{s.name()}"
        elif sid == 1:
            for _ in range(s.uleb()):
                form = s.byte()
                if form != 0x60:
                    raise WasmFormatError(f"unsupported type form 0x{form:x}")
                params = tuple(_VALTYPES.get(s.byte(), "?") for _ in range(s.uleb()))
                results = tuple(_VALTYPES.get(s.byte(), "?") for _ in range(s.uleb()))
                types.append((params, results))
        elif sid == 2:
            for _ in range(s.uleb()):
                module, field_name, kind = s.name(), s.name(), _KINDS.get(s.byte(), "?")
                sig = None
                if kind == "func":
                    idx = s.uleb()
                    sig = types[idx]
                    func_types.append(idx)
                elif kind == "table":
                    s.byte()
                    s.limits()
                elif kind == "memory":
                    s.limits()
                elif kind == "global":
                    s.byte()
                    s.byte()
                else:
                    raise WasmFormatError(f"unsupported import kind in {module}.{field_name}")
                info.imports.append(Import(module, field_name, kind, sig))
        elif sid == 3:
            func_types += [s.uleb() for _ in range(s.uleb())]
        elif sid == 5:
            count = s.uleb()
            if count:
                info.memory_pages = s.limits()[0]
        elif sid == 7:
            for _ in range(s.uleb()):
                ename, kind, idx = s.name(), _KINDS.get(s.byte(), "?"), s.uleb()
                info.exports.append(Export(ename, kind, idx))
        info.sections.append((name, size))
        r.pos = end
    info.function_count = len(func_types)
    for e in info.exports:
        if e.kind == "func" and e.index < len(func_types):
            e.signature = types[func_types[e.index]]
    return info
