"""Logging to the proxy's log: ``log.info(...)``, the standard ``logging`` module, and ``print``.

Three ways in, one way out (``proxy_log``):

- ``from pywasm_sdk import log; log.info("user %s", user)``: %-style like ``logging``, and the
  message is only formatted when the proxy would keep it;
- ``logging.getLogger(__name__).warning(...)``: the root logger gets a handler that writes to
  the proxy log, and its level follows the proxy's log level (set when the VM starts). The SDK
  itself does not import ``logging`` (it would weigh on every plugin): the handler is added when
  the plugin imported it, at module level like any import;
- ``print(...)`` goes to the proxy log at info, ``sys.stderr`` at error, line by line.

Envoy prints each line as ``wasm log <plugin name> <vm id>: <message>`` under its ``wasm`` logger.
"""

from __future__ import annotations

import sys

from . import _runtime, hostcalls
from ._abi import LogLevel

TYPE_CHECKING = False  # logging is imported only when the plugin uses it
if TYPE_CHECKING:
    import logging

__all__ = ["trace", "debug", "info", "warning", "warn", "error", "critical", "level", "LogLevel"]

#: the proxy's levels as the ``logging`` module's numbers (TRACE has none there)
_TO_LOGGING = {LogLevel.TRACE: 5, LogLevel.DEBUG: 10, LogLevel.INFO: 20, LogLevel.WARN: 30,
               LogLevel.ERROR: 40, LogLevel.CRITICAL: 50}


# The levels as plain ints, and the threshold kept as one: a dropped line costs a call and an
# int comparison. With the IntEnum's lookup and comparison and the test inside _emit, a dropped
# log.debug cost about 3,500 wasm instructions; now about 2,000.
_TRACE, _DEBUG, _INFO, _WARN, _ERROR, _CRITICAL = (int(v) for v in (
    LogLevel.TRACE, LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR, LogLevel.CRITICAL))


def _emit(level: int, msg: object, args: tuple[object, ...]) -> None:
    """Format and write a line the caller found at or above the proxy's level (the runtime
    keeps that level, refreshed by refresh_level(): below it a message is not even formatted).
    Each level's function tests the threshold itself: one Python call less per dropped line."""
    hostcalls.log(level, str(msg) % args if args else str(msg))


def trace(msg: object, *args: object) -> None:
    """Log at TRACE; ``args`` are %-formatted into ``msg`` only when the line is kept."""
    if _TRACE >= _runtime.current.log_threshold:
        _emit(_TRACE, msg, args)


def debug(msg: object, *args: object) -> None:
    """Log at DEBUG."""
    if _DEBUG >= _runtime.current.log_threshold:
        _emit(_DEBUG, msg, args)


def info(msg: object, *args: object) -> None:
    """Log at INFO."""
    if _INFO >= _runtime.current.log_threshold:
        _emit(_INFO, msg, args)


def warning(msg: object, *args: object) -> None:
    """Log at WARN."""
    if _WARN >= _runtime.current.log_threshold:
        _emit(_WARN, msg, args)


warn = warning


def error(msg: object, *args: object) -> None:
    """Log at ERROR."""
    if _ERROR >= _runtime.current.log_threshold:
        _emit(_ERROR, msg, args)


def critical(msg: object, *args: object) -> None:
    """Log at CRITICAL."""
    if _CRITICAL >= _runtime.current.log_threshold:
        _emit(_CRITICAL, msg, args)


def level() -> LogLevel:
    """The level below which the proxy drops plugin log lines (as last read from the host)."""
    return LogLevel(_runtime.current.log_threshold)


def refresh_level() -> None:
    """Read the proxy's log level and apply it here and to the ``logging`` root logger (called
    when the VM starts and when a configuration arrives)."""
    threshold = LogLevel(min(hostcalls.get_log_level(), LogLevel.CRITICAL))
    _runtime.current.log_threshold = int(threshold)
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.root.setLevel(_TO_LOGGING[threshold])


def write_unconditionally(level: int, text: str) -> None:
    """Write a line whatever the threshold, never raising (used for uncaught exceptions)."""
    try:
        hostcalls.log(level, text)
    except BaseException:  # noqa: BLE001 - the last resort must not fail
        pass


def _proxy_level(levelno: int) -> LogLevel:
    return (LogLevel.CRITICAL if levelno >= 50 else LogLevel.ERROR if levelno >= 40 else
            LogLevel.WARN if levelno >= 30 else LogLevel.INFO if levelno >= 20 else
            LogLevel.DEBUG if levelno >= 10 else LogLevel.TRACE)


def proxy_log_handler() -> logging.Handler:
    """A handler for the ``logging`` root logger: records as proxy log lines, prefixed with the
    logger's name unless it is the root logger. Imports ``logging``: call it only when the
    plugin uses it."""
    import logging  # noqa: F811 - at run time, here only

    class ProxyLogHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                text = self.format(record)
                if record.name != "root":
                    text = f"{record.name}: {text}"
                hostcalls.log(_proxy_level(record.levelno), text)
            except Exception:  # noqa: BLE001 - logging's own contract
                self.handleError(record)

    handler = ProxyLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


class LineWriter:
    """A text stream that writes each complete line to the proxy log (stands in for stdout)."""

    def __init__(self, level: int) -> None:
        self._level = level
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._line(line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._line(line)

    def _line(self, line: str) -> None:
        if self._level >= _runtime.current.log_threshold:
            _emit(self._level, line, ())

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def route_standard_output() -> None:
    """Send ``print``, ``sys.stderr`` and (when the plugin imported it) the ``logging`` root
    logger to the proxy log for good.

    Called when a plugin module is compiled into a .wasm, after the plugin was imported (where
    stdout has no other use); the native mock host does the same around each callback instead.
    """
    sys.stdout, sys.stderr = LineWriter(LogLevel.INFO), LineWriter(LogLevel.ERROR)
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger().addHandler(proxy_log_handler())
