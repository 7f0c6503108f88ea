"""Reporting an exception that escaped plugin code, without ever raising in turn."""

from __future__ import annotations

import sys
import traceback

from . import log
from ._abi import LogLevel
from .errors import ConfigurationError

#: build-time folder names in tracebacks ("/1/") -> the plugin author's folders
path_map: dict[str, str] = {}


def report(context_id: int, where: str) -> None:
    """Log the exception being handled at ERROR, with its traceback (never raises)."""
    exc = sys.exc_info()[1]
    if isinstance(exc, ConfigurationError):
        text = f"{where}: configuration rejected: {exc}"
    else:
        text = f"{where} raised (context {context_id}):\n" + traceback.format_exc().rstrip()
        for virtual, real in path_map.items():
            text = text.replace(f'File "{virtual}', f'File "{real}')
    log.write_unconditionally(LogLevel.ERROR, text)
