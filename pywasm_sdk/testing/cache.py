"""Compiled wasm modules, kept in memory and on disk so a plugin is compiled once, not per test.

Compiling an ~18 MB plugin with wasmtime takes seconds; instantiating a compiled module takes
milliseconds. :class:`ModuleCache` keys a compiled module by the sha256 of the .wasm bytes and
the wasmtime version, keeps the last few in memory for the process, and stores
``Module.serialize()`` output under ``$PYWASM_CACHE_DIR`` (default ``$XDG_CACHE_HOME/pywasm-sdk``
or ``~/.cache/pywasm-sdk``). A cached file that does not deserialize (another CPU, another
wasmtime build) is recompiled and replaced. The directory keeps the 12 most recently used
modules per wasmtime version.

Deserializing runs native code without validating it, so nothing is deserialized that this
user's cache did not write: each file carries an HMAC-SHA256 of its name and bytes under a
secret key kept in the cache folder (``module-cache.key``: 32 random bytes, created on first use,
mode 0600, owned by this user). A file whose HMAC does not match (tampered with, written by
someone else, or by an older pywasm-sdk) is never loaded: the module is compiled again and the
file replaced. A key file that others can read or that another user owns is not trusted: the
cache then keeps nothing on disk and warns once. ``ModuleCache(None)`` keeps nothing on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import tempfile
import warnings
from collections import OrderedDict
from importlib import metadata
from pathlib import Path

import wasmtime

__all__ = ["ModuleCache"]

_MEMORY_SLOTS = 8
#: compiled modules kept on disk per wasmtime version (each is ~1.5x the .wasm): least recently
#: used go first, so rebuilding a plugin all day does not fill the disk
_DISK_SLOTS = 12
#: the start of a cache file: a format tag, then the HMAC, then wasmtime's serialized module
_MAGIC = b"pywasm-cwasm-hmac-1\n"
_MAC_SIZE = 32
KEY_FILE = "module-cache.key"
_KEY_SIZE = 32


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

    def __init__(self, directory: Path | str | None = None, engine: wasmtime.Engine | None = None,
                 *, fuel: int | None = None) -> None:
        # fuel: meter the wasm instructions of every instance (wasmtime's fuel, on in the engine
        # made here) and give each instance this much; bench/costs.py reads what a callback used
        # with WasmGuest.fuel_left. Keep such modules in a directory of their own: they do not
        # load into an engine without fuel, nor the others into this one.
        if fuel is not None and engine is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            engine = wasmtime.Engine(config)
        self.engine = engine or wasmtime.Engine()
        self.fuel = fuel
        self.directory = Path(directory) if directory is not None else None
        self._memory: OrderedDict[str, wasmtime.Module] = OrderedDict()
        self._version = _wasmtime_version()
        #: how the last load was served: "memory", "disk" or "compiled" (for tests and benchmarks)
        self.last_source = ""
        #: cache files found and not loaded because their HMAC did not match (they were replaced)
        self.refused: list[Path] = []
        self._key: bytes | None = None

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

    def _secret(self) -> bytes | None:
        """This user's key for the cache files (made on first use); None when it cannot be trusted,
        after which nothing more is read from or written to the disk."""
        if self._key is None and self.directory is not None:
            try:
                self._key = _load_or_create_key(self.directory / KEY_FILE)
            except _UntrustedKey as exc:
                warnings.warn(f"pywasm-sdk module cache: {exc}; compiled modules are not kept on disk",
                              stacklevel=4)
                self.directory = None
            except OSError:
                self.directory = None  # e.g. a read-only home: compile every time, as without a cache
        return self._key

    def _mac(self, secret: bytes, key: str, serialized: bytes | bytearray) -> bytes:
        # the name is signed too: a valid file copied under another module's name is refused
        return hmac.new(secret, f"{self._version}/{key}\n".encode() + serialized, hashlib.sha256).digest()

    def _from_disk(self, key: str) -> wasmtime.Module | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        secret = self._secret()
        if secret is None:
            return None
        try:
            # read, not deserialize_file: that one maps the file, and a file rewritten in place
            # under a live mapping (another tool, a careless cleanup) kills the process (SIGBUS)
            data = path.read_bytes()
        except OSError:
            return None
        header = len(_MAGIC) + _MAC_SIZE
        serialized = data[header:]
        if (not data.startswith(_MAGIC)
                or not hmac.compare_digest(data[len(_MAGIC):header], self._mac(secret, key, serialized))):
            self.refused.append(path)
            return None  # never deserialized: recompiled and overwritten
        try:
            module = wasmtime.Module.deserialize(self.engine, serialized)
        except wasmtime.WasmtimeError:
            return None  # ours but stale (another wasmtime build or CPU): recompile and overwrite
        try:
            os.utime(path)  # most recently used
        except OSError:
            pass
        return module

    def _to_disk(self, key: str, module: wasmtime.Module) -> None:
        path = self._path(key)
        if path is None:
            return
        secret = self._secret()
        if secret is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            serialized = module.serialize()
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(_MAGIC + self._mac(secret, key, serialized) + serialized)
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


class _UntrustedKey(Exception):
    """The key file exists but others could have read or written it."""


def _load_or_create_key(path: Path) -> bytes:
    """The secret in ``path``, created (0600, atomically) when there is none."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".key.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(_KEY_SIZE))
        try:
            os.link(tmp, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    if path.is_symlink():
        raise _UntrustedKey(f"{path} is a symbolic link")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _UntrustedKey(f"{path} is not a regular file")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise _UntrustedKey(f"{path} belongs to another user (uid {info.st_uid})")
        if info.st_mode & 0o077:
            raise _UntrustedKey(f"{path} can be read or written by others (mode "
                                f"{stat.S_IMODE(info.st_mode):o}; it must be 600)")
        secret = f.read()
    if len(secret) != _KEY_SIZE:
        raise _UntrustedKey(f"{path} is not a key of {_KEY_SIZE} bytes")
    return secret
