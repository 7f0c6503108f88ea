"""``pywasm build``: a Python plugin in, one proxy-wasm module out.

Stages (each reported to ``progress``):

1. check    import the plugin natively to catch mistakes with clear messages and to learn
            which callbacks its classes use (:mod:`.preflight`);
2. compile  componentize-py: plugin + SDK + CPython 3.14 -> a component against the WIT world
            derived from abi/, pre-initialised (the plugin is imported at build time);
3. fuse     meld: the component's core modules -> one core module with one memory;
4. link     our linker: -> ``env.proxy_*`` imports, ``proxy_on_*`` exports, dead code removed;
5. verify   the result validates and imports/exports only what Envoy has and expects.

Nothing is written unless every stage succeeded; the output file is replaced atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import abi as abi_mod
from . import checks, linker, resources, wasm_binary
from .preflight import own_module

Progress = Callable[[str], None]

ENTRY_MODULE = "pywasm_entry"


class BuildError(Exception):
    """A build failed; the message says what was wrong and where."""


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin's code is: its folder (put on the path) and its top-level module."""

    folder: Path
    module: str

    @property
    def main_file(self) -> Path:
        return self.folder / f"{self.module}.py"

    def owns(self, name: str, module: object) -> bool:
        """Whether ``module`` (``sys.modules[name]``) is one of the plugin's own modules (see
        :func:`.preflight.own_module`)."""
        return own_module(self.folder, name, module)


@dataclass
class BuildResult:
    output: Path
    size: int
    callbacks: list[str]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    code_size: int = 0  # bytes of the code section: what Envoy's V8 compiles at every load
    data_size: int = 0  # bytes of the data section: the pre-initialised memory of every VM


def resolve_plugin(path: str | os.PathLike[str]) -> PluginSource:
    """A ``.py`` file, or a folder with ``plugin.py`` (its other modules come along)."""
    p = Path(path)
    if p.is_dir():
        if not (p / "plugin.py").is_file():
            raise BuildError(f"{p}: a plugin folder must contain plugin.py")
        return PluginSource(p.resolve(), "plugin")
    if not p.exists():
        raise BuildError(f"{p}: no such file or folder")
    if p.suffix != ".py":
        raise BuildError(f"{p}: a plugin is a .py file or a folder with plugin.py")
    if not p.stem.isidentifier():
        raise BuildError(f"{p}: the file name must be a Python module name (letters, digits, _)")
    if p.stem in ("wit_world", ENTRY_MODULE):
        raise BuildError(f"{p}: {p.stem!r} is a name the build uses itself; rename the file")
    return PluginSource(p.resolve().parent, p.stem)


