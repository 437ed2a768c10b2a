"""A histogram of plain ints, cheap enough for the request path (no lock, no label look-up).

prometheus-client's `Histogram.observe` takes a lock and walks its buckets: about 2 µs per call here,
against about 0.3 µs for `observe` below (one bisect, two additions). The event loop is the only writer;
`switch.metrics` copies the counts at scrape time and hands them to prometheus-client then.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

NS_PER_S = 1_000_000_000
# Request and commit latencies, in seconds: 0.5 ms .. 10 s (a commit over 5 s has failed anyway).
LATENCY_BUCKETS_S: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1.0, 2.5, 5.0, 10.0)
# Submissions per journal commit: powers of two up to BATCH_SUBMISSIONS_MAX (2,048).
BATCH_BUCKETS: tuple[float, ...] = tuple(float(1 << i) for i in range(12))


class Histogram:
    """Counts of observations at or below each upper bound (Prometheus `le`), plus one for +Inf."""

    __slots__ = ("bounds", "upper_bounds", "scale", "counts", "total")

    def __init__(self, upper_bounds: Sequence[float], scale: int = 1) -> None:
        """`upper_bounds` in the exported unit; `scale` converts it to the observed one (e.g. ns per s)."""
        self.upper_bounds = tuple(upper_bounds)
        self.scale = scale
        self.bounds = [round(b * scale) for b in upper_bounds]  # in observed units, so observe() needs no division
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0  # sum of observed values, observed units

    def observe(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> tuple[list[int], int]:
        """(per-bucket counts, sum) copied at one moment; the last count is the +Inf bucket."""
        return list(self.counts), self.total


def latency_histogram() -> Histogram:
    """Observes nanoseconds, exports seconds."""
    return Histogram(LATENCY_BUCKETS_S, NS_PER_S)


def batch_histogram() -> Histogram:
    return Histogram(BATCH_BUCKETS)
