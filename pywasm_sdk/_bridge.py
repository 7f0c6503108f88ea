"""How the generated module reaches Python without componentize-py's runtime.

The build links a small bridge (generated WAT, see ``pywasm_sdk/tooling/bridge.py``) into the
pre-initialised interpreter. Each ``proxy_on_*`` export calls a Python callable with
``PyObject_Vectorcall``, and each raw hostcall is a builtin function (``METH_FASTCALL``) written
in WAT that converts its arguments with CPython's C API and calls ``env.proxy_*`` directly. No
argument is copied into a temporary allocation, so nothing is left behind per call.

The bridge finds the Python side through an *anchor*: a bytes object made here during
pre-initialisation, which starts with a magic number and holds the addresses (``id()``, which in
CPython is the object's address in linear memory, kept as is by the snapshot) of the callables the
exports call, of :func:`bind`, and a zeroed area in which the linker writes the ``PyMethodDef``
records and C strings of the raw hostcalls. The linker finds the magic in the snapshot, reads
the addresses, and patches the area.

Runs inside the proxy only; imported by the generated entry module during the build.
"""

from __future__ import annotations

import gc
import struct
import sys
import types

from . import hostcalls
from ._abi import CALLBACKS

#: The anchor's first 16 bytes, written as hex: the raw bytes then exist once in the snapshot,
#: in the anchor itself (``bytes.fromhex`` builds it in one step, with no temporary copy).
MAGIC_HEX = "7079" "7761" "736d" "2d61" "6e63" "686f" "722d" "0001"  # "pywasm-anchor-\0\1"
ANCHOR_FORMAT = 3
#: the entry surface's functions for the bridge's own bookkeeping of stream contexts, in the
#: anchor after bind (see build/bridge.wat, "stream contexts")
CONTEXT_ENTRIES = ("create_stream_context", "forget_contexts")
#: anchor flag: the plugin's streams override on_delete, so each delete enters Python at once
EAGER_DELETE = 1
#: bytes the linker may use in the anchor for method records and names
RESERVED = 4096

#: modules componentize-py's start-up imports to support WIT types and async functions.
#: A plugin's world has no WIT types and no async exports, so light stand-ins keep
#: ``dataclasses``/``typing``/``inspect``/``ast``/... out of every plugin's snapshot unless
#: the plugin imports them itself. (componentize-py also imports ``random``, for a seed it
#: only uses with real WASI: a stand-in too, but only if the plugin did not import it.)
_STAND_INS = ("componentize_py_types", "componentize_py_async_support",
              "componentize_py_async_support.streams", "componentize_py_async_support.futures")
_LATE_STAND_INS = ("random",)


class _StandIn:
    """Enough of a module for componentize-py to take attributes from at start-up."""

    class Some:
        pass

    class Ok:
        pass

    class Err(Exception):
        pass

    ByteStreamReader = StreamReader = FutureReader = object

    @staticmethod
    def callback(*_args: object) -> None:
        raise RuntimeError("pywasm plugins have no async WIT exports")

    @staticmethod
    def seed(*_args: object) -> None:
        """Reseeding happens when the VM starts (see _dispatch), not in componentize-py."""


def install_stand_ins(late: bool = False) -> None:
    """Put stand-ins in ``sys.modules`` for the modules componentize-py's start-up imports and
    nobody imported yet: its own before the plugin is imported, the standard library's
    (``late``) after it."""
    for name in _LATE_STAND_INS if late else _STAND_INS:
        if name not in sys.modules:
            module = type(sys)(name)
            module.__dict__.update({k: v for k, v in vars(_StandIn).items() if not k.startswith("__")})
            module.__pywasm_stand_in__ = True  # type: ignore[attr-defined]
            sys.modules[name] = module


def _forget_stand_ins() -> None:
    for name in (*_STAND_INS, *_LATE_STAND_INS):
        if getattr(sys.modules.get(name), "__pywasm_stand_in__", False):
            del sys.modules[name]


class _Raw:
    """The raw hostcalls, as attributes, for :func:`hostcalls.install`."""

    def __init__(self, functions: tuple[object, ...]) -> None:
        for name, fn in zip(hostcalls.RAW_NAMES, functions):
            setattr(self, name, fn)


def bind(functions: tuple[object, ...]) -> None:
    """Called once by the bridge when the VM first enters the plugin: the raw hostcalls,
    in ``hostcalls.RAW_NAMES`` order, become the SDK's host."""
    _forget_stand_ins()
    hostcalls.install(_Raw(functions))


def drop_zip_imports() -> None:
    """Forget importing from zip files: the proxy has no files, and zipimport is what keeps the
    zlib module (about 90 kB of code and its tables) in every plugin that does not use zlib."""
    zipimport = sys.modules.pop("zipimport", None)
    if zipimport is not None:
        sys.path_hooks[:] = [hook for hook in sys.path_hooks if hook is not zipimport.zipimporter]
    sys.path_importer_cache.clear()


def builtin_modules_in_use() -> list[str]:
    """The builtin C modules this interpreter has imported, or whose name any loaded code
    mentions (``import zlib`` inside a function runs only later): the linker keeps these and
    removes the code of every other builtin module."""
    gc.collect()  # what was just dropped (zipimport: drop_zip_imports) must not count
    builtin = set(sys.builtin_module_names)
    used = {name for name in sys.modules if name in builtin}
    seen: set[int] = set()

    def scan(code: types.CodeType) -> None:
        if id(code) in seen:
            return
        seen.add(id(code))
        for name in code.co_names:
            if name in builtin:
                used.add(name)
        for const in code.co_consts:
            if type(const) is types.CodeType:
                scan(const)
            elif type(const) is str and const in builtin:
                used.add(const)

    for obj in gc.get_objects():
        if type(obj) is types.FunctionType:
            scan(obj.__code__)
    return sorted(used)


def anchor(entries: dict[str, object], modules: list[str], eager_delete: bool) -> bytes:
    """The anchor for these callables: the exported callbacks' and CONTEXT_ENTRIES (keep the
    bytes and every entry alive: module globals)."""
    unknown = set(entries) - set(CALLBACKS) - set(CONTEXT_ENTRIES)
    if unknown:
        raise ValueError(f"neither ABI callbacks nor {', '.join(CONTEXT_ENTRIES)}: {sorted(unknown)}")
    missing = [n for n in CONTEXT_ENTRIES if n not in entries]
    if missing:
        raise ValueError(f"the anchor needs {', '.join(missing)}")
    return anchor_bytes([id(entries[n]) if n in entries else 0 for n in CALLBACKS], id(bind),
                        [id(entries[n]) for n in CONTEXT_ENTRIES], EAGER_DELETE if eager_delete else 0,
                        len(hostcalls.RAW_NAMES), modules)


def anchor_bytes(entries: list[int], bind_address: int, context_entries: list[int], flags: int,
                 raw_count: int, modules: list[str]) -> bytes:
    """Magic, format, the callables of the exported callbacks (in ABI order, 0 for callbacks the
    module does not export), :func:`bind`, those of CONTEXT_ENTRIES, the flags, the number of raw
    hostcalls, the builtin modules to keep, and the reserved area (built in one step from hex:
    see MAGIC_HEX)."""
    names = ",".join(modules).encode()
    names += b"\0" * (-len(names) % 4)
    words = [ANCHOR_FORMAT, len(entries), *entries, bind_address, *context_entries, flags, raw_count,
             RESERVED, len(names)]
    return bytes.fromhex(MAGIC_HEX + struct.pack(f"<{len(words)}I", *words).hex() + names.hex()
                         + "00" * RESERVED)
