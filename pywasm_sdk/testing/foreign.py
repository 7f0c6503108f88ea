"""Envoy's foreign functions (``proxy_call_foreign_function``), as Envoy's ``foreign.cc`` answers.

    set_envoy_filter_state   decodes SetEnvoyFilterStateArguments{string path = 1; string value = 2;
                             LifeSpan span = 3} and stores value under path in the stream's filter
                             state. Unparsable: BAD_ARGUMENT. A key without an object factory in
                             Envoy: NOT_FOUND. A factory refusing the value: BAD_ARGUMENT.
    clear_route_cache        counted on the HTTP stream (``stream.route_cache_cleared``)
    compress / uncompress    zlib; uncompressing garbage is SERIALIZATION_FAILURE
    anything else            NOT_FOUND, except Envoy's functions this host does not emulate
                             (:data:`NOT_EMULATED`): those raise UnsupportedByMockHost, so a test
                             never passes on a made-up answer. Tests can provide any function.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Set

from .._abi import Status
from . import _proto
from ._state import ContextState, HttpState, StreamCommon

__all__ = ["KNOWN_FILTER_STATE_KEYS", "NOT_EMULATED", "call"]

#: Envoy filter-state keys with a registered ObjectFactory (``set_envoy_filter_state`` accepts
#: only these; a test adds more with ``filter_state_keys=``)
KNOWN_FILTER_STATE_KEYS = frozenset({
    "envoy.tcp_proxy.cluster",
    "envoy.tcp_proxy.disable_tunneling",
    "envoy.tcp_proxy.per_connection_idle_timeout_ms",
    "envoy.upstream.dynamic_host",
    "envoy.upstream.dynamic_port",
    "envoy.network.upstream_server_name",
    "envoy.network.application_protocols",
    "envoy.network.upstream_subject_alt_names",
    "envoy.network.transport_socket.original_dst_address",
    "envoy.filters.listener.original_dst.local_ip",
    "envoy.filters.listener.original_dst.remote_ip",
    "envoy.string",
})
#: keys whose object factory parses an unsigned integer (createFromBytes fails otherwise)
_NUMERIC_KEYS = frozenset({"envoy.upstream.dynamic_port", "envoy.tcp_proxy.per_connection_idle_timeout_ms"})
#: Envoy's foreign functions this host does not emulate
NOT_EMULATED = frozenset({
    "declare_property", "sign", "verify_signature", "expr_create", "expr_evaluate", "expr_delete",
})


class NotEmulated(Exception):
    """Raised by :func:`call` for a function of :data:`NOT_EMULATED` (the host turns it into
    UnsupportedByMockHost)."""


def call(name: str, arguments: bytes, ctx: ContextState, *, filter_state_keys: Set[str],
         note: Callable[[str], None]) -> tuple[int, bytes]:
    """Envoy's answer to foreign function ``name`` called from ``ctx``: (status, result)."""
    if name == "set_envoy_filter_state":
        return set_envoy_filter_state(arguments, ctx, filter_state_keys, note), b""
    if name == "clear_route_cache":
        if isinstance(ctx, HttpState):
            ctx.route_cache_cleared += 1
        return Status.OK, b""
    if name == "compress":
        return Status.OK, zlib.compress(arguments)
    if name == "uncompress":
        try:
            return Status.OK, zlib.decompress(arguments)
        except zlib.error:
            return Status.SERIALIZATION_FAILURE, b""
    if name in NOT_EMULATED:
        raise NotEmulated(name)
    return Status.NOT_FOUND, b""


def set_envoy_filter_state(arguments: bytes, ctx: ContextState, keys: Set[str],
                           note: Callable[[str], None]) -> int:
    try:
        args = _proto.parse_strings(arguments, {1: "path", 2: "value", 3: "span"})
    except _proto.ProtoError:
        return Status.BAD_ARGUMENT
    path, value = args.get("path", ""), args.get("value", "")
    if path not in keys:
        note(f"set_envoy_filter_state: Envoy has no filter-state object factory for {path!r} "
             "(NOT_FOUND); add it with filter_state_keys=... if your Envoy registers one")
        return Status.NOT_FOUND
    if path in _NUMERIC_KEYS and not value.isdigit():
        return Status.BAD_ARGUMENT
    if not isinstance(ctx, StreamCommon):
        return Status.NOT_FOUND  # a root context has no stream info
    ctx.filter_state[path] = value
    ctx.filter_state_spans[path] = int(args.get("span", 0))
    return Status.OK
