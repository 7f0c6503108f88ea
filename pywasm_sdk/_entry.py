"""What the generated entry module runs at the end of pre-initialisation (during the build).

The proxy has no filesystem, so whatever tracebacks will need later is captured now: the
source lines of the plugin's modules, and the folders they came from (componentize-py shows
them as /0/, /1/, ...). And json, if the plugin uses it, is made safe from deep nesting
(:mod:`._json_guard`).
"""

from __future__ import annotations

import linecache
import sys

from . import _boundary, _json_guard


def finish_import(real_paths: dict[str, str], source_folders: tuple[str, ...]) -> None:
    """Map build-time folders to real ones in tracebacks, and keep the source lines of the
    plugin's own modules (those under ``source_folders``: not the SDK's or the standard
    library's, which would only grow every plugin's memory)."""
    _boundary.path_map.update(real_paths)
    _json_guard.install()
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None) or ""
        if name.endswith(".py") and name.startswith(source_folders):
            lines = linecache.getlines(name)
            if lines:
                # mtime None: linecache.checkcache() keeps the entry although the file is gone
                linecache.cache[name] = (sum(map(len, lines)), None, lines, name)
