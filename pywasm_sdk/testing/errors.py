"""Every exception the mock host raises into a test, under one base class.

    PyWasmError                      pywasm_sdk's base class (pywasm_sdk.errors)
    └── MockHostError                anything the mock host raises; catch this to catch them all
        ├── HostMisuseError          the TEST drove the host in a way Envoy never would: a callback
        │                            out of order (body after end_of_stream, response headers after a
        │                            local response), an unknown context, a call answered twice.
        │                            Fix the test; the message says what Envoy does instead.
        ├── PluginLoadError          the plugin could not be loaded: not a proxy-wasm module, an import
        │                            the host does not provide (named), an import-time error in the
        │                            plugin's Python. Envoy would reject the module the same way.
        ├── PluginTrap               the plugin's VM trapped (in wasm), or did what traps in wasm
        │                            (natively: a callback returned a value the ABI cannot carry, a
        │                            hostcall at a time Envoy forbids). `.python_traceback` holds the
        │                            traceback the plugin printed when there is one, else
        │                            `.wasm_backtrace`. Envoy fails the VM: so does the mock host.
        ├── VmFailedError            the VM trapped earlier; like Envoy, the host runs no more of its
        │                            callbacks. The original PluginTrap is chained as __cause__.
        └── UnsupportedByMockHost    the plugin used something Envoy offers that this mock host does not
                                     emulate (the message names it and how to provide it). Never a
                                     silent success: a test that passes here must mean something.

A plugin's own Python exceptions never arrive here: the SDK catches them at the callback boundary
and logs them, exactly as it does inside Envoy; assert on ``host.logs`` instead.
"""

from __future__ import annotations

from ..errors import PyWasmError

__all__ = [
    "HostMisuseError", "MockHostError", "PluginLoadError", "PluginTrap", "UnsupportedByMockHost",
    "VmFailedError",
]


class MockHostError(PyWasmError):
    """Base class of everything the mock host raises into a test."""


class HostMisuseError(MockHostError):
    """The test asked the host for something Envoy would never do (see the message for what it does)."""


class PluginLoadError(MockHostError):
    """The plugin could not be loaded (the module, its imports, or its Python at import time)."""


class UnsupportedByMockHost(MockHostError):
    """The plugin used a feature of Envoy that the mock host does not emulate."""


class PluginTrap(MockHostError):
    """The plugin's VM trapped in a callback (or, natively, did what would trap in wasm).

    Attributes:
        callback: the ABI callback that was running (``"proxy_on_request_headers"``), or the phase
            (``"_initialize"``, ``"proxy_on_memory_allocate"``).
        context_id: the context it ran for (0 when none).
        python_traceback: the Python traceback the plugin wrote to its log during that callback,
            when there is one (the most useful thing to read).
        stderr: what the module wrote to stderr during that callback (e.g. the runtime's panic
            message naming the Python error), when it wrote something.
        wasm_backtrace: the wasm frames of the trap (wasm only), as text.
    """

    def __init__(self, message: str, *, callback: str = "", context_id: int = 0,
                 python_traceback: str | None = None, wasm_backtrace: str | None = None,
                 stderr: str | None = None) -> None:
        self.callback = callback
        self.context_id = context_id
        self.python_traceback = python_traceback
        self.wasm_backtrace = wasm_backtrace
        self.stderr = stderr
        details = message
        if python_traceback:
            details += "\n\nPython traceback written by the plugin:\n" + python_traceback.rstrip()
        else:
            if stderr:
                details += "\n\nthe module wrote to stderr:\n" + stderr.rstrip()
            if wasm_backtrace:
                details += "\n\nwasm backtrace:\n" + wasm_backtrace.rstrip()
        super().__init__(details)


class VmFailedError(MockHostError):
    """The VM trapped before; Envoy runs no more callbacks of a failed VM, and neither does the host."""