def _executable(distribution: str, name: str) -> str:
    """A console executable shipped by a wheel, found through its RECORD, else on PATH."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if len(f.parts) > 1 and f.parts[-2] in ("bin", "Scripts") and Path(f.parts[-1]).stem == name:
            return str(Path(f.locate()).resolve())
    found = shutil.which(name)
    if found:
        return found
    raise BuildError(f"{name} is missing: install pywasm-sdk's dependencies (`pip install pywasm-sdk`)")


def _run(cmd: list[str], stage: str, source: PluginSource, path_map: dict[str, Path]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{stage} failed:\n{_explain(proc.stdout + proc.stderr, path_map)}")


def _explain(output: str, path_map: dict[str, Path]) -> str:
    """The useful part of componentize-py's or meld's output, with real file paths."""
    m = re.search(r"(?:AssertionError|Error): (.*?)\n\n(?:Caused by|Stack backtrace)", output, re.S)
    text = m.group(1) if m else output.strip()
    missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", text)
    if missing:
        text += (f"\n(CPython inside the proxy has no module {missing.group(1)!r}: a plugin can use "
                 "the standard library's pure-Python modules, those compiled into componentize-py's "
                 "CPython, and pure-Python packages)")
    if "called trapping stub" in text:
        text += ("\n(the plugin called the host while it was being imported; call the host "
                 "from a callback such as on_configure)")
    for virtual, real in path_map.items():
        text = text.replace(f'"{virtual}', f'"{real}/')
    return text


def _entry_source(source: PluginSource, path_map: dict[str, Path], callbacks: list[str]) -> str:
    # Tracebacks name files relative to the folder they came from ("plugin.py", "pkg/mod.py",
    # "pywasm_sdk/callouts.py"): the module must not carry the folders it was built in, or the
    # same sources built elsewhere would give other bytes (docs/build.md, "Reproducible builds").
    # Only the plugin's own source lines are kept for tracebacks (the rest would only take memory).
    relative = {v: "" for v in path_map}
    plugin_folder = next(v for v, p in path_map.items() if p == source.folder)
    return f'''"""Generated by pywasm build: the module componentize-py pre-initialises."""
import sys

# componentize-py's CPython may write into the folders it imports from: the plugin's must
# stay as they were
sys.dont_write_bytecode = True

from pywasm_sdk import _bridge

_bridge.install_stand_ins()  # before componentize-py's start-up imports its type support

import gc
import weakref  # componentize-py's start-up imports it after this module: count it in

from pywasm_sdk import _entry, log

from pywasm_sdk._unavailable import install; install()  # ssl, socket, threads...: import, refuse use
import {source.module}  # the plugin (hostcalls raise NoHostError while it is imported)

_entry.finish_import({relative!r}, ({plugin_folder!r},))
log.route_standard_output()
_bridge.install_stand_ins(late=True)
_bridge.drop_zip_imports()
# the entry surface's functions, bound to the one runtime the plugin registered in
_ENTRIES = {{name: getattr(_entry, name) for name in {callbacks!r} + list(_bridge.CONTEXT_ENTRIES)}}
# the linker finds the Python side through the anchor, and keeps the builtin modules it names
ANCHOR = _bridge.anchor(_ENTRIES, _bridge.builtin_modules_in_use(),
                        eager_delete=_entry.streams_observe_delete())
# the import system's per-folder caches hold the build's folders: their listings (files beside
# the plugin that it never imported) and their modification times; the proxy has no files
sys.path_importer_cache.clear()
gc.collect()


class WitWorld:
    """Nothing calls this: the module's exports are the bridge the linker adds."""

    def pywasm_unused(self) -> None:
        pass
