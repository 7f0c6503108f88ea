"""State shared by every VM of the same ``vm_id`` in a proxy (one VM per worker thread).

Shared data is a key-value store with compare-and-swap: read a value with its CAS token, write
it back with that token, and the write fails with :class:`CasMismatch` if another worker wrote
in between (read again and retry). Shared queues carry bytes from any VM to the root context
that registered the queue, which gets ``on_queue_ready``.
"""

from __future__ import annotations

from . import hostcalls
from .wire import check_int, to_bytes

TYPE_CHECKING = False  # typing is not imported at run time: it would weigh on every plugin
if TYPE_CHECKING:
    from collections.abc import Callable


class SharedValue(tuple[bytes, int]):
    """``(value, cas)``: a shared value and the CAS token to write it back with."""

    __slots__ = ()

    def __new__(cls, value: bytes, cas: int) -> SharedValue:
        return tuple.__new__(cls, (value, cas))

    @property
    def value(self) -> bytes:
        value: bytes = self[0]
        return value

    @property
    def cas(self) -> int:
        cas: int = self[1]
        return cas

    def __repr__(self) -> str:
        return f"SharedValue(value={self[0]!r}, cas={self[1]!r})"


def get_shared_data(key: str | bytes) -> SharedValue | None:
    """The value of ``key`` and its CAS token, or None when the key was never set.

    Keys are bytes to the proxy; a ``str`` key is UTF-8 encoded (a header value with bytes that
    are not UTF-8 gives back exactly those bytes, so such keys never collide)."""
    found = hostcalls.get_shared_data(to_bytes(key))
    return None if found is None else SharedValue(*found)


def set_shared_data(key: str | bytes, value: str | bytes, *, cas: int = 0) -> None:
    """Write ``key``. With ``cas`` from get_shared_data, only if nobody wrote since (else
    CasMismatch); ``cas=0`` writes unconditionally."""
    hostcalls.set_shared_data(to_bytes(key), to_bytes(value), check_int(cas, "cas", 0, 0xFFFFFFFF))


def update_shared_data(key: str | bytes, update: Callable[[bytes | None], str | bytes], *,
                       attempts: int = 16) -> bytes:
    """Atomically replace ``key`` with ``update(old_value_or_None) -> bytes``; retries on
    CasMismatch (raises it after ``attempts`` lost races). Returns the value written.

    The ABI has no "create only if absent": when two workers create a missing key at the same
    moment, one write wins unseen. Create shared keys once (e.g. in on_configure) when that
    matters."""
    from .errors import CasMismatch

    for _ in range(attempts):
        current = get_shared_data(key)
        new = to_bytes(update(None if current is None else current.value))
        try:
            set_shared_data(key, new, cas=0 if current is None else current.cas)
            return new
        except CasMismatch:
            continue
    raise CasMismatch("proxy_set_shared_data", 8, f"{key!r}: lost {attempts} races in a row")


class SharedQueue:
    """A queue of byte messages; ``register`` it in the root context that consumes it."""

    __slots__ = ("queue_id",)

    def __init__(self, queue_id: int) -> None:
        self.queue_id = check_int(queue_id, "SharedQueue(queue_id)", 0, 0xFFFFFFFF)

    @classmethod
    def register(cls, name: str | bytes) -> SharedQueue:
        """Create (or find) the queue ``name`` owned by the calling root context, which then
        gets on_queue_ready(queue_id) when items arrive. Valid in root callbacks."""
        return cls(hostcalls.register_shared_queue(to_bytes(name)))

    @classmethod
    def resolve(cls, vm_id: str | bytes, name: str | bytes) -> SharedQueue | None:
        """Find a queue another VM (or this one) registered; None if there is none yet."""
        queue_id = hostcalls.resolve_shared_queue(to_bytes(vm_id), to_bytes(name))
        return None if queue_id is None else cls(queue_id)

    def enqueue(self, message: str | bytes) -> None:
        hostcalls.enqueue_shared_queue(self.queue_id, to_bytes(message))

    def dequeue(self) -> bytes | None:
        """The oldest message, or None when the queue is empty."""
        return hostcalls.dequeue_shared_queue(self.queue_id)

    def __repr__(self) -> str:
        return f"SharedQueue({self.queue_id})"
