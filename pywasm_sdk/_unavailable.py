"""What cannot work inside the proxy imports anyway, and says so when it is used.

Inside the proxy a plugin has no network, no TLS, no processes and one thread per VM. Many
packages import ``ssl``, ``socket``, ``threading`` or ``subprocess`` at module level for a feature
a plugin never uses (PyJWT's JWKS client imports ``ssl``), so those imports succeed; what cannot
work raises :class:`~pywasm_sdk.errors.NotAvailableInProxy`, whose message says what to do instead.

- ``ssl``: the proxy's CPython has no ``_ssl``, so ``import ssl`` gets a stand-in with ssl's names
  (exceptions, enums, constants) whose classes and functions refuse to work.
- ``socket``, ``select``, ``subprocess``, threads, ``multiprocessing``, asyncio's event loops: the
  real modules, with the entry points that need the operating system replaced by refusals when
  the module is imported (constants, exceptions, ``inet_aton`` and the like stay real).
- module files: there are none at run time, so a module a package imports lazily (inside a
  function) must be imported when the plugin is built. ``COMPANIONS`` lists those of the packages
  in docs/packages.md; they are imported right after the module that needs them.

:func:`install` runs before the plugin is imported: in the generated entry module (the build's
pre-initialisation) and in the build's native check (``pywasm_sdk.tooling.preflight``), so both see
the same modules. It imports nothing itself; a module is patched when something imports it.
"""

from __future__ import annotations

import sys

from _frozen_importlib import ModuleSpec  # importlib's own, loaded at start-up

from .errors import NotAvailableInProxy

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import ModuleType
    from typing import Any

TLS = ("TLS is not available inside the proxy (its CPython has no ssl support, and a plugin "
       "cannot open connections). Call the service through an Envoy cluster that uses TLS: "
       "self.http_call(...) or self.grpc_call(...), see docs/callouts.md")
SOCKETS = ("a plugin cannot open sockets or resolve names inside the proxy. Call other services "
           "through Envoy clusters: self.http_call(...) or self.grpc_call(...), see docs/callouts.md")
WAITING = ("there is nothing to wait on inside the proxy: the proxy calls the plugin back when "
           "data arrives (on_request_body, on_downstream_data, on_http_call_response, ...)")
PROCESSES = "a plugin cannot start processes inside the proxy"
THREADS = ("a plugin cannot start threads inside the proxy (each VM runs on one thread): use "
           "set_tick_period() and on_tick for periodic work, and async def callbacks to wait for calls")
EVENT_LOOP = ("an asyncio event loop cannot run inside the proxy: make the callback `async def` and "
              "await the SDK's calls (self.http_call, self.grpc_call); the SDK resumes it when the "
              "proxy answers")

