"""Reporting an exception that escaped plugin code, without ever raising in turn.

A plugin that raises on every request must not bury the proxy's log under identical
tracebacks. The first exception of a kind (same type, same traceback frames, same callback)
is logged in full; its repeats are only counted, and one summary line per interval says how
many there were. Time is the proxy's clock (the SDK's ``get_current_time_ns``, which the mock
host's ``advance_time`` drives): a summary is written when an exception arrives after the
interval, or on the plugin's next tick. No threads or timers.
"""

from __future__ import annotations

import sys

from . import _runtime, _traceback, hostcalls, log
from ._abi import LogLevel
from .errors import ConfigurationError

TYPE_CHECKING = False  # typing is not imported at run time: it would weigh on every plugin
if TYPE_CHECKING:
    from types import CodeType
    from typing import TypeAlias

    #: a kind of exception: (callback, exception type, the traceback's (code, line) frames)
    Key: TypeAlias = "tuple[str, type[BaseException], tuple[tuple[CodeType, int], ...]]"

#: build-time folder names in tracebacks ("/1/") -> the plugin author's folders
path_map: dict[str, str] = {}


class Repeats:
    """Which exceptions were already logged in full, and their repeats not yet reported.

    ``seen`` maps a key (callback, exception type, the traceback's frames and lines) to
    ``[repeats since the last report, when that report period started (ns)]``. At most
    ``max_kinds`` keys are tracked so that the table stays small; beyond that an exception is
    logged in full every time (a plugin with that many distinct failures has other problems).
    """

    __slots__ = ("interval_ns", "max_kinds", "seen", "due_ns", "now_ns")

    def __init__(self, interval_s: float = 60.0, max_kinds: int = 256) -> None:
        self.interval_ns = int(interval_s * 1e9)
        self.max_kinds = max_kinds
        self.seen: dict[Key, list[int]] = {}
        self.due_ns: int | None = None  # when the earliest unreported repeats are due
        self.now_ns = 0  # the last time read from the proxy (used if it cannot be read again)

    def clear(self) -> None:
        self.seen.clear()
        self.due_ns = None

    def _clock(self) -> int:
        try:
            self.now_ns = hostcalls.get_current_time_ns()
        except BaseException:  # noqa: BLE001 - no host (build time) or a failing host: keep the last
            pass
        return self.now_ns

    def note(self, key: Key) -> bool:
        """Count one exception; True when it is the first of its kind (to be logged in full)."""
        now = self._clock()
        entry = self.seen.get(key)
        first = entry is None
        if entry is None:
            if len(self.seen) < self.max_kinds:
                self.seen[key] = [0, now]
        else:
            entry[0] += 1
            if entry[0] == 1:
                due = entry[1] + self.interval_ns
                if self.due_ns is None or due < self.due_ns:
                    self.due_ns = due
        self.flush(now)
        return first

    def flush(self, now: int | None = None) -> None:
        """Write a summary line for every kind whose report period has ended."""
        if self.due_ns is None:
            return
        if now is None:
            now = self._clock()
        if now < self.due_ns:
            return
        self.due_ns = None
        for key, entry in self.seen.items():
            count, since = entry
            if not count:
                continue
            if now - since >= self.interval_ns:
                entry[0], entry[1] = 0, now
                log.write_unconditionally(LogLevel.ERROR, _summary(key, count, now - since))
            elif self.due_ns is None or since + self.interval_ns < self.due_ns:
                self.due_ns = since + self.interval_ns


def _summary(key: Key, count: int, elapsed_ns: int) -> str:
    where, exc_type, frames = key
    place = ""
    if frames:
        code, line = frames[-1]
        place = f" ({_real_path(code.co_filename)}:{line}, in {code.co_name})"
    return (f"{where}: {exc_type.__qualname__}{place} raised {count:,} more "
            f"time{'s' if count != 1 else ''} in the last {elapsed_ns / 1e9:.0f} s "
            "(traceback logged at its first occurrence)")


def _real_path(name: str) -> str:
    for virtual, real in path_map.items():
        if name.startswith(virtual):
            return real + name[len(virtual):]
    return name


def _key(where: str, exc: BaseException) -> Key:
    frames: list[tuple[CodeType, int]] = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    return where, type(exc), tuple(frames)


_ALWAYS_LOGGED = frozenset({"on_vm_start", "on_configure"})


def report(context_id: int, where: str) -> None:
    """Log the exception being handled at ERROR, with its traceback the first time (never raises).

    A ConfigurationError is one line and always logged; so is anything raised while a
    configuration is applied (on_vm_start, on_configure): those run once per configuration,
    and each rejected configuration deserves its reason.
    """
    try:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConfigurationError):
            text = f"{where}: configuration rejected: {exc}"
        else:
            repeats = _runtime.current.repeats  # the table of the VM (of its runtime)
            if exc is not None and where not in _ALWAYS_LOGGED and not repeats.note(_key(where, exc)):
                return
            details = _traceback.format_exception(exc) if exc is not None else "(no exception)"
            text = f"{where} raised (context {context_id}):\n" + details.rstrip()
            for virtual, real in path_map.items():
                text = text.replace(f'File "{virtual}', f'File "{real}')
            if where not in _ALWAYS_LOGGED:
                text += (f"\n(repeats of this exception are counted and summarized every "
                         f"{repeats.interval_ns / 1e9:.0f} s)")
    except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting: say what we can
        text = f"{where} raised (context {context_id}); its traceback could not be formatted"
    log.write_unconditionally(LogLevel.ERROR, text)


def flush() -> None:
    """Write the summaries that are due (called on the plugin's tick; never raises)."""
    try:
        _runtime.current.repeats.flush()
    except BaseException:  # noqa: BLE001 - the boundary must not fail
        pass
