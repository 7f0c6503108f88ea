"""Statistics of the benchmarks: pure functions, no I/O, unit-tested.

Two ideas carry the method. Interleaving: the variant under test and its baseline alternate in
blocks (latency) or rounds (starts), so slow drift of the machine (CPU frequency, other load)
falls on both alike. Pairing: each block of one listener has a neighbouring block of the other;
the spread of the per-pair differences says how far the added figure can be trusted.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["block_order", "latency_summary", "mean_error", "pair_spread", "percentile", "ratio",
           "round_order"]

T = TypeVar("T")


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (0 < p <= 100) of an already sorted sequence; NaN when empty.

    Nearest rank returns a value that was measured, never an interpolation between two.
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p}: expected 0 < p <= 100")
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50, p90, p99 and mean of latencies given in ns, in us."""
    s = sorted(samples_ns)
    if not s:
        return {"p50_us": math.nan, "p90_us": math.nan, "p99_us": math.nan, "mean_us": math.nan}
    return {"p50_us": percentile(s, 50) / 1e3, "p90_us": percentile(s, 90) / 1e3,
            "p99_us": percentile(s, 99) / 1e3, "mean_us": statistics.fmean(s) / 1e3}


def block_order(blocks_each: int) -> list[int]:
    """The order of ``2 * blocks_each`` blocks of two listeners: 0 = filter, 1 = baseline.

    ABBA BAAB ABBA ...: every aligned pair (0-1, 2-3, ...) holds one block of each, and each
    listener goes first in half of the pairs, so neither always runs right after the other.
    """
    if blocks_each < 1:
        raise ValueError(f"blocks_each {blocks_each}: expected at least 1")
    order: list[int] = []
    quad = [0, 1, 1, 0]
    while len(order) < 2 * blocks_each:
        order += quad
        quad = [1 - x for x in quad]
    return order[: 2 * blocks_each]


def round_order(variants: Sequence[T], rounds: int, *, last: T | None = None) -> list[T]:
    """Start order of several variants over ``rounds``: forward, then backward, then forward ...

    Each variant's mean position is the same, so a trend over the run (a machine warming up, a
    neighbour's job ending) does not favour one. ``last`` moves that variant to the very end of
    the final round (a caller keeps the last start running for a load phase).
    """
    if rounds < 1:
        raise ValueError(f"rounds {rounds}: expected at least 1")
    order: list[T] = []
    for r in range(rounds):
        this = list(variants) if r % 2 == 0 else list(reversed(variants))
        if r == rounds - 1 and last is not None:
            this.remove(last)
            this.append(last)
        order += this
    return order


def pair_spread(differences: Sequence[float]) -> dict[str, float]:
    """Median and interquartile range of per-pair differences, and how many pairs there were."""
    if not differences:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "pairs": 0}
    if len(differences) >= 2:
        q25, _, q75 = statistics.quantiles(differences, n=4)
    else:
        q25 = q75 = math.nan
    return {"median": statistics.median(differences), "q25": q25, "q75": q75,
            "pairs": len(differences)}


def mean_error(values: Sequence[float]) -> dict[str, float]:
    """Mean of per-round figures and its standard error (sample stdev / sqrt(n)), with how many
    there were: mean +- 2 standard errors is roughly a 95 % interval when the rounds are
    independent. The error is NaN with fewer than two values."""
    if not values:
        return {"mean": math.nan, "se": math.nan, "count": 0}
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) >= 2 else math.nan
    return {"mean": statistics.fmean(values), "se": se, "count": len(values)}


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is zero (a baseline that measured nothing)."""
    return a / b if b else math.nan
