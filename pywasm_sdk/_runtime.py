"""The SDK's state for one VM, in one object, and which one is running.

Inside a proxy, a VM is one interpreter with one :class:`Runtime`: the one this module makes
when it is imported (:data:`current`), in which the plugin registers while ``pywasm build``
imports it. The native mock host makes a Runtime for each plugin it loads and makes it current
(:func:`activate`) around each of its callbacks, so several can be open in one process.

A Runtime holds what lives as long as the VM: the registered root classes (root_id ->
:class:`Registration`), the live contexts and, per root context, how it makes the contexts of
its streams; the calls waiting for answers (:class:`~.callouts.Calls`); the proxy's log
threshold; the exceptions already reported (:class:`~._boundary.Repeats`); and the context the host's hostcalls act on now (:attr:`Runtime.effective`), which
lets a header map or body act on its own context. Its entry points, one function per ABI
callback (:mod:`._entry`), are made once from the ABI's table (:mod:`._dispatch`).

Stream contexts are made eagerly (``proxy_on_context_create``) or lazily: a stream callback that
finds no context makes it from its root (:meth:`Runtime.create_stream_context`, which the build's
bridge may call itself), and :meth:`Runtime.forget_contexts` drops many at once.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat

from . import _boundary, _dispatch, callouts, hostcalls, log
from ._abi import CALLBACK_SPECS, LogLevel
from .contexts import Context, HttpContext, RootContext, StreamContext

TYPE_CHECKING = False  # typing is not imported at run time: it would weigh on every plugin
if TYPE_CHECKING:
    from typing import Any


class Registration:
    """A root context class registered for a root_id ("" when the module registers one root)."""

    __slots__ = ("root", "root_id")

    def __init__(self, root: type[RootContext], root_id: str) -> None:
        self.root, self.root_id = root, root_id

    def __repr__(self) -> str:
        return f"Registration({self.root.__qualname__}, root_id={self.root_id!r})"


class _NoContext(HttpContext, StreamContext):
    """Stands in for a stream its root made no context for: every callback continues."""

    def __init__(self) -> None:
        Context.__init__(self, 0)


#: the stand-in shared by every stream without a context of its own (it keeps no state)
NO_CONTEXT = _NoContext()


class _UnknownRoot(RootContext):
    """The root of a plugin configuration whose root_id this module registers nothing for."""

    def __init__(self, context_id: int, root_id: str, known: list[str]) -> None:
        super().__init__(context_id)
        self.root_id, self.known = root_id, known

    def on_configure(self, plugin_config: bytes) -> bool:
        known = ", ".join(repr(k) for k in self.known) or "none"
        log.write_unconditionally(
            LogLevel.ERROR, f"pywasm: no root context is registered for root_id {self.root_id!r} "
            f"(this module registers root_id {known}): configuration rejected")
        return False


class _Undecided(Context):
    """A stream of a root that makes both HTTP and TCP contexts: the first callback decides."""

    def __init__(self, context_id: int, root: RootContext, runtime: Runtime) -> None:
        super().__init__(context_id)
        self.root, self._runtime = root, runtime

    def _become(self, kind: str) -> Context:
        make = self.root.new_http_context if kind == "http" else self.root.new_stream_context
        ctx = make(self.context_id) or NO_CONTEXT
        self._runtime.contexts[self.context_id] = ctx
        return ctx

    def __getattr__(self, name: str) -> Any:
        kind = "http" if name.startswith(("on_request", "on_response")) else "stream"
        return getattr(self._become(kind), name)


class _AnyHttp(HttpContext):
    """Stands for the classes a custom new_http_context may make: any callback may be used."""


class _AnyStream(StreamContext):
    """Likewise for new_stream_context."""


_OWNERS = {"root": RootContext, "http": HttpContext, "tcp": StreamContext, "any": Context}


def _overrides(cls: type, owner: type, method: str) -> bool:
    if cls in (_AnyHttp, _AnyStream):  # unknown classes: assume they override everything
        return issubclass(cls, owner)
    return issubclass(cls, owner) and getattr(cls, method) is not getattr(owner, method)


def _run_on_delete(ctx: Context) -> None:
    on_delete: Callable[[], object] = ctx.on_delete  # an async def would return a coroutine
    result = on_delete()
    if result.__class__ is _dispatch.COROUTINE:
        result.close()
        raise TypeError("on_delete cannot be async: the context is already gone")


def _stream_classes(root: type[RootContext]) -> list[type[Context]]:
    """The classes of the stream contexts ``root`` makes (stand-ins for a custom factory's)."""
    classes: list[type[Context]] = [c for c in (root.http_context, root.stream_context) if c is not None]
    if root.new_http_context is not RootContext.new_http_context and root.http_context is None:
        classes.append(_AnyHttp)  # a custom factory of undeclared classes
    if root.new_stream_context is not RootContext.new_stream_context and root.stream_context is None:
        classes.append(_AnyStream)
    return classes


class Runtime:
    """Everything the SDK keeps for one VM (see the module docstring)."""

    def __init__(self) -> None:
        #: root_id -> the root class registered for it
        self.registry: dict[str, Registration] = {}
        #: context id -> live context (roots and streams)
        self.contexts: dict[int, Context] = {}
        #: root context id -> root context (the roots among ``contexts``)
        self.roots: dict[int, RootContext] = {}
        #: root context id -> how that root makes (and records) the context of a new stream
        #: (decided once per root)
        self.factories: dict[int, Callable[[int], Context]] = {}
        #: what a stream's first callback calls when it finds no context: its only root's
        #: maker, or :meth:`stream` (which refuses to guess) while there is not exactly one root
        self.lazy: Callable[[int], Context] = self.stream
        #: the calls waiting for answers
        self.calls = callouts.Calls(self)
        #: which exceptions were logged in full, and their repeats not yet reported
        self.repeats = _boundary.Repeats()
        #: the proxy's log level as last read (log lines below it are not even formatted)
        self.log_threshold: int = int(LogLevel.TRACE)  # a plain int: compared on every log line
        #: the context the host's hostcalls act on: the callback's own, until set_effective
        self.effective = 0
        self._entry_points: dict[str, Callable[..., Any]] | None = None

    def __repr__(self) -> str:
        return f"<Runtime roots={sorted(self.registry)} contexts={len(self.contexts)}>"

    # -- registration --------------------------------------------------------------------------

    def register(self, root: type[RootContext], root_id: str = "") -> None:
        if root_id in self.registry:
            raise ValueError(f"a root context is already registered for root_id {root_id!r}")
        self.registry[root_id] = Registration(root, root_id)

    def registrations(self) -> list[Registration]:
        return list(self.registry.values())

    def used_callbacks(self) -> list[str]:
        """The ABI callbacks the registered classes need, in ABI order (see ``export`` in the ABI)."""
        classes: list[type[Context]] = []
        for reg in self.registry.values():
            classes += [reg.root, *_stream_classes(reg.root)]
        used = []
        for name, spec in CALLBACK_SPECS.items():
            if spec.export == "always" or (spec.export == "overridden" and any(
                    _overrides(cls, _OWNERS[spec.context], spec.method) for cls in classes)):
                used.append(name)
        return used

    def streams_observe_delete(self) -> bool:
        """Whether a stream context of the registered classes overrides on_delete (a custom
        factory's classes are unknown: assumed to)."""
        return any(_overrides(cls, Context, "on_delete")
                   for reg in self.registry.values() for cls in _stream_classes(reg.root))

    # -- contexts ------------------------------------------------------------------------------

    def create_root(self, context_id: int) -> RootContext:
        if len(self.registry) == 1:
            root: RootContext = next(iter(self.registry.values())).root(context_id)
        else:
            value = hostcalls.get_property(b"plugin_root_id")
            root_id = value.decode("utf-8", "replace") if value is not None else ""
            reg = self.registry.get(root_id)
            root = reg.root(context_id) if reg is not None else _UnknownRoot(
                context_id, root_id, sorted(self.registry))
        self.contexts[context_id] = self.roots[context_id] = root
        self._roots_changed()
        return root

    def root(self, context_id: int) -> RootContext:
        """The root context with this id, made now if the host did not announce it."""
        root = self.roots.get(context_id)
        return root if root is not None else self.create_root(context_id)

    def create_stream_context(self, context_id: int, root_context_id: int) -> Context:
        """Make the context of a new stream of ``root_context_id``: eagerly from
        proxy_on_context_create, or lazily when a stream's first callback finds none. A factory
        that raises leaves the stream without a context (its callbacks continue). Made once: a
        second call for the same id returns the context the first made."""
        made = self.contexts.get(context_id)
        if made is not None:
            return made
        return self._maker(root_context_id)(context_id)

    def stream(self, context_id: int) -> Context:
        """The context of a stream whose first callback finds none (lazy creation): made from
        the only root context; with several, the caller must say which (create_stream_context)."""
        if len(self.roots) == 1:
            return self.create_stream_context(context_id, next(iter(self.roots)))
        raise LookupError(f"context {context_id} was never created and this VM has {len(self.roots)} "
                          "root contexts: create_stream_context(context_id, root_context_id) must come first")

    def context(self, context_id: int) -> Context:
        """A live context (root or stream), a stream's made now if it has none yet."""
        ctx = self.contexts.get(context_id)
        return ctx if ctx is not None else self.lazy(context_id)

    def _roots_changed(self) -> None:
        self.lazy = self._maker(next(iter(self.roots))) if len(self.roots) == 1 else self.stream

    def _maker(self, root_context_id: int) -> Callable[[int], Context]:
        maker = self.factories.get(root_context_id)
        if maker is None:
            maker = self.factories[root_context_id] = self._stream_maker(self.root(root_context_id))
        return maker

    def _stream_maker(self, root: RootContext) -> Callable[[int], Context]:
        """How ``root`` makes the context of a new stream and records it. Every stream's first
        callback runs this (lazy creation), so the common case (a declared ``http_context`` or
        ``stream_context`` and the default factory) costs one frame: the class's own __init__.
        A stream whose factory raises is given NO_CONTEXT (only then: a try costs nothing in
        CPython until it catches, where a dict store before each factory ran on every stream)."""
        contexts, cls = self.contexts, type(root)
        http = cls.http_context is not None or cls.new_http_context is not RootContext.new_http_context
        tcp = cls.stream_context is not None or cls.new_stream_context is not RootContext.new_stream_context
        declared: type[HttpContext] | type[StreamContext] | None = cls.http_context if http else cls.stream_context
        default = (cls.new_http_context is RootContext.new_http_context if http
                   else cls.new_stream_context is RootContext.new_stream_context)
        if not (http and tcp) and declared is not None and default:
            def make_declared(context_id: int) -> Context:
                try:
                    ctx = contexts[context_id] = declared(context_id, root)
                except BaseException:
                    contexts[context_id] = NO_CONTEXT
                    raise
                return ctx
            return make_declared

        factory = self._stream_factory(root, http, tcp)

        def make(context_id: int) -> Context:
            try:
                ctx = contexts[context_id] = factory(context_id)
            except BaseException:
                contexts[context_id] = NO_CONTEXT
                raise
            return ctx
        return make

    def _stream_factory(self, root: RootContext, http: bool, tcp: bool) -> Callable[[int], Context]:
        if http and tcp:
            return lambda context_id: _Undecided(context_id, root, self)
        make = root.new_http_context if http else root.new_stream_context if tcp else None
        if make is None:
            return lambda _context_id: NO_CONTEXT

        def create(context_id: int) -> Context:
            made = make(context_id)
            return made if made is not None else NO_CONTEXT

        return create

    def delete_context(self, context_id: int) -> None:
        """The host is done with a context: forget it and what waits for it, then on_delete."""
        ctx = self.contexts.pop(context_id, None)
        self._forget_root(context_id)
        self.calls.forget_context(context_id)
        if ctx is not None and ctx is not NO_CONTEXT:
            _run_on_delete(ctx)

    def _forget_root(self, context_id: int) -> None:
        """If ``context_id`` is a root's: its stream factory goes too, and lazy creation is decided again."""
        if self.roots.pop(context_id, None) is not None:
            self.factories.pop(context_id, None)
            self._roots_changed()

    def forget_contexts(self, context_ids: list[int]) -> None:
        """Delete many contexts at once (what the host's proxy_on_delete does for one). The host
        is not calling on these contexts now: their on_delete cannot reach the host for them."""
        if not self.calls.idle():
            for context_id in context_ids:
                try:
                    self.delete_context(context_id)
                except BaseException:
                    _boundary.report(context_id, "on_delete")
            return
        # the common case, kept cheap (the bridge delivers a batch every 32 streams): with no
        # call waiting, the contexts are dropped at once (map runs its loop in C, where a
        # comprehension would run bytecode for each), then visited again only if their class
        # has an on_delete of its own or is a root's (the bridge batches streams only, but
        # another caller may not), tested once per class in the batch rather than per context
        gone = list(map(self.contexts.pop, context_ids, repeat(None)))
        # _overrides(cls, Context, "on_delete") written out: a call per class is about 1,500
        # wasm instructions (+100 per stream at a batch of 32, measured with costs.py's fuel)
        observe = {cls for cls in set(map(type, gone))
                   if getattr(cls, "on_delete", Context.on_delete) is not Context.on_delete
                   or issubclass(cls, RootContext)}
        if observe:
            for context_id, ctx in zip(context_ids, gone):
                if ctx is not None and type(ctx) in observe:
                    try:
                        self._forget_root(context_id)
                        _run_on_delete(ctx)
                    except BaseException:
                        _boundary.report(context_id, "on_delete")

    # -- the host's view of "the current context" -----------------------------------------------

    def set_effective(self, context_id: int) -> None:
        """Make the hostcalls that follow act on ``context_id`` (proxy_set_effective_context)."""
        hostcalls.set_effective_context(context_id)
        self.effective = context_id

    # -- entry points ----------------------------------------------------------------------------

    def entry_points(self) -> dict[str, Callable[..., Any]]:
        """One function per ABI callback, named and called as in the ABI, never raising (made
        once), plus ``create_stream_context`` and ``forget_contexts`` for the build's bridge."""
        if self._entry_points is None:
            self._entry_points = _dispatch.entry_points(self)
        return self._entry_points


#: the running runtime: the only one in a .wasm; the native mock host switches it (activate)
current = Runtime()


def activate(runtime: Runtime) -> Runtime:
    """Make ``runtime`` the running one; returns the one that was (to activate it again after)."""
    global current
    previous, current = current, runtime
    return previous


def register(root: type[RootContext] | None = None, *, root_id: str = "",
             http: type[HttpContext] | None = None,
             stream: type[StreamContext] | None = None) -> type[RootContext]:
    """Name the plugin's root context; call it once at the top level of the plugin module.

    ``register(MyRoot)`` or ``register(http=MyHttpContext)`` (a default root is made for you).
    ``root_id`` must match the ``root_id`` of the proxy's plugin configuration when one module
    carries several plugins (a configuration with another root_id is then rejected); with a
    single registration it serves every root_id. Usable as a class decorator: ``@register``.
    """
    if root is None:
        root = RootContext
    if not (isinstance(root, type) and issubclass(root, RootContext)):
        raise TypeError(f"register() takes a RootContext subclass, got {root!r}")
    for name, cls, base in (("http", http, HttpContext), ("stream", stream, StreamContext)):
        if cls is not None and not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"register({name}=...) takes a {base.__name__} subclass, got {cls!r}")
    if http is not None or stream is not None:
        attrs: dict[str, object] = {"__module__": root.__module__, "__qualname__": root.__qualname__}
        if http is not None:
            attrs["http_context"] = http
        if stream is not None:
            attrs["stream_context"] = stream
        root = type(root.__name__, (root,), attrs)
    current.register(root, root_id)
    return root
