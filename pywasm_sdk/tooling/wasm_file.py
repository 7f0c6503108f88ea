"""Open a built plugin module from disk, or say exactly why it is not one.

Every command that takes ``PLUGIN.wasm`` (``run``, ``manifests``, ``oci``, ``inspect``) starts
here, so a missing file, a folder, a file that is not wasm at all, a truncated module or a
WebAssembly *component* (what componentize-py writes, which Envoy cannot load) is reported the
same way everywhere, naming the file and what to do.

It also answers the two questions the commands ask of a module's interface: which proxy-wasm
ABI version it declares (the ``proxy_abi_version_X_Y_Z`` marker export Envoy looks for) and
whether it is an HTTP filter or a network (TCP) filter, judged by the callbacks it exports.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import abi as abi_mod
from .wasm_binary import ModuleInfo, WasmFormatError, read

__all__ = ["HTTP_CALLBACKS", "TCP_CALLBACKS", "FilterType", "ModuleFileError", "PluginModule",
           "filter_type", "load"]

FilterType = Literal["http", "network"]

#: callbacks only an HTTP filter receives (the host calls them per HTTP stream): context "http" in the ABI
HTTP_CALLBACKS = frozenset(n for n, cb in abi_mod.load().callbacks.items() if cb.context == "http")
#: callbacks only a network (TCP) filter receives (the host calls them per connection): context "tcp"
TCP_CALLBACKS = frozenset(n for n, cb in abi_mod.load().callbacks.items() if cb.context == "tcp")

_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\0\0\0"
_COMPONENT_LAYER = b"\x01\0"  # bytes 6-7 of a component's preamble (its "layer" field)
_ABI_MARKER = re.compile(r"proxy_abi_version_(\d+)_(\d+)_(\d+)")


class ModuleFileError(ValueError):
    """The file is missing, unreadable, or not a core wasm module; the message says which."""


@dataclass(frozen=True)
class PluginModule:
    """A core wasm module read from disk, with what the commands need to know about it."""

    path: Path
    data: bytes
    info: ModuleInfo

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        """Hex digest of the file: what Envoy's ``remote.sha256`` and Istio compare against."""
        return hashlib.sha256(self.data).hexdigest()

    @property
    def exported_callbacks(self) -> list[str]:
        """The ``proxy_on_*`` functions the module exports, in export order."""
        return [e.name for e in self.info.exports if e.kind == "func" and e.name.startswith("proxy_on_")]

    @property
    def abi_versions(self) -> list[str]:
        """Versions named by ``proxy_abi_version_X_Y_Z`` exports ("0.2.1"); Envoy needs exactly one."""
        found = []
        for export in self.info.exports:
            m = _ABI_MARKER.fullmatch(export.name)
            if m and export.kind == "func":
                found.append(".".join(m.groups()))
        return found

    def filter_type(self, override: str | None = None) -> FilterType:
        """HTTP or network filter, from ``override`` or else the exported callbacks."""
        return filter_type(self.exported_callbacks, override, source=str(self.path))


def filter_type(callbacks: list[str] | set[str] | frozenset[str], override: str | None = None, *,
                source: str = "the plugin") -> FilterType:
    """Decide between an HTTP and a network filter.

    ``override`` ("http", "network", or "tcp" as a synonym) wins. Otherwise TCP callbacks alone
    mean a network filter; HTTP callbacks, or none of either kind (a plugin with only root
    callbacks, e.g. one that only runs timers), mean HTTP, Envoy's and Istio's default. A module
    with both kinds could be either, so the caller must choose; the error says how.
    """
    if override is not None:
        value = override.lower()
        if value == "tcp":
            value = "network"
        if value not in ("http", "network"):
            raise ModuleFileError(f"filter type {override!r}: expected http or network")
        return value  # type: ignore[return-value]
    names = set(callbacks)
    tcp, http = names & TCP_CALLBACKS, names & HTTP_CALLBACKS
    if tcp and http:
        raise ModuleFileError(
            f"{source} exports both HTTP callbacks ({', '.join(sorted(http))}) and TCP callbacks "
            f"({', '.join(sorted(tcp))}): say which filter it is with --type http or --type network")
    return "network" if tcp else "http"


def load(path: str | os.PathLike[str]) -> PluginModule:
    """Read ``path`` and parse its interface; ``ModuleFileError`` says what is wrong with it."""
    p = Path(path)
    if p.is_dir():
        hint = f" (build it first: pywasm build {p} -o plugin.wasm)" if (p / "plugin.py").is_file() else ""
        raise ModuleFileError(f"{p}: is a folder, not a .wasm module{hint}")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ModuleFileError(f"{p}: no such file") from None
    except OSError as exc:
        raise ModuleFileError(f"{p}: cannot read it: {exc.strerror or exc}") from None
    _check_preamble(p, data)
    try:
        info = read(data)
    except (WasmFormatError, IndexError) as exc:
        raise ModuleFileError(f"{p}: not a valid wasm module ({exc}); rebuild it with pywasm build") from None
    return PluginModule(p, data, info)


def _check_preamble(path: Path, data: bytes) -> None:
    if data[:4] != _MAGIC:
        what = "an empty file" if not data else "not a WebAssembly file (no \\0asm magic number)"
        if data.lstrip()[:1] in (b"(", b";"):
            what = "WebAssembly text (WAT), not a binary module (convert it with wasm-tools parse)"
        elif data[:2] == b"\x1f\x8b":
            what = "gzip-compressed data, not a wasm module (an OCI layer? unpack plugin.wasm from it)"
        raise ModuleFileError(f"{path}: {what}")
    if data[4:8] == _CORE_VERSION:
        return
    if data[6:8] == _COMPONENT_LAYER:
        raise ModuleFileError(
            f"{path}: is a WebAssembly component, not a core module; Envoy loads only core modules "
            "(proxy-wasm). Use the .wasm that `pywasm build` writes, not componentize-py's output")
    raise ModuleFileError(f"{path}: unsupported WebAssembly version {data[4:8].hex()} (expected a "
                          "core module, version 1)")
