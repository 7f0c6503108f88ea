"""Import a plugin natively, before componentize-py does, to report mistakes clearly.

Run in a child process (``python -m pywasm_sdk.tooling.preflight RESULT.json DIR MODULE``) so
that the plugin's code never runs in the build process and every build starts clean. The
child imports the plugin as the pre-initialisation inside the build will: no host attached, the
SDK's stand-ins for what cannot work inside the proxy installed (``pywasm_sdk._unavailable``, as
in the generated entry module), and imports the proxy's CPython cannot do refused
(:mod:`.proxy_python`: compiled extensions of packages, C modules it is built without). It writes
what it found to RESULT.json:

- ``{"ok": true, "callbacks": [...], "roots": [...], "modules": [...], "sources": {...}}``: the
  ABI callbacks the registered classes use, the root_ids, the plugin's own modules (those its
  folder provides on the path: :func:`own_module`, the rule the native mock host uses), and the file of every module the import loaded from outside the standard library and
  the SDK (the plugin's modules, in whatever layout, and the packages it uses): what the build
  cache key hashes (:mod:`.build_cache`);
- ``{"ok": false, "error": "...", "file": ..., "line": ...}``: a message that says what was wrong
  and where.
"""

from __future__ import annotations

import json
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any


def _where(exc: BaseException, plugin_dir: Path) -> tuple[str | None, int | None]:
    """The innermost frame of the traceback that is in the plugin's folder."""
    found: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve().is_relative_to(plugin_dir):
            found = (frame.filename, frame.lineno)
    return found


def async_problems(registrations: list[Any]) -> list[str]:
    """Methods declared ``async def`` where the ABI says a callback cannot await (``awaits: never``):
    the proxy needs the answer at once, or nothing could continue the stream after an await."""
    import inspect

    from pywasm_sdk.contexts import Context, HttpContext, RootContext, StreamContext

    from . import abi as abi_mod

    owners = {"root": RootContext, "http": HttpContext, "tcp": StreamContext, "any": Context}
    never = [(owners[cb.context], cb.method) for cb in abi_mod.load().callbacks.values()
             if cb.method and cb.awaits == "never"]
    may = sorted({cb.method for cb in abi_mod.load().callbacks.values() if cb.method and cb.awaits != "never"})
    found = []
    for reg in registrations:
        for cls in (reg.root, reg.root.http_context, reg.root.stream_context):
            for owner, name in never:
                if cls is None or not issubclass(cls, owner):
                    continue
                method = getattr(cls, name, None)
                if method is not None and inspect.iscoroutinefunction(method):
                    found.append(f"{cls.__qualname__}.{name} cannot be async: the proxy needs its answer "
                                 "at once, nothing could continue the stream after an await, or the "
                                 f"context is deleted right after it (these may await: {', '.join(may)}, "
                                 "and the callbacks of calls)")
    return found


def own_module(folder: Path, name: str, module: object) -> bool:
    """Whether ``module`` (``sys.modules[name]``) is one of the plugin's own modules: one its
    folder (resolved) provides on the path (``folder/x.py``, ``folder/x/...``), not merely one
    stored somewhere under it (a virtual environment in the project folder holds packages,
    pywasm_sdk included, that are not the plugin's). The SDK is never the plugin's. The rule of
    the build's check and of the native mock host (it imports nothing: the check runs it)."""
    top = name.partition(".")[0]
    if top == "pywasm_sdk":
        return False
    file = getattr(module, "__file__", None)
    paths = [file] if file else list(getattr(module, "__path__", None) or ())  # namespace packages
    for path in paths:
        try:
            relative = Path(path).resolve().relative_to(folder)
        except (OSError, ValueError):
            return False
        if not relative.parts or relative.parts[0].partition(".")[0] != top:
            return False
    return bool(paths)


