"""Foreign functions: what Envoy offers beyond the ABI, by name.

``set_envoy_filter_state`` is how a plugin sets Envoy's own filter state (``proxy_set_property``
can only write ``wasm.``-prefixed keys): for example ``envoy.tcp_proxy.cluster`` re-routes a TCP
connection to another cluster when set in ``on_new_connection``.
"""

from __future__ import annotations

from enum import IntEnum

from . import hostcalls
from ._protobuf import field_bytes, field_varint
from .wire import to_bytes


class LifeSpan(IntEnum):
    """How long a filter-state value lives (envoy.source.extensions.common.wasm.LifeSpan)."""

    FILTER_CHAIN = 0
    DOWNSTREAM_REQUEST = 1
    DOWNSTREAM_CONNECTION = 2


def call_foreign_function(name: str, arguments: bytes | str = b"") -> bytes:
    """Call a function the proxy registered under ``name``; raises NotFound for unknown names."""
    return hostcalls.call_foreign_function(name, to_bytes(arguments))


def set_envoy_filter_state(key: str, value: str | bytes,
                           span: LifeSpan = LifeSpan.FILTER_CHAIN) -> None:
    """Set an Envoy filter-state object, e.g. ``set_envoy_filter_state("envoy.tcp_proxy.cluster",
    "egress-router1")``. The key must be one Envoy has an object factory for (NotFound otherwise).

    Valid in stream callbacks (e.g. ``on_new_connection``, ``on_request_headers``).
    """
    # SetEnvoyFilterStateArguments { string path = 1; string value = 2; LifeSpan span = 3; }
    message = field_bytes(1, to_bytes(key)) + field_bytes(2, to_bytes(value)) + field_varint(3, int(span))
    hostcalls.call_foreign_function("set_envoy_filter_state", message)


def clear_route_cache() -> None:
    """Make Envoy pick the route again after the plugin changed what routing looks at."""
    hostcalls.call_foreign_function("clear_route_cache", b"")
