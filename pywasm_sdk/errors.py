"""Every exception the SDK raises, under one base class.

    PyWasmError                 base class: catch this to catch anything the SDK raises
    ├── NoHostError             a hostcall ran where no host exists: at import time, i.e. during
    │                           `pywasm build` (pre-initialisation). Move the call into a callback.
    ├── ConfigurationError      raise it from on_configure / on_vm_start to reject a configuration:
    │                           the SDK logs its message (no traceback) and answers false.
    ├── NotAvailableInProxy     the plugin used what cannot work inside the proxy (TLS, sockets,
    │                           threads, processes, ...); the message says what to do instead
    │                           (docs/packages.md). Also an OSError and a RuntimeError, so code
    │                           that copes with a failed connection or thread start copes with it.
    └── HostCallError           the host answered a hostcall with a status other than OK.
        │                       `.call` is the hostcall, `.status` the Status. Usually a bug: the
        │                       call was made in a callback where it is not available.
        ├── BadArgument         BAD_ARGUMENT: wrong argument or not valid in this callback
        ├── NotFound            NOT_FOUND where "absent" is not an ordinary answer
        ├── CasMismatch         CAS_MISMATCH: shared data changed since you read it; read again
        ├── ParseFailure        PARSE_FAILURE: the host could not parse an argument
        └── Unimplemented       UNIMPLEMENTED: this host does not offer the operation

Getters for which "absent" is an ordinary answer (a header, a property) return None instead of
raising NotFound.
"""

from __future__ import annotations

from ._abi import Status


class PyWasmError(Exception):
    """Base class of every exception raised by pywasm_sdk."""


class NoHostError(PyWasmError):
    """A hostcall was made while no host is attached (at import time, during the build)."""


class ConfigurationError(PyWasmError):
    """Raised by a plugin to reject its configuration with a message for the operator."""


class NotAvailableInProxy(PyWasmError, OSError, RuntimeError):
    """What the plugin used cannot work inside the proxy; the message says what to do instead.

    Raised by the stand-ins of :mod:`pywasm_sdk._unavailable` (``ssl.create_default_context()``,
    ``socket.create_connection()``, ``threading.Thread.start()``, ``subprocess.run()``, ...).
    """


class HostCallError(PyWasmError):
    """The host answered a hostcall with a status other than OK."""

    def __init__(self, call: str, status: int, detail: str = "") -> None:
        self.call = call
        self.status = _status(status)
        name = self.status.name if isinstance(self.status, Status) else str(status)
        super().__init__(f"{call} failed with {name}" + (f": {detail}" if detail else ""))


class BadArgument(HostCallError):
    """BAD_ARGUMENT: an argument was wrong, or the call is not valid in this callback."""


class NotFound(HostCallError):
    """NOT_FOUND where the SDK does not turn "absent" into None."""


class CasMismatch(HostCallError):
    """CAS_MISMATCH: shared data was changed by someone else since it was read."""


class ParseFailure(HostCallError):
    """PARSE_FAILURE: the host could not parse an argument."""


class Unimplemented(HostCallError):
    """UNIMPLEMENTED: the host does not implement this operation."""


_BY_STATUS: dict[int, type[HostCallError]] = {
    Status.BAD_ARGUMENT: BadArgument,
    Status.NOT_FOUND: NotFound,
    Status.CAS_MISMATCH: CasMismatch,
    Status.PARSE_FAILURE: ParseFailure,
    Status.UNIMPLEMENTED: Unimplemented,
}


def _status(value: int) -> Status | int:
    try:
        return Status(value)
    except ValueError:
        return value


def error_for(call: str, status: int, detail: str = "") -> HostCallError:
    """The exception for a hostcall that answered status (the one place statuses map to types)."""
    return _BY_STATUS.get(status, HostCallError)(call, status, detail)
