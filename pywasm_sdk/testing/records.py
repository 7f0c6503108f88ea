"""What a test reads back from the host: log records, local responses, metrics.

Plain values with no behaviour beyond finding things in them; the host fills them, tests assert on
them. Nothing here talks to a plugin.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

from .._abi import LogLevel, MetricType

__all__ = ["LocalResponse", "LogRecord", "Logs", "Metric", "Metrics"]


@dataclass(frozen=True)
class LogRecord:
    """One line the plugin wrote to the proxy's log.

    ``source`` says how it arrived: ``"proxy_log"`` (the SDK's log, ``logging``, ``print`` inside
    the SDK's routing) or ``"stdout"``/``"stderr"`` (WASI ``fd_write``, e.g. C code or a crash
    message, logged by Envoy at INFO and ERROR). ``context_id`` is the context whose callback was
    running (0 outside callbacks, e.g. during the module's ``_initialize``).
    """

    level: LogLevel
    message: str
    context_id: int = 0
    source: str = "proxy_log"

    def __str__(self) -> str:
        return f"[{self.level.name.lower()}] {self.message}"


class Logs(Sequence[LogRecord]):
    """The plugin's log lines in order, with helpers to find lines.

    Read it any time; it only grows (``clear()`` empties it, e.g. after the VM started).
    """

    def __init__(self) -> None:
        self._records: list[LogRecord] = []

    def append(self, record: LogRecord) -> None:
        """Record a line (the host calls this; tests normally only read)."""
        self._records.append(record)

    @overload
    def __getitem__(self, index: int) -> LogRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[LogRecord]: ...
    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[LogRecord]:
        return iter(self._records)

    def __repr__(self) -> str:
        return f"Logs({self._records!r})"

    def find(self, pattern: str | re.Pattern[str], *, level: LogLevel | None = None,
             min_level: LogLevel | None = None) -> list[LogRecord]:
        """Records whose message contains ``pattern`` (a str) or matches it (a compiled regex,
        searched), optionally only those at ``level`` or at ``min_level`` and above."""
        found = []
        for record in self._records:
            if level is not None and record.level != level:
                continue
            if min_level is not None and record.level < min_level:
                continue
            if isinstance(pattern, re.Pattern):
                if pattern.search(record.message):
                    found.append(record)
            elif pattern in record.message:
                found.append(record)
        return found

    def messages(self, level: LogLevel | None = None) -> list[str]:
        """The messages (optionally of one level), for ``assert "x" in host.logs.messages()``."""
        return [r.message for r in self._records if level is None or r.level == level]

    def text(self) -> str:
        """Every record on its own line, as ``[level] message`` (handy in assertion messages)."""
        return "\n".join(str(r) for r in self._records)

    def clear(self) -> None:
        """Forget the records so far."""
        self._records.clear()


@dataclass(frozen=True)
class LocalResponse:
    """A response the plugin sent itself with ``proxy_send_local_response``.

    ``headers`` are the additional headers exactly as the plugin passed them (names lower-cased as
    Envoy does); what the client finally receives (with ``:status``, ``content-length`` and what
    the plugin's own response callbacks changed) is the stream's ``response_headers``.
    ``grpc_status`` is None when the plugin passed a value outside 0..16 (the SDKs pass -1 for
    "none"). ``callback`` is the callback that sent it.
    """

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    grpc_status: int | None
    details: str
    callback: str = ""


@dataclass
class Metric:
    """A metric the plugin defined: counters and gauges have a ``value``, histograms ``samples``.

    ``name`` is the name the plugin gave; Envoy publishes it with a ``wasmcustom.`` prefix.
    """

    name: str
    type: MetricType
    value: int = 0
    samples: list[int] = field(default_factory=list)


class Metrics(Mapping[str, Metric]):
    """The plugin's metrics by name (a read-only view; the plugin defines and updates them).

    Envoy keeps counters, gauges and histograms apart, so one name may exist with two types; then
    ``metrics[name]`` raises and ``metrics.typed(name, MetricType.GAUGE)`` picks one.
    """

    def __init__(self, by_key: dict[tuple[MetricType, str], Metric]) -> None:
        self._by_key = by_key

    def _named(self, name: str) -> list[Metric]:
        return [m for (_, n), m in self._by_key.items() if n == name]

    def __getitem__(self, name: str) -> Metric:
        found = self._named(name)
        if len(found) == 1:
            return found[0]
        if not found:
            known = ", ".join(sorted(self)) or "none"
            raise KeyError(f"no metric {name!r} was defined (defined: {known})")
        types = ", ".join(m.type.name for m in found)
        raise KeyError(f"metric {name!r} exists as {types}: use metrics.typed(name, MetricType.X)")

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(n for _, n in self._by_key))

    def __len__(self) -> int:
        return len(dict.fromkeys(n for _, n in self._by_key))

    def __repr__(self) -> str:
        return f"Metrics({list(self._by_key.values())!r})"

    def typed(self, name: str, metric_type: MetricType) -> Metric:
        """The metric of this name and type (KeyError when the plugin defined none)."""
        return self._by_key[(MetricType(metric_type), name)]

    def value(self, name: str) -> int:
        """The current value of a counter or gauge (0 when it was never defined)."""
        return self[name].value if self._named(name) else 0