def run(plugin_dir: Path, module: str) -> dict[str, Any]:
    from pywasm_sdk import _runtime, _unavailable
    from pywasm_sdk.errors import NoHostError

    from . import proxy_python

    runtime = _runtime.current
    proxy_python.install()
    _unavailable.install()  # in front of it, as the entry module installs it in the proxy
    sys.path.insert(0, str(plugin_dir))
    try:
        __import__(module)
    except SyntaxError as exc:
        return {"ok": False, "error": f"syntax error: {exc.msg}", "file": exc.filename,
                "line": exc.lineno, "text": (exc.text or "").rstrip("\n")}
    except ModuleNotFoundError as exc:
        file, line = _where(exc, plugin_dir)
        refused = proxy_python.refusal_behind(exc)
        return {"ok": False, "file": file, "line": line,
                "error": f"cannot import module {exc.name!r}: " + (
                    refused.reason if refused else "it is neither in the plugin's folder, the standard "
                                                   "library nor the installed packages")}
    except NoHostError as exc:
        file, line = _where(exc, plugin_dir)
        return {"ok": False, "file": file, "line": line, "error": f"a hostcall at import time: {exc}"}
    except BaseException as exc:  # noqa: BLE001 - any failure of the plugin is reported
        file, line = _where(exc, plugin_dir)
        refused = proxy_python.refusal_behind(exc)
        return {"ok": False, "file": file, "line": line,
                "error": (f"cannot import module {refused.name!r}: {refused.reason}\n" if refused else "")
                + "importing the plugin raised:\n" + "".join(traceback.format_exception(exc)).rstrip()}
    if not runtime.registrations():
        return {"ok": False, "file": str(plugin_dir / f"{module}.py"), "line": None,
                "error": "the plugin registers no root context: call register(...) at module level, "
                         "e.g. `register(http=MyHttpContext)` or `register(MyRootContext)`"}
    problems = async_problems(runtime.registrations())
    if problems:
        return {"ok": False, "file": str(plugin_dir / f"{module}.py"), "line": None,
                "error": "; ".join(problems)}
    modules = sorted(name for name, mod in list(sys.modules.items()) if own_module(plugin_dir, name, mod))
    return {"ok": True, "callbacks": runtime.used_callbacks(),
            "roots": [r.root_id for r in runtime.registrations()], "modules": modules,
            "sources": _sources(),
            "compiles_source": _compiles_source([sys.modules[m] for m in modules])}


def _sources() -> dict[str, str]:
    """Module name -> file, for the loaded modules that a build compiles in from outside the
    standard library and the SDK (componentize-py brings its own standard library, and the
    build cache hashes the SDK as a whole)."""
    import pywasm_sdk

    paths = sysconfig.get_paths()
    skip = [Path(p).resolve() for p in (paths["stdlib"], paths["platstdlib"], *pywasm_sdk.__path__)]
    found = {}
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if name == "__main__" or not isinstance(file, str):
            continue
        path = Path(file).resolve()
        if not any(path.is_relative_to(folder) for folder in skip):
            found[name] = str(path)
    return dict(sorted(found.items()))


#: builtins that compile source text at run time (they need CPython's compiler in the module)
_COMPILING = frozenset({"compile", "exec", "eval"})


def _compiles_source(modules: list[Any]) -> list[str]:
    """``module:line`` of each call of compile/exec/eval in the plugin's own modules."""
    import dis
    import types

    found: list[str] = []
    seen: set[int] = set()

    def scan(code: types.CodeType, module: str) -> None:
        if id(code) in seen:
            return
        seen.add(id(code))
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval in _COMPILING:
                found.append(f"{module}:{ins.positions.lineno if ins.positions else '?'} {ins.argval}()")
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                scan(const, module)

    for mod in modules:
        for value in list(vars(mod).values()):
            for fn in _functions(value):
                scan(fn.__code__, mod.__name__)
    return sorted(set(found))


def _functions(value: object) -> list[Any]:
    import types

    if isinstance(value, types.FunctionType):
        return [value]
    if isinstance(value, type):
        members = (getattr(m, "__func__", m) for m in vars(value).values())
        return [m for m in members if isinstance(m, types.FunctionType)]
    return []


def main() -> None:
    result_path, plugin_dir, module = sys.argv[1:4]
    result = run(Path(plugin_dir).resolve(), module)
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