'''


def package_paths() -> list[Path]:
    """Where the Python that runs the build finds installed packages: its site-packages, the
    folders its .pth files add (editable installs) and $PYTHONPATH, in its own order.

    Asked of a fresh interpreter, so the answer does not depend on what the calling process
    did to its sys.path (pytest, for one, adds the rootdir).
    """
    probe = "import json, os, sys; print(json.dumps([sys.path, os.path.dirname(os.__file__)]))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise BuildError(f"cannot ask {sys.executable} where its packages are:\n{proc.stderr.strip()}")
    entries, stdlib = json.loads(proc.stdout)
    found = []
    for entry in entries:
        path = Path(entry).resolve() if entry else None  # "" is the working directory of -c
        if path and path.is_dir() and path != Path(stdlib).resolve() and path.name != "lib-dynload":
            found.append(path)
    return found


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.resolve() not in out:
            out.append(path.resolve())
    return out


def preflight(source: PluginSource) -> dict[str, Any]:
    """Run the native check in a child process (the plugin's code never runs in ours)."""
    with tempfile.TemporaryDirectory(prefix="pywasm-check-") as tmp:
        result_file = Path(tmp) / "result.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(resources.sdk_source_root())] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        # -B: importing the plugin must not write __pycache__ into the author's folder
        proc = subprocess.run(
            [sys.executable, "-B", "-m", "pywasm_sdk.tooling.preflight", str(result_file),
             str(source.folder), source.module],
            cwd=tmp, env=env, capture_output=True, text=True)
        if not result_file.exists():
            raise BuildError(f"checking the plugin failed:\n{proc.stderr.strip() or proc.stdout.strip()}")
        result: dict[str, Any] = json.loads(result_file.read_text())
    if not result["ok"]:
        where = result.get("file") or str(source.main_file)
        if result.get("line"):
            where += f":{result['line']}"
        text = f"\n    {result['text']}" if result.get("text") else ""
        raise BuildError(f"{where}: {result['error']}{text}")
    return result


def build(plugin: str | os.PathLike[str], output: str | os.PathLike[str], *,
          progress: Progress | None = None, keep_temp: str | os.PathLike[str] | None = None,
          keep_compiler: bool = False, debug: bool = False) -> BuildResult:
    """Build a plugin into a proxy-wasm module at ``output``."""
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    stages: dict[str, float] = {}
    source = resolve_plugin(plugin)
    out = Path(output)
    if out.is_dir():
        raise BuildError(f"{out}: the output is a folder; name the .wasm file to write")

    def stage(name: str, message: str) -> None:
        stages[name] = time.monotonic()
        say(message)

    stage("check", f"checking {source.main_file}")
    found = preflight(source)
    callbacks = found["callbacks"]

    work = Path(keep_temp) if keep_temp else Path(tempfile.mkdtemp(prefix="pywasm-build-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "wit").mkdir(exist_ok=True)
        (work / "wit" / "world.wit").write_text(abi_mod.wit_world())
        # componentize-py maps each -p folder to /0, /1, ... in that order; tracebacks and
        # error messages show those names, so the entry module and _explain map them back.
        search = _unique([work, source.folder, resources.sdk_source_root(), *package_paths()])
        path_map = {f"/{n}/": p for n, p in enumerate(search)}
        (work / f"{ENTRY_MODULE}.py").write_text(_entry_source(source, path_map, callbacks))

        stage("compile", "compiling with componentize-py (CPython 3.14, pre-initialised)")
        component = work / "plugin.component.wasm"
        # componentize-py's Python API takes the path as given; its command line would append
        # the site-packages of whichever python3 is first on PATH (or of $VIRTUAL_ENV).
        args = [[str(work / "wit")], [abi_mod.WORLD_NAME], [], False, None, [str(p) for p in search],
                [], ENTRY_MODULE, str(component), True, [], [], False, None]
        _run([sys.executable, "-c", "import json, sys, componentize_py; "
              "componentize_py.componentize(*json.loads(sys.argv[1]))", json.dumps(args)],
             "componentize-py", source, path_map)

        stage("fuse", "fusing the component into one core module (meld)")
        fused = work / "fused.wasm"
        _run([_executable("meld-cli", "meld"), "fuse", "--preserve-names", "--no-attestation",
              str(component), "-o", str(fused)], "meld", source, path_map)

        stage("link", "linking the proxy-wasm module")
        try:
            uses_compiler = found.get("compiles_source", [])
            if uses_compiler and not keep_compiler:
                say(f"keeping CPython's compiler: {', '.join(uses_compiler)} "
                    "(compile(), exec() or eval() of a string)")
            wasm, report = linker.link(fused.read_bytes(), callbacks, keep_names=debug,
                                       keep_compiler=keep_compiler or bool(uses_compiler))
        except linker.LinkError as exc:
            raise BuildError(f"linking failed (componentize-py or meld output changed shape?): {exc}") from exc

        say(f"linked: {report.raw_hostcalls} hostcalls bridged, {len(report.bridged)} WASI imports "
            f"adapted, {report.removed_functions} unreachable functions removed "
            f"({len(report.removed_modules)} unused builtin modules"
            f"{', the compiler' if report.compiler_removed else ''}), "
            f"{report.zeroed_bytes / 1e6:.1f} MB of freed heap zeroed")
        stage("verify", "verifying the module")
        found_problems = checks.problems(wasm)
        if found_problems:
            raise BuildError("the module would not load in Envoy:\n  " + "\n  ".join(found_problems))
        _write_atomically(out, wasm)
    finally:
        if not keep_temp:
            _remove_tree(work)
    now = time.monotonic()
    names = list(stages)
    durations = {n: (stages[names[i + 1]] if i + 1 < len(names) else now) - stages[n]
                 for i, n in enumerate(names)}
    sections = dict(wasm_binary.read(wasm).sections)
    code, data = sections.get("code", 0), sections.get("data", 0)
    say(f"wrote {out} ({len(wasm) / 1e6:.1f} MB: code {code / 1e6:.1f} MB, pre-initialised data "
        f"{data / 1e6:.1f} MB) in {now - started:.1f} s")
    return BuildResult(out, len(wasm), callbacks, now - started, durations, code, data)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
