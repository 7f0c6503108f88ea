"""Compiled wasm modules, kept in memory and on disk so a plugin is compiled once, not per test.

Compiling an ~18 MB plugin with wasmtime takes seconds; instantiating a compiled module takes
milliseconds. :class:`ModuleCache` keys a compiled module by the sha256 of the .wasm bytes and
the wasmtime version, keeps the last few in memory for the process, and stores
``Module.serialize()`` output under ``$PYWASM_CACHE_DIR`` (default ``$XDG_CACHE_HOME/pywasm-sdk``
or ``~/.cache/pywasm-sdk``). A cached file that does not deserialize (another CPU, another
wasmtime build) is recompiled and replaced. The directory keeps the 12 most recently used
modules per wasmtime version.

Deserializing compiled code runs it without validation: the cache directory must be yours (it is
under your home by default). ``ModuleCache(None)`` keeps nothing on disk.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from importlib import metadata
from pathlib import Path

import wasmtime

__all__ = ["ModuleCache"]

_MEMORY_SLOTS = 8
#: compiled modules kept on disk per wasmtime version (each is ~1.5x the .wasm): least recently
#: used go first, so rebuilding a plugin all day does not fill the disk
_DISK_SLOTS = 12


def _wasmtime_version() -> str:
    try:
        return metadata.version("wasmtime")
    except metadata.PackageNotFoundError:  # pragma: no cover - wasmtime imported fine above
        return "unknown"


def default_directory() -> Path:
    """Where compiled modules go: $PYWASM_CACHE_DIR, else ``$XDG_CACHE_HOME/pywasm-sdk`` or
    ``~/.cache/pywasm-sdk`` (the same root ``pywasm run`` keeps its builds in)."""
    configured = os.environ.get("PYWASM_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pywasm-sdk"


class ModuleCache:
    """Compiles modules for one wasmtime Engine and remembers them.

    Use :meth:`shared` for the process-wide instance the mock host uses by default; make your own
    to choose the directory (``directory=None`` keeps nothing on disk). Thread-compatible, not
    thread-safe: load modules from one thread.
    """

    _shared: ModuleCache | None = None

    def __init__(self, directory: Path | str | None = None, engine: wasmtime.Engine | None = None) -> None:
        self.engine = engine or wasmtime.Engine()
        self.directory = Path(directory) if directory is not None else None
        self._memory: OrderedDict[str, wasmtime.Module] = OrderedDict()
        self._version = _wasmtime_version()
        #: how the last load was served: "memory", "disk" or "compiled" (for tests and benchmarks)
        self.last_source = ""

    @classmethod
    def shared(cls) -> ModuleCache:
        """The process-wide cache (created on first use, directory from the environment)."""
        if cls._shared is None:
            cls._shared = cls(default_directory())
        return cls._shared

    def load(self, wasm: bytes) -> wasmtime.Module:
        """The compiled module for these bytes (raises wasmtime.WasmtimeError when invalid)."""
        key = hashlib.sha256(wasm).hexdigest()
        module = self._memory.get(key)
        if module is not None:
            self._memory.move_to_end(key)
            self.last_source = "memory"
            return module
        module = self._from_disk(key)
        if module is None:
            module = wasmtime.Module(self.engine, wasm)
            self.last_source = "compiled"
            self._to_disk(key, module)
        else:
            self.last_source = "disk"
        self._memory[key] = module
        while len(self._memory) > _MEMORY_SLOTS:
            self._memory.popitem(last=False)
        return module

    def _path(self, key: str) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"wasmtime-{self._version}" / f"{key}.cwasm"

    def _from_disk(self, key: str) -> wasmtime.Module | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            # read, not deserialize_file: that one maps the file, and a file rewritten in place
            # under a live mapping (another tool, a careless cleanup) kills the process (SIGBUS)
            module = wasmtime.Module.deserialize(self.engine, path.read_bytes())
        except (wasmtime.WasmtimeError, OSError):
            return None  # stale or foreign: recompile and overwrite
        try:
            os.utime(path)  # most recently used
        except OSError:
            pass
        return module

    def _to_disk(self, key: str, module: wasmtime.Module) -> None:
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(module.serialize())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            self._prune(path.parent)
        except OSError:
            pass  # a read-only or full disk only costs the next run a compile

    @staticmethod
    def _prune(folder: Path) -> None:
        entries = sorted(folder.glob("*.cwasm"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in entries[_DISK_SLOTS:]:
            stale.unlink(missing_ok=True)
