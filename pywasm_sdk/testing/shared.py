"""Shared data, shared queues and metrics: the state Envoy keeps per process, shared by its VMs.

Envoy (proxy-wasm-cpp-host ``shared_data.cc``, ``shared_queue.cc``) keeps shared data and queues
in process-wide singletons keyed by vm_id, so plugins in different worker threads (VMs) see the
same values; its stats store is process-wide too, so every VM that defines a metric of the same
name and type adds to one statistic. Here a store is an ordinary object: each host makes its own
unless the test passes one store to several hosts to simulate several workers
(``MockHost.from_wasm(..., shared=other.shared)``).

Semantics kept: a CAS token per value from a counter starting at 1 (0 means "no check");
``set`` with a stale CAS is CAS_MISMATCH; queues are found by (vm_id, name), registering again
keeps the data and moves the ownership, enqueue notifies the owner's root context with
``proxy_on_queue_ready`` (posted, i.e. after the current callback, as Envoy's dispatcher does).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Protocol

from .._abi import MetricType, Status
from .records import Metric

__all__ = ["SharedData", "SharedQueues", "SharedStore"]


class QueueOwner(Protocol):
    """Who gets told when a queue has items (the host that registered it)."""

    def post_queue_ready(self, context_id: int, token: int) -> None: ...


@dataclass
class _Queue:
    vm_id: str
    name: str
    items: deque[bytes] = field(default_factory=deque)
    owner: weakref.ReferenceType[QueueOwner] | None = None
    owner_context: int = 0


class SharedStore:
    """The shared data and shared queues of one simulated proxy process."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, tuple[bytes, int]]] = {}
        self._next_cas = 1
        self._queues: dict[int, _Queue] = {}
        self._queue_tokens: dict[tuple[str, str], int] = {}
        self._next_token = 1
        #: the process's statistics by (type, name): one per name and type, whichever VM defined it
        self.metrics: dict[tuple[MetricType, str], Metric] = {}

    # -- shared data -------------------------------------------------------------------------

    def _cas(self) -> int:
        cas = self._next_cas
        self._next_cas = (self._next_cas + 1) & 0xFFFFFFFF or 1  # 0 is not a valid CAS
        return cas

    def get(self, vm_id: str, key: str) -> tuple[bytes, int] | None:
        """(value, cas) of a key, or None."""
        return self._data.get(vm_id, {}).get(key)

    def set(self, vm_id: str, key: str, value: bytes, cas: int = 0) -> Status:
        """Store a value; with ``cas`` != 0 only if the key's current CAS is that."""
        values = self._data.setdefault(vm_id, {})
        current = values.get(key)
        if current is not None and cas != 0 and cas != current[1]:
            return Status.CAS_MISMATCH
        values[key] = (bytes(value), self._cas())
        return Status.OK

    def remove(self, vm_id: str, key: str) -> bool:
        return self._data.get(vm_id, {}).pop(key, None) is not None

    def keys(self, vm_id: str) -> list[str]:
        return list(self._data.get(vm_id, {}))

    # -- shared queues -----------------------------------------------------------------------

    def register_queue(self, vm_id: str, name: str, owner: QueueOwner, context_id: int) -> int:
        """The token of queue (vm_id, name), created when new; its owner becomes ``owner``."""
        token = self._queue_tokens.get((vm_id, name))
        if token is None:
            token = self._next_token
            self._next_token += 1
            self._queue_tokens[(vm_id, name)] = token
            self._queues[token] = _Queue(vm_id, name)
        queue = self._queues[token]
        queue.owner = weakref.ref(owner)
        queue.owner_context = context_id
        return token

    def resolve_queue(self, vm_id: str, name: str) -> int:
        """The token of a registered queue, or 0 (Envoy's "not found")."""
        return self._queue_tokens.get((vm_id, name), 0)

    def enqueue(self, token: int, value: bytes) -> Status:
        queue = self._queues.get(token)
        if queue is None:
            return Status.NOT_FOUND
        queue.items.append(bytes(value))
        owner = queue.owner() if queue.owner is not None else None
        if owner is not None:
            owner.post_queue_ready(queue.owner_context, token)
        return Status.OK

    def dequeue(self, token: int) -> tuple[Status, bytes]:
        queue = self._queues.get(token)
        if queue is None:
            return Status.NOT_FOUND, b""
        if not queue.items:
            return Status.EMPTY, b""
        return Status.OK, queue.items.popleft()

    def queue_items(self, token: int) -> list[bytes]:
        queue = self._queues.get(token)
        return list(queue.items) if queue else []

    def queue_names(self, vm_id: str) -> list[str]:
        return [name for (vid, name) in self._queue_tokens if vid == vm_id]


class SharedData(MutableMapping[str, bytes]):
    """The shared data a host's VM sees (its vm_id), as a mutable mapping of key -> value.

    Setting a key from the test writes unconditionally (and bumps its CAS, like any write);
    ``cas(key)`` is the token a plugin's next ``get_shared_data`` would see.
    """

    def __init__(self, store: SharedStore, vm_id: str) -> None:
        self._store = store
        self._vm_id = vm_id

    def __getitem__(self, key: str) -> bytes:
        found = self._store.get(self._vm_id, key)
        if found is None:
            raise KeyError(key)
        return found[0]

    def __setitem__(self, key: str, value: bytes | str) -> None:
        self._store.set(self._vm_id, key, value.encode() if isinstance(value, str) else bytes(value))

    def __delitem__(self, key: str) -> None:
        if not self._store.remove(self._vm_id, key):
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.keys(self._vm_id))

    def __len__(self) -> int:
        return len(self._store.keys(self._vm_id))

    def __repr__(self) -> str:
        return f"SharedData({dict(self)!r})"

    def cas(self, key: str) -> int:
        """The CAS token of a key (KeyError when absent)."""
        found = self._store.get(self._vm_id, key)
        if found is None:
            raise KeyError(key)
        return found[1]


class SharedQueues:
    """The shared queues registered under a host's vm_id: look at them and feed them.

    ``enqueue`` from a test acts like another VM enqueueing: the owning root context gets
    ``proxy_on_queue_ready`` (right away when its host is idle).
    """

    def __init__(self, store: SharedStore, vm_id: str) -> None:
        self._store = store
        self._vm_id = vm_id

    def names(self) -> list[str]:
        """Names of the queues registered so far."""
        return self._store.queue_names(self._vm_id)

    def token(self, name: str) -> int:
        """The queue's token (what ``proxy_register_shared_queue`` answered)."""
        token = self._store.resolve_queue(self._vm_id, name)
        if not token:
            raise KeyError(f"no shared queue {name!r} is registered (registered: {self.names()})")
        return token

    def items(self, name: str) -> list[bytes]:
        """What is waiting in a queue, oldest first."""
        return self._store.queue_items(self.token(name))

    def enqueue(self, name: str, value: bytes | str) -> None:
        """Push a value as another VM would; the owner's on_queue_ready follows."""
        self._store.enqueue(self.token(name), value.encode() if isinstance(value, str) else value)
