"""What runs a plugin for the host: the one interface the wasm and native runners share.

The driver (:mod:`.mock`) knows nothing of wasmtime or of importing Python: it asks a
:class:`Guest` which callbacks exist and calls them with integer arguments, exactly the way Envoy
calls a module's ``proxy_on_*`` exports. Write your own Guest to drive the host from a script
(the mock host's own tests do).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .host import HostState

__all__ = ["Guest"]


@runtime_checkable
class Guest(Protocol):
    """A plugin as the host sees it.

    Lifecycle: the host calls :meth:`start` once, then :meth:`call` any number of times, then
    :meth:`close` (idempotent). :meth:`call` is made only for names in :attr:`exports`, inside
    ``HostState.callback(...)``, never re-entrantly.
    """

    #: "wasm" or "native" (or your own label)
    kind: str

    @property
    def exports(self) -> frozenset[str]:
        """The ABI callbacks the plugin provides (``"proxy_on_request_headers"``...)."""

    def start(self, host: HostState) -> None:
        """Load the plugin against ``host`` (wasm: instantiate and run ``_initialize``)."""

    def call(self, name: str, args: tuple[int, ...]) -> int | None:
        """Run callback ``name``; its result as an int (bools as 0/1), None for a void callback.

        Raises :class:`~.errors.PluginTrap` when the plugin traps.
        """

    def close(self) -> None:
        """Release what :meth:`start` took."""
