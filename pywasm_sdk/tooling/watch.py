"""``pywasm run --watch``: rebuild a plugin when one of its files changes, and swap the new module
into the running Envoy without dropping its listener.

How the swap works: the run's wasm filters are not written into the listener. Each is a
``config_discovery`` reference to an extension configuration (Envoy's ECDS) that Envoy reads
from a file in the watcher's folder. To swap the module, the watcher writes that file anew
(atomically: Envoy watches it by name, and a rename is one complete event) pointing at the new
module. Envoy compiles it and the next streams and connections of the same listener use it;
open connections keep going (an HTTP keep-alive connection's next request already runs the new
module), the listener is neither drained nor bound again, and Envoy keeps its pid. Envoy's
``extension_config_discovery.<http|network>_filter.<name>.update_success`` and
``update_rejected`` counters say whether it took the new module.

A build that fails, or a module Envoy refuses (its ``on_configure`` rejects the configuration,
it traps while starting), leaves the previous module serving; the error is printed.

The build runs in a child process (``pywasm build --cache``), polled from the log loop, so the
plugin's log keeps flowing during a build and Ctrl-C stops a build under way by its pid.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import envoy as E
from . import wasm_file
from .build import resolve_plugin

__all__ = ["DynamicFilters", "SourceFiles", "Watcher", "serve_filters_dynamically"]

_ECDS_TYPE = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
#: wasm filter name -> the stats segment of its ECDS subscription
_KINDS = {"envoy.filters.http.wasm": "http_filter", "envoy.filters.network.wasm": "network_filter"}
#: a change is acted on once the files have been quiet this long (editors write in several steps)
SETTLE_SECONDS = 0.3
#: how often the sources are looked at, and Envoy's counters while it loads a module
POLL_SECONDS = 0.25
#: V8 compiles about 1 MB of code per second on a busy core: a module not reported by then is lost
LOAD_LIMIT_SECONDS = 300.0


# ------------------------------------------------------------------------------ ECDS

@dataclass
class _Slot:
    name: str                   # the ECDS resource name, and its stats segment
    kind: str                   # "http_filter" or "network_filter"
    typed_config: dict[str, Any]  # the wasm filter's own config (envoy...wasm.v3.Wasm)
    path: Path                  # the file Envoy reads it from


class DynamicFilters:
    """The wasm filters of a bootstrap, served through ECDS files in ``folder``.

    ``bootstrap`` is the configuration to start Envoy with: a copy of the given one where each
    wasm filter is a ``config_discovery`` reference. :meth:`swap` points every filter at a new
    module; :meth:`counters` reads whether Envoy took it.
    """

    def __init__(self, bootstrap: dict[str, Any], folder: Path) -> None:
        self.bootstrap = copy.deepcopy(bootstrap)
        # ECDS (like every xDS) needs to know who this Envoy is; a plugin sees it as node_id
        self.bootstrap.setdefault("node", {"id": "pywasm-run", "cluster": "pywasm-run"})
        self.folder = folder
        found = list(_wasm_filters(self.bootstrap))
        if not found:
            raise E.EnvoyError("the configuration has no wasm filter to serve dynamically")
        self.slots: list[_Slot] = []
        for i, node in enumerate(found):
            name = node["typed_config"]["config"].get("name") or "pywasm"
            name = name if len(found) == 1 else f"{name}-{i}"
            slot = _Slot(name, _KINDS[node["name"]], node["typed_config"], folder / f"ecds-{i}.yaml")
            self.slots.append(slot)
            self._write(slot, slot.typed_config)
            node.clear()
            node.update({"name": name, "config_discovery": {
                "config_source": {"path_config_source": {"path": str(slot.path)},
                                  "resource_api_version": "V3"},
                "type_urls": [slot.typed_config["@type"]]}})

    def _write(self, slot: _Slot, typed_config: dict[str, Any]) -> None:
        document = {"resources": [{"@type": _ECDS_TYPE, "name": slot.name, "typed_config": typed_config}]}
        partial = slot.path.with_name(f".{slot.path.name}.partial")
        partial.write_text(yaml.safe_dump(document, sort_keys=False))
        os.replace(partial, slot.path)  # Envoy reacts to the rename: it never reads half a file

    def swap(self, wasm: Path) -> None:
        """Every wasm filter loads ``wasm`` from now on (Envoy picks the files up at once)."""
        for slot in self.slots:
            slot.typed_config["config"]["vm_config"]["code"] = {"local": {"filename": str(Path(wasm).resolve())}}
            self._write(slot, slot.typed_config)

    def counters(self, envoy: E.Envoy, timeout: float = 1.0) -> tuple[int, int]:
        """(updates Envoy took, updates it refused), over every filter, from its admin ``/stats``.
        While V8 compiles a module Envoy's main thread (and so the admin) may not answer: then
        ``OSError``/``EnvoyError`` after ``timeout``, and the caller asks again later."""
        text = envoy.admin_get("/stats?filter=extension_config_discovery", timeout=timeout)
        values = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)

        def total(counter: str) -> int:
            return sum(int(values.get(f"extension_config_discovery.{s.kind}.{s.name}.{counter}", 0))
                       for s in self.slots)
        return total("update_success"), total("update_rejected")


def _wasm_filters(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("name") in _KINDS and isinstance(node.get("typed_config"), dict):
            yield node
            return
        for value in node.values():
            yield from _wasm_filters(value)
    elif isinstance(node, list):
        for item in node:
            yield from _wasm_filters(item)


def serve_filters_dynamically(bootstrap: dict[str, Any]) -> DynamicFilters:
    """:class:`DynamicFilters` with its files in a new temporary folder (removed by ``close``)."""
    return DynamicFilters(bootstrap, Path(tempfile.mkdtemp(prefix="pywasm-watch-")))


# ------------------------------------------------------------------------------ the sources

class SourceFiles:
    """The files a plugin is built from, as ``pywasm build`` sees them, and whether they changed.

    A folder plugin: every ``.py`` file under its folder; a single-file plugin: that file; a
    built ``.wasm``: the module itself (someone else builds it).
    """

    def __init__(self, plugin: str | os.PathLike[str]) -> None:
        self.plugin = str(plugin)
        if self.plugin.endswith(".wasm"):
            self._root, self._pattern = None, Path(plugin).resolve()
        else:
            source = resolve_plugin(plugin)
            single = source.module != "plugin"
            self._root, self._pattern = (None, source.main_file) if single else (source.folder, None)
        self.snapshot = self._look()

    def describe(self) -> str:
        return f"{self._root}/**/*.py" if self._root is not None else str(self._pattern)

    def _look(self) -> dict[Path, tuple[int, int]]:
        files = ([p for p in self._root.rglob("*.py") if "__pycache__" not in p.parts]
                 if self._root is not None else [self._pattern])
        seen = {}
        for f in files:
            with contextlib.suppress(OSError):  # deleted between the listing and the stat
                st = f.stat()
                seen[f] = (st.st_mtime_ns, st.st_size)
        return seen

    def changes(self) -> list[str]:
        """Names of the files added, removed or modified since the last call (empty: none)."""
        now = self._look()
        changed = sorted({p.name for p in now.keys() ^ self.snapshot.keys()} |
                         {p.name for p in now.keys() & self.snapshot.keys() if now[p] != self.snapshot[p]})
        self.snapshot = now
        return changed


# ------------------------------------------------------------------------------ the loop

class Watcher:
    """The state of a watched run, advanced by :meth:`tick` from the log loop (never blocks).

    idle -> (files changed and settled) -> building (a child ``pywasm build --cache``) -> loading
    (Envoy compiling the new module) -> idle. A change during a build starts another build when
    the first one ends.
    """

    def __init__(self, plugin: str | os.PathLike[str], filters: DynamicFilters, envoy: E.Envoy,
                 filter_type: str | None, override: str | None, out: Callable[[str], None]) -> None:
        """``filter_type`` is what the run's listener serves ("http"/"network"), or None for an
        author's own configuration (its filters say what they are)."""
        self.plugin, self.filters, self.envoy = str(plugin), filters, envoy
        self.filter_type, self.override, self.out = filter_type, override, out
        self.sources = SourceFiles(plugin)
        self.generation = 0
        self._state = "idle"
        self._changed_at: float | None = None
        self._changed: set[str] = set()
        self._build: subprocess.Popen[str] | None = None
        self._build_started = 0.0
        self._build_output: Path | None = None
        self._loading_since = 0.0
        self._seen = (0, 0)  # Envoy's (taken, refused) counters when it last had nothing to load
        self._next_look = 0.0

    def banner(self) -> str:
        """What the run prints about the watch before the plugin's log."""
        what = ("a new module is swapped" if self.plugin.endswith(".wasm")
                else "a change rebuilds the plugin and swaps it")
        return f"watching {self.sources.describe()}: {what} into this listener"

    # -- called by the log loop ---------------------------------------------------------------

    def started(self) -> None:
        """Envoy is up: tell whether it took the first module (with ECDS a refusal does not stop it)."""
        self._seen = self.filters.counters(self.envoy, timeout=30)  # idle Envoy: answers at once
        taken, refused = self._seen
        if refused and not taken:
            self.out("Envoy refused the module (see the log above); fix the plugin and save: "
                     "the watcher rebuilds it")

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + POLL_SECONDS
        if changed := self.sources.changes():
            self._changed.update(changed)
            self._changed_at = now
        if self._state == "building":
            self._poll_build(now)
        elif self._state == "loading":
            self._poll_envoy(now)
        if self._state == "idle" and self._changed_at is not None and now - self._changed_at >= SETTLE_SECONDS:
            self._start_build(now)

    def close(self) -> None:
        """Stop a build under way (its whole process group, by pid) and remove the watcher's files."""
        if self._build is not None and self._build.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._build.pid, signal.SIGTERM)
            try:
                self._build.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._build.pid, signal.SIGKILL)
                self._build.wait()
        shutil.rmtree(self.filters.folder, ignore_errors=True)

    # -- the states ------------------------------------------------------------------------------

    def _start_build(self, now: float) -> None:
        names, self._changed, self._changed_at = sorted(self._changed), set(), None
        self.generation += 1
        self._build_output = self.filters.folder / f"module-{self.generation}.wasm"
        self._build_started = now
        if self.plugin.endswith(".wasm"):
            self.out(f"changed: {', '.join(names)}; loading it")
            shutil.copyfile(self.plugin, self._build_output)  # the file may change again under Envoy
            self._built(now)
            return
        self.out(f"changed: {', '.join(names)}; rebuilding")
        cmd = [sys.executable, "-m", "pywasm_sdk.tooling.cli", "build", "--cache", "--quiet",
               self.plugin, "-o", str(self._build_output)]
        # its own session: Ctrl-C in the terminal reaches us, and close() stops the whole build
        self._build = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._state = "building"

    def _poll_build(self, now: float) -> None:
        assert self._build is not None
        if self._build.poll() is None:
            return
        output = (self._build.stdout.read() if self._build.stdout else "").strip()
        status, self._build = self._build.returncode, None
        if status != 0:
            self._state = "idle"
            self.out(f"build failed after {now - self._build_started:.1f} s; the previous module keeps serving:")
            for line in output.splitlines():
                self.out(f"    {line}")
            return
        self._built(now)

    def _built(self, now: float) -> None:
        assert self._build_output is not None
        try:
            module = wasm_file.load(self._build_output)
            kind = module.filter_type(self.override) if self.filter_type is not None else None
        except wasm_file.ModuleFileError as exc:
            self._state = "idle"
            self.out(f"the new module cannot be used ({exc}); the previous module keeps serving")
            return
        if kind != self.filter_type:
            self._state = "idle"
            self.out(f"the plugin is now a{'' if kind == 'network' else 'n'} {kind} filter and the run serves "
                     f"a{'n' if self.filter_type == 'http' else ''} {self.filter_type} one: restart pywasm run "
                     "to change the listener; the previous module keeps serving")
            return
        took = "" if self.plugin.endswith(".wasm") else f"rebuilt in {now - self._build_started:.1f} s; "
        self.out(f"{took}Envoy is loading the new module ({module.size / 1e6:.1f} MB; the listener stays up)")
        self.filters.swap(self._build_output)
        self._loading_since = time.monotonic()
        self._state = "loading"

    def _poll_envoy(self, now: float) -> None:
        since, (taken_before, refused_before) = self._loading_since, self._seen
        try:
            taken, refused = self.filters.counters(self.envoy)
        except (OSError, E.EnvoyError):
            return  # admin busy while V8 compiles on the main thread: ask again
        if taken > taken_before or refused > refused_before:
            self._seen = (taken, refused)
        if taken > taken_before:
            self._state = "idle"
            self.out(f"new module serving (Envoy loaded it in {now - since:.1f} s; same listener, "
                     f"envoy pid {self.envoy.pid}); its first log lines follow")
        elif refused > refused_before:
            self._state = "idle"
            self.out("Envoy refused the new module (its reason is in the log above); the previous module "
                     "keeps serving")
        elif now - since > LOAD_LIMIT_SECONDS:
            self._state = "idle"
            self.out(f"Envoy did not report on the new module within {LOAD_LIMIT_SECONDS:.0f} s; watching "
                     "again (save a file to try once more)")
