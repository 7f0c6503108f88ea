"""A guest written as plain Python functions of the raw ABI, for ABI-level scenarios.

:class:`ScriptedGuest` lets a test state exactly which hostcalls a "plugin" makes in which
callback, without the SDK and without building anything: each callback is a function
``fn(host, *args)`` that calls ``host.proxy_*`` (the raw convention of :mod:`.host`) and returns
what the callback returns. The mock host's own tests use it to pin Envoy's semantics; use it to
reproduce a host-level behaviour in a bug report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..tooling import abi as abi_mod
from .host import HostState

__all__ = ["ScriptedGuest"]

Callback = Callable[..., Any]


class ScriptedGuest:
    """A Guest whose callbacks are Python functions.

    ``callbacks`` maps ABI callback names, with or without the ``proxy_`` prefix
    (``"on_request_headers"``), to ``fn(host, *args)``. Only those are exported, as a module
    exports only what it implements. Results: None for void callbacks; a bool or an int
    otherwise (bools become 0/1).
    """

    kind = "scripted"

    def __init__(self, callbacks: Mapping[str, Callback] | None = None, **more: Callback) -> None:
        known = abi_mod.load().callbacks
        self._callbacks: dict[str, Callback] = {}
        for name, fn in {**(callbacks or {}), **more}.items():
            full = name if name.startswith("proxy_") else f"proxy_{name}"
            if full not in known:
                raise ValueError(f"{name!r} is not a callback of the ABI (known: {', '.join(known)})")
            self._callbacks[full] = fn
        self.host: HostState | None = None

    @property
    def exports(self) -> frozenset[str]:
        return frozenset(self._callbacks)

    def start(self, host: HostState) -> None:
        self.host = host

    def call(self, name: str, args: tuple[int, ...]) -> int | None:
        assert self.host is not None, "start() was not called"
        result = self._callbacks[name](self.host, *args)
        return None if result is None else int(result)

    def close(self) -> None:
        self.host = None
