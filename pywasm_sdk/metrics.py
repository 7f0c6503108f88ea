"""Metrics the proxy exports with its own statistics (Envoy: ``/stats``, Prometheus).

Create metric objects anywhere, module level included: each is defined in the proxy on first
use (there is no proxy at import time). Envoy shows a metric named ``name`` with its custom
prefix, e.g. a Counter("my_plugin.requests") as ``wasmcustom.my_plugin.requests``.

Values are ints (the proxy keeps 64-bit integers): a float or a value out of range raises
TypeError or ValueError in the plugin, before anything reaches the proxy.
"""

from __future__ import annotations

from . import hostcalls
from ._abi import MetricType
from .wire import check_int, to_bytes

_U64 = (1 << 64) - 1
_I64 = (1 << 63) - 1


class _Metric:
    _type: MetricType

    __slots__ = ("name", "_id")

    def __init__(self, name: str | bytes) -> None:
        self.name = name
        self._id: int | None = None

    def _metric_id(self) -> int:
        if self._id is None:
            self._id = hostcalls.define_metric(self._type, to_bytes(self.name))
        return self._id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Counter(_Metric):
    """A number that only grows (requests, errors)."""

    _type = MetricType.COUNTER
    __slots__ = ()

    def increment(self, amount: int = 1) -> None:
        """Add ``amount`` (an int > 0)."""
        amount = check_int(amount, "Counter.increment()", -_I64 - 1, _I64)
        if amount <= 0:
            raise ValueError(f"a counter only grows: increment({amount})")
        hostcalls.increment_metric(self._metric_id(), amount)

    @property
    def value(self) -> int:
        return hostcalls.get_metric(self._metric_id())


class Gauge(_Metric):
    """A number that goes up and down (connections open, queue length)."""

    _type = MetricType.GAUGE
    __slots__ = ()

    def set(self, value: int) -> None:
        """Set the gauge to ``value`` (an int >= 0: the proxy's gauges are unsigned)."""
        hostcalls.record_metric(self._metric_id(), check_int(value, "Gauge.set()", 0, _U64))

    def add(self, delta: int) -> None:
        """Add ``delta`` (an int, negative to subtract)."""
        hostcalls.increment_metric(self._metric_id(), check_int(delta, "Gauge.add()", -_I64 - 1, _I64))

    @property
    def value(self) -> int:
        return hostcalls.get_metric(self._metric_id())


class Histogram(_Metric):
    """A distribution of values (latencies, sizes); the proxy computes the quantiles."""

    _type = MetricType.HISTOGRAM
    __slots__ = ()

    def record(self, value: int) -> None:
        """Record one sample (an int >= 0; record milliseconds, not fractions of seconds)."""
        hostcalls.record_metric(self._metric_id(), check_int(value, "Histogram.record()", 0, _U64))
