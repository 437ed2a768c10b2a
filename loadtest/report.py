"""The PNG report of a load run: throughput over time and the latency distribution, legs side by side.

Left: RPCs completed per 1 s bucket over the run. Right: the percentile plot of the HdrHistogram
(latency against 1/(1 − p) on a log axis, the usual way to see the tail). Each leg (switch,
baseline) is one line in both panels.

Drawn with matplotlib's object API on the Agg backend: no pyplot global state, no display needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram
from matplotlib.figure import Figure  # a Figure renders with Agg by itself: no pyplot, no GUI

from loadtest.workload import LoadResult

PERCENTILE_STEPS = 100  # points per decade of 1/(1-p): 20 → 0 … 99.999 %
PERCENTILE_DECADES = 5
TICKS = ((1, "0%"), (10, "90%"), (100, "99%"), (1_000, "99.9%"), (10_000, "99.99%"),
         (100_000, "99.999%"))  # fmt: skip


@dataclass(frozen=True)
class Series:
    name: str
    per_second: list[int]  # RPCs completed in each whole second of the run
    percentiles: list[tuple[float, float]]  # (1 / (1 - p), latency ms)


def series_of(name: str, result: LoadResult) -> Series:
    seconds = max(1, int(result.duration_s))  # the last, partial bucket is only the run's tail
    per_second = (result.timeline + [0] * seconds)[:seconds]
    return Series(name, per_second, percentile_points(result.histogram))


def percentile_points(histogram: HdrHistogram) -> list[tuple[float, float]]:
    if histogram.get_total_count() == 0:
        return []
    points = []
    for step in range(PERCENTILE_DECADES * 20 + 1):
        x = 10 ** (step / 20)
        percentile = 100.0 * (1.0 - 1.0 / x)
        points.append((x, histogram.get_value_at_percentile(percentile) / 1000))
    return points


def write_report(path: Path, legs: dict[str, LoadResult], title: str) -> None:
    """Write the PNG: throughput over time and latency by percentile, one line per leg."""
    series = [series_of(name, result) for name, result in legs.items()]
    figure = Figure(figsize=(13, 4.8), dpi=100)
    throughput, latency = figure.subplots(1, 2)
    for one in series:
        throughput.plot(range(1, len(one.per_second) + 1), one.per_second, label=one.name)
        if one.percentiles:
            xs, ys = zip(*one.percentiles, strict=True)
            latency.plot(xs, ys, label=one.name)
    throughput.set_title("throughput (1 s buckets)")
    throughput.set_xlabel("second of the run")
    throughput.set_ylabel("RPC/s")
    throughput.set_ylim(bottom=0)
    throughput.grid(True, alpha=0.3)
    throughput.legend()
    latency.set_title("latency by percentile")
    latency.set_xscale("log")
    latency.set_xticks([x for x, _ in TICKS])
    latency.set_xticklabels([label for _, label in TICKS])
    latency.set_xlabel("percentile")
    latency.set_ylabel("latency ms")
    latency.set_ylim(bottom=0)
    latency.grid(True, alpha=0.3)
    latency.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, format="png")
