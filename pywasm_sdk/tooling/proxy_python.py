"""What the proxy's CPython cannot import, and a finder that makes a native Python refuse the same.

The proxy runs componentize-py's CPython 3.14 for wasm32-wasi (componentize-py is pinned). It
has most of the standard library, compiled in, and no way to load a compiled extension module
(an ``.so`` built for the machine that installed the package). The build's native check
(:mod:`.preflight`) imports the plugin with :class:`ProxyImports` in front of the import system,
so a plugin that needs what the proxy lacks fails there, with its file and line, and a package
with a pure-Python fallback takes the fallback there as it will in the proxy (msgpack, PyYAML,
protobuf).

``MISSING_C_MODULES`` and ``BROKEN_STDLIB`` were surveyed inside the proxy's CPython (every name
of ``sys.stdlib_module_names``); tests/test_packages.py checks them against a built plugin.
"""

from __future__ import annotations

import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec
from pathlib import Path

#: the standard library's C modules the proxy's CPython is built without
MISSING_C_MODULES = frozenset({
    "_bz2", "_ctypes", "_curses", "_curses_panel", "_dbm", "_gdbm", "_hashlib", "_interpchannels",
    "_interpqueues", "_interpreters", "_lzma", "_multiprocessing", "_overlapped", "_posixshmem",
    "_posixsubprocess", "_remote_debugging", "_scproxy", "_ssl", "_tkinter", "_uuid", "_winapi",
    "_wmi", "_zstd", "fcntl", "grp", "mmap", "msvcrt", "nt", "pwd", "readline", "resource",
    "syslog", "termios", "winreg", "winsound",
})

#: standard library modules that fail to import in the proxy -> the C module they need
#: (``ssl`` is not here: pywasm_sdk._unavailable stands in for it)
BROKEN_STDLIB = {
    "bz2": "_bz2", "ctypes": "_ctypes", "curses": "_curses", "dbm.gnu": "_gdbm", "dbm.ndbm": "_dbm",
    "lzma": "_lzma", "pty": "termios", "tty": "termios", "tkinter": "_tkinter", "turtle": "_tkinter",
}


class ProxyImportError(ModuleNotFoundError):
    """An import the proxy could not do either; ``reason`` says why, for the build's message."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{reason} (refused by pywasm build's check, as inside the proxy)", name=name)
        self.reason = reason


def _is_extension(spec: ModuleSpec) -> bool:
    origin = spec.origin or ""
    return origin == "built-in" or origin.endswith(tuple(EXTENSION_SUFFIXES))


def _distribution(top: str) -> str | None:
    from importlib.metadata import packages_distributions

    names = packages_distributions().get(top)
    return names[0] if names else None


class ProxyImports:
    """A meta path finder that refuses what the proxy's CPython cannot import:

    - a compiled extension module outside the standard library (any importer);
    - a standard library module of ``BROKEN_STDLIB`` (any importer);
    - a C module of ``MISSING_C_MODULES`` imported from outside the standard library (the
      native standard library is another version and may import C modules the proxy's does not
      need, e.g. Python 3.11's subprocess imports _posixsubprocess, 3.14's does not on WASI).
    """

    def __init__(self) -> None:
        self._looking: set[str] = set()
        self._stdlib = tuple(str(Path(p).resolve()) for p in
                             {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
        #: every refusal so far (a package may catch one and fall back)
        self.refused: list[ProxyImportError] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name in self._looking:
            return None
        top = name.partition(".")[0]
        broken = BROKEN_STDLIB.get(name) or BROKEN_STDLIB.get(top)
        if broken:
            self._refuse(name, f"the standard library module {name!r} does not work inside the proxy: "
                               f"its CPython is built without {broken!r}")
        if name in MISSING_C_MODULES and not self._stdlib_imports():
            self._refuse(name, f"the proxy's CPython is built without the C module {name!r}")
        if top in sys.stdlib_module_names:
            return None
        spec = self._real_spec(name, path, target)
        if spec is not None and _is_extension(spec):
            package = _distribution(top) or top
            self._refuse(name, f"package {package!r} needs its compiled extension module {name!r} "
                               f"({spec.origin}), and the proxy cannot load compiled extensions: a plugin "
                               "runs in CPython compiled to WebAssembly, which runs pure-Python code only. "
                               "Use a pure-Python package, or the package's pure-Python mode if it has one "
                               "(docs/packages.md)")
        return spec

    def _real_spec(self, name: str, path: object, target: object) -> ModuleSpec | None:
        self._looking.add(name)
        try:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is not self and find is not None:
                    spec: ModuleSpec | None = find(name, path, target)
                    if spec is not None:
                        return spec
            return None
        finally:
            self._looking.discard(name)

    def _stdlib_imports(self) -> bool:
        """Whether the import statement being run is in the standard library."""
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return False
        filename = frame.f_code.co_filename
        return filename.startswith("<frozen ") or filename.startswith(self._stdlib)

    def _refuse(self, name: str, reason: str) -> None:
        error = ProxyImportError(name, reason)
        self.refused.append(error)
        raise error


def refusal_behind(exc: BaseException) -> ProxyImportError | None:
    """The refusal that caused ``exc`` (itself, or one in its chain of causes and contexts)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ProxyImportError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def install() -> ProxyImports:
    """Put a :class:`ProxyImports` first on ``sys.meta_path`` and return it.

    Modules the proxy lacks that are already imported (``zipfile`` imports ``lzma`` and ``bz2``,
    and whatever ran before the check may have imported ``zipfile``) leave ``sys.modules``, so
    that the plugin's own import of them reaches the finder; their earlier importers keep them.
    """
    for name in [*BROKEN_STDLIB, *MISSING_C_MODULES]:
        sys.modules.pop(name, None)
    finder = ProxyImports()
    sys.meta_path.insert(0, finder)
    return finder
