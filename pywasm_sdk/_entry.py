"""The entry surface: everything the generated code of a built plugin calls into, and only that.

Who calls what:

- ``finish_import(real_paths, source_folders)``: the generated entry module (``pywasm build``),
  once, at the end of pre-initialisation, after it imported the plugin.
- ``proxy_on_*``: one function per ABI callback (all of ``CALLBACKS``), with exactly the ABI's
  parameters as ints (a ``bool`` one, ``end_of_stream``, as a bool), returning an int (an Action), a
  bool or None as the ABI says, and never raising: the exception boundary is inside. Each
  exported ``proxy_on_*`` of the module ends in the function of the same name here: the entry
  module puts them in the anchor (:mod:`._bridge`) and the bridge calls them with
  ``PyObject_Vectorcall``.
- ``create_stream_context(context_id, root_context_id)``: for a bridge that does not enter
  Python for a stream's ``proxy_on_context_create``: call it before the stream's first callback.
  Without it the first callback makes the context itself when the VM has a single root context.
- ``forget_contexts(context_ids)``: for a bridge that collects ``proxy_on_delete`` of streams and
  delivers them in bulk (on_delete of each context runs then; a plugin overriding on_delete is
  better served by delivering proxy_on_delete as it comes: ``streams_observe_delete()`` says
  whether it does, asked once by the generated entry module).

They are bound to the interpreter's one runtime (:data:`._runtime.current` when this module is
imported, in which the plugin registered). The native mock host does not come here: it calls the
same functions of its own runtime (``Runtime.entry_points()``).

The proxy has no filesystem, so whatever tracebacks will need later is captured by
``finish_import``: the source lines of the plugin's modules, and the folders they came from
(componentize-py shows them as /0/, /1/, ...). And json, if the plugin uses it, is made safe
from deep nesting (:mod:`._json_guard`).
"""

from __future__ import annotations

import sys

from . import _boundary, _json_guard, _runtime
from ._abi import CALLBACKS

__all__ = [*CALLBACKS, "create_stream_context", "forget_contexts", "finish_import",
           "streams_observe_delete"]

globals().update(_runtime.current.entry_points())


def streams_observe_delete() -> bool:
    """Whether the plugin's stream contexts have an on_delete of their own (or may have: a custom
    factory): then a bridge that batches deletes must deliver each at once."""
    return _runtime.current.streams_observe_delete()


def _source_lines(path: str) -> list[str]:
    """A source file's lines, as linecache keeps them. Read here rather than by linecache, which
    would import tokenize (for the coding cookie) and with it re into every plugin's snapshot;
    plugin sources are UTF-8 (PEP 3120), and a line of another encoding only shows garbled."""
    try:
        with open(path, "rb") as file:
            return file.read().decode("utf-8", "replace").splitlines(keepends=True)
    except OSError:
        return []


def finish_import(real_paths: dict[str, str], source_folders: tuple[str, ...]) -> None:
    """Map build-time folders to real ones in tracebacks, and keep the source lines of the
    plugin's own modules (those under ``source_folders``: not the SDK's or the standard
    library's, which would only grow every plugin's memory)."""
    import linecache  # build time only (natively it would bring tokenize and re along)

    _boundary.path_map.update(real_paths)
    _json_guard.install()
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None) or ""
        if name.endswith(".py") and name.startswith(source_folders):
            lines = _source_lines(name)
            if lines:
                # mtime None: linecache.checkcache() keeps the entry although the file is gone
                linecache.cache[name] = (sum(map(len, lines)), None, lines, name)