#: module -> (why, what is refused in it: module attributes, or Class.method)
PATCHES: dict[str, tuple[str, tuple[str, ...]]] = {
    "_thread": (THREADS, ("start_new_thread", "start_joinable_thread", "start_new")),
    "threading": (THREADS, ("Thread.start",)),
    "socket": (SOCKETS, ("socket", "socketpair", "fromfd", "create_connection", "create_server",
                         "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                         "getnameinfo")),
    "select": (WAITING, ("select", "poll", "epoll", "kqueue", "devpoll")),
    "subprocess": (PROCESSES, ("Popen",)),
    "multiprocessing.process": (PROCESSES, ("BaseProcess.start",)),
    "multiprocessing.context": (PROCESSES, ("BaseContext.Pool", "BaseContext.Manager",
                                            "BaseContext.Queue", "BaseContext.Pipe")),
    "concurrent.futures.process": (PROCESSES, ("ProcessPoolExecutor.__init__",)),
    "asyncio.events": (EVENT_LOOP, ("new_event_loop",)),
    "asyncio": (EVENT_LOOP, ("new_event_loop",)),
}


_SUBCLASSABLE = 1 << 10  # Py_TPFLAGS_BASETYPE (select.epoll, for one, is not)

#: module -> modules it imports lazily (inside functions), imported with it at build time
COMPANIONS: dict[str, tuple[str, ...]] = {
    "idna.core": ("encodings.punycode",),  # str.encode("punycode")
    "cachetools": ("cachetools._cached", "cachetools._cachedmethod"),  # @cached, @cachedmethod
}


def refusal(what: str, why: str, original: object = None) -> Callable[..., object]:
    """A stand-in for ``what`` that raises NotAvailableInProxy; a class stays a class (a
    subclass that cannot be instantiated), so isinstance checks and subclassing still work."""
    message = f"{what}: {why}"

    def refuse(*_args: object, **_kwargs: object) -> object:
        raise NotAvailableInProxy(message)

    refuse.__name__ = refuse.__qualname__ = what.rpartition(".")[2]
    refuse.__doc__ = message
    refuse.__pywasm_refusal__ = True  # type: ignore[attr-defined]
    if isinstance(original, type) and original.__flags__ & _SUBCLASSABLE:
        return type(original.__name__, (original,), {
            "__new__": staticmethod(refuse), "__doc__": message, "__module__": original.__module__,
            "__qualname__": original.__qualname__, "__pywasm_refusal__": True})
    return refuse


def patch(module: ModuleType, why: str, names: Sequence[str]) -> None:
    """Replace ``names`` of ``module`` by refusals (those it has; each once)."""
    for dotted in names:
        owner_name, _, attr = dotted.rpartition(".")
        owner = getattr(module, owner_name, None) if owner_name else module
        original = getattr(owner, attr, None) if owner is not None else None
        if original is None or getattr(original, "__pywasm_refusal__", False):
            continue
        setattr(owner, attr, refusal(f"{module.__name__}.{dotted}", why, original))


class _Patching:
    """The real loader of a module in PATCHES or COMPANIONS, then the patch and the companions."""

    def __init__(self, loader: object, name: str) -> None:
        self.loader, self.name = loader, name

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[attr-defined, no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)  # type: ignore[attr-defined]
        if self.name in PATCHES:
            patch(module, *PATCHES[self.name])
        for companion in COMPANIONS.get(self.name, ()):
            __import__(companion)

    def __getattr__(self, name: str) -> object:  # get_source, is_package, ... of the real loader
        return getattr(self.loader, name)


class _StandIn:
    """The loader of ``ssl``'s stand-in."""

    def create_module(self, spec: ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        fill_ssl(module.__dict__)


class Finder:
    """A meta path finder: ``ssl``'s stand-in, and the modules of PATCHES patched once they ran."""

    def __init__(self) -> None:
        self._looking: set[str] = set()

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name == "ssl":
            return ModuleSpec("ssl", _StandIn(), origin="pywasm_sdk stand-in")  # type: ignore[arg-type]
        if name not in PATCHES and name not in COMPANIONS or name in self._looking:
            return None
        self._looking.add(name)  # the other finders locate the real module
        try:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is not self and find is not None:
                    spec = find(name, path, target)
                    if spec is not None:
                        break
        finally:
            self._looking.discard(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Patching(spec.loader, name)
        return spec


def install() -> None:
    """Patch what is already imported and hook what is not (once per interpreter)."""
    if any(isinstance(f, Finder) for f in sys.meta_path):
        return
    for name, (why, names) in PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module, why, names)
    sys.meta_path.insert(0, Finder())


def fill_ssl(ns: dict[str, object]) -> None:
    """ssl's names: what packages import from it at module level, nothing that works."""
    from enum import Enum, IntEnum, IntFlag  # ssl's enums are enums (already loaded by the SDK)

    def cls(name: str, *bases: type) -> type:
        return type(name, bases, {"__module__": "ssl"})

    error = cls("SSLError", OSError)
    ns.update(SSLError=error, SSLZeroReturnError=cls("SSLZeroReturnError", error),
              SSLWantReadError=cls("SSLWantReadError", error),
              SSLWantWriteError=cls("SSLWantWriteError", error),
              SSLSyscallError=cls("SSLSyscallError", error), SSLEOFError=cls("SSLEOFError", error),
              socket_error=OSError)
    ns["SSLCertVerificationError"] = ns["CertificateError"] = cls("SSLCertVerificationError", error, ValueError)
    for name in ("SSLContext", "SSLSocket", "SSLObject", "MemoryBIO", "SSLSession"):
        ns[name] = refusal(f"ssl.{name}", TLS, cls(name))
    for name in ("create_default_context", "_create_default_https_context", "_create_unverified_context",
                 "_create_stdlib_context", "wrap_socket", "get_server_certificate",
                 "get_default_verify_paths", "match_hostname", "cert_time_to_seconds",
                 "DER_cert_to_PEM_cert", "PEM_cert_to_DER_cert", "RAND_bytes", "RAND_status", "RAND_add",
                 "get_protocol_name"):
        ns[name] = refusal(f"ssl.{name}", TLS)
    enums: list[Any] = [
        IntEnum("VerifyMode", {"CERT_NONE": 0, "CERT_OPTIONAL": 1, "CERT_REQUIRED": 2}, module="ssl"),
        IntEnum("_SSLMethod", {"PROTOCOL_TLS": 2, "PROTOCOL_TLSv1": 3, "PROTOCOL_TLSv1_1": 4,
                               "PROTOCOL_TLSv1_2": 5, "PROTOCOL_TLS_CLIENT": 16,
                               "PROTOCOL_TLS_SERVER": 17}, module="ssl"),
        IntFlag("Options", {"OP_ALL": 0x80000050, "OP_NO_SSLv2": 0, "OP_NO_SSLv3": 0x2000000,
                            "OP_NO_TLSv1": 0x4000000, "OP_NO_TLSv1_1": 0x10000000,
                            "OP_NO_TLSv1_2": 0x8000000, "OP_NO_TLSv1_3": 0x20000000,
                            "OP_NO_COMPRESSION": 0x20000, "OP_NO_TICKET": 0x4000,
                            "OP_CIPHER_SERVER_PREFERENCE": 0x400000, "OP_SINGLE_DH_USE": 0,
                            "OP_SINGLE_ECDH_USE": 0, "OP_NO_RENEGOTIATION": 0x40000000,
                            "OP_ENABLE_MIDDLEBOX_COMPAT": 0x100000, "OP_IGNORE_UNEXPECTED_EOF": 0x80,
                            "OP_LEGACY_SERVER_CONNECT": 0x4}, module="ssl"),
        IntFlag("VerifyFlags", {"VERIFY_DEFAULT": 0, "VERIFY_CRL_CHECK_LEAF": 0x4,
                                "VERIFY_CRL_CHECK_CHAIN": 0xC, "VERIFY_X509_STRICT": 0x20,
                                "VERIFY_ALLOW_PROXY_CERTS": 0x40, "VERIFY_X509_TRUSTED_FIRST": 0x8000,
                                "VERIFY_X509_PARTIAL_CHAIN": 0x80000}, module="ssl"),
        IntEnum("SSLErrorNumber", {"SSL_ERROR_SSL": 1, "SSL_ERROR_WANT_READ": 2, "SSL_ERROR_WANT_WRITE": 3,
                                   "SSL_ERROR_WANT_X509_LOOKUP": 4, "SSL_ERROR_SYSCALL": 5,
                                   "SSL_ERROR_ZERO_RETURN": 6, "SSL_ERROR_WANT_CONNECT": 7,
                                   "SSL_ERROR_EOF": 8, "SSL_ERROR_INVALID_ERROR_CODE": 10}, module="ssl"),
    ]
    for enum in enums:
        ns[enum.__name__] = enum
        ns.update(enum.__members__)
    ns["PROTOCOL_SSLv23"] = ns["PROTOCOL_TLS"]
    ns["TLSVersion"] = IntEnum("TLSVersion", {"MINIMUM_SUPPORTED": -2, "MAXIMUM_SUPPORTED": -1,
                                              "SSLv3": 0x300, "TLSv1": 0x301, "TLSv1_1": 0x302,
                                              "TLSv1_2": 0x303, "TLSv1_3": 0x304}, module="ssl")
    ns["Purpose"] = Enum("Purpose", {"SERVER_AUTH": "1.3.6.1.5.5.7.3.1",
                                     "CLIENT_AUTH": "1.3.6.1.5.5.7.3.2"}, module="ssl")
    ns.update({name: False for name in ("HAS_SNI", "HAS_ALPN", "HAS_NPN", "HAS_ECDH", "HAS_PSK",
                                        "HAS_PHA", "HAS_NEVER_CHECK_COMMON_NAME", "HAS_SSLv2",
                                        "HAS_SSLv3", "HAS_TLSv1", "HAS_TLSv1_1", "HAS_TLSv1_2",
                                        "HAS_TLSv1_3")})
    ns.update(OPENSSL_VERSION="none (TLS is not available inside the proxy)", OPENSSL_VERSION_NUMBER=0,
              OPENSSL_VERSION_INFO=(0, 0, 0, 0, 0), _OPENSSL_API_VERSION=(0, 0, 0, 0, 0),
              CHANNEL_BINDING_TYPES=[], PEM_HEADER="-----BEGIN CERTIFICATE-----",
              PEM_FOOTER="-----END CERTIFICATE-----", __doc__=f"A stand-in for ssl: {TLS}.",
              __pywasm_stand_in__=True)
