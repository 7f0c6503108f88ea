"""Logging to the proxy's log: ``log.info(...)``, the standard ``logging`` module, and ``print``.

Three ways in, one way out (``proxy_log``):

- ``from pywasm_sdk import log; log.info("user %s", user)``: %-style like ``logging``, and the
  message is only formatted when the proxy would keep it;
- ``logging.getLogger(__name__).warning(...)``: the root logger gets a handler that writes to
  the proxy log, and its level follows the proxy's log level (set when the VM starts);
- ``print(...)`` goes to the proxy log at info, ``sys.stderr`` at error, line by line.

Envoy prints each line as ``wasm log <plugin name> <vm id>: <message>`` under its ``wasm`` logger.
"""

from __future__ import annotations

import logging as _logging
import sys

from . import hostcalls
from ._abi import LogLevel

__all__ = ["trace", "debug", "info", "warning", "warn", "error", "critical", "level", "LogLevel"]

# The proxy's current level; messages below it are not even formatted. Refreshed by
# refresh_level() when the VM starts and when a plugin is configured.
_threshold = LogLevel.TRACE

_TO_LOGGING = {
    LogLevel.TRACE: 5, LogLevel.DEBUG: _logging.DEBUG, LogLevel.INFO: _logging.INFO,
    LogLevel.WARN: _logging.WARNING, LogLevel.ERROR: _logging.ERROR,
    LogLevel.CRITICAL: _logging.CRITICAL,
}


def _emit(level: int, msg: object, args: tuple) -> None:
    if level >= _threshold:
        hostcalls.log(level, str(msg) % args if args else str(msg))


def trace(msg: object, *args: object) -> None:
    """Log at TRACE; ``args`` are %-formatted into ``msg`` only when the line is kept."""
    _emit(LogLevel.TRACE, msg, args)


def debug(msg: object, *args: object) -> None:
    """Log at DEBUG."""
    _emit(LogLevel.DEBUG, msg, args)


def info(msg: object, *args: object) -> None:
    """Log at INFO."""
    _emit(LogLevel.INFO, msg, args)


def warning(msg: object, *args: object) -> None:
    """Log at WARN."""
    _emit(LogLevel.WARN, msg, args)


warn = warning


def error(msg: object, *args: object) -> None:
    """Log at ERROR."""
    _emit(LogLevel.ERROR, msg, args)


def critical(msg: object, *args: object) -> None:
    """Log at CRITICAL."""
    _emit(LogLevel.CRITICAL, msg, args)


def level() -> LogLevel:
    """The level below which the proxy drops plugin log lines (as last read from the host)."""
    return LogLevel(_threshold)


def refresh_level() -> None:
    """Read the proxy's log level and apply it here and to the ``logging`` root logger."""
    global _threshold
    _threshold = LogLevel(min(hostcalls.get_log_level(), LogLevel.CRITICAL))
    _logging.root.setLevel(_TO_LOGGING[_threshold])


def write_unconditionally(level: int, text: str) -> None:
    """Write a line whatever the threshold, never raising (used for uncaught exceptions)."""
    try:
        hostcalls.log(level, text)
    except BaseException:  # noqa: BLE001 - the last resort must not fail
        pass


class ProxyLogHandler(_logging.Handler):
    """A ``logging`` handler that writes records to the proxy log."""

    def emit(self, record: _logging.LogRecord) -> None:
        try:
            no = record.levelno
            proxy_level = (LogLevel.CRITICAL if no >= 50 else LogLevel.ERROR if no >= 40 else
                           LogLevel.WARN if no >= 30 else LogLevel.INFO if no >= 20 else
                           LogLevel.DEBUG if no >= 10 else LogLevel.TRACE)
            hostcalls.log(proxy_level, self.format(record))
        except Exception:  # noqa: BLE001 - logging's own contract
            self.handleError(record)


class _Formatter(_logging.Formatter):
    def format(self, record: _logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.name == "root" else f"{record.name}: {text}"


class _LineWriter:
    """A text stream that writes each complete line to the proxy log (stands in for stdout)."""

    def __init__(self, level: int) -> None:
        self._level = level
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                _emit(self._level, line, ())
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            _emit(self._level, line, ())

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class PluginOutput:
    """Routes ``print``, ``sys.stderr`` and the ``logging`` root logger to the proxy log while
    active. Reusable: the native mock host enters it around every callback, so that a plugin's
    output goes where it goes in the .wasm and the test process's own output is untouched.
    The root logger's level set by the plugin (see refresh_level) is kept between uses.
    """

    def __init__(self) -> None:
        self._stdout = _LineWriter(LogLevel.INFO)
        self._stderr = _LineWriter(LogLevel.ERROR)
        self._handler = ProxyLogHandler()
        self._handler.setFormatter(_Formatter("%(message)s"))
        self._plugin_level: int | None = None
        self._saved: tuple = ()

    def __enter__(self) -> PluginOutput:
        root = _logging.getLogger()
        self._saved = (sys.stdout, sys.stderr, root.level)
        sys.stdout, sys.stderr = self._stdout, self._stderr  # type: ignore[assignment]
        if self._plugin_level is not None:
            root.setLevel(self._plugin_level)
        root.addHandler(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        root = _logging.getLogger()
        root.removeHandler(self._handler)
        self._plugin_level = root.level
        sys.stdout, sys.stderr, level = self._saved
        root.setLevel(level)


def route_standard_output() -> None:
    """Send ``print``, ``sys.stderr`` and the ``logging`` root logger to the proxy log for good.

    Called when a plugin module is compiled into a .wasm (where stdout has no other use).
    """
    PluginOutput().__enter__()
