"""Benchmarks report ratios against a baseline measured in the same run (the machine is noisy).

Each benchmark records its throughput through `tests.bench.results`; at the end of the session a
one-screen table prints every group with its ratio to the group's baseline.
"""

from __future__ import annotations

import pytest

from tests.bench.results import BASELINES, NOTES, RESULTS, record


@pytest.fixture
def throughput(benchmark):
    """Run `fn` (which performs `ops` operations) under pytest-benchmark; record ops per second."""

    def run(group: str, name: str, fn, ops: int, *, baseline: bool = False, rounds: int = 5, setup=None):
        benchmark.group = group
        benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
        per_s = ops / benchmark.stats.stats.median
        benchmark.extra_info["ops_per_s"] = per_s
        record(group, name, per_s, baseline=baseline)
        return per_s

    return run


def pytest_terminal_summary(terminalreporter):
    if not RESULTS and not NOTES:
        return
    tr = terminalreporter
    tr.section("fuelswitch comparison (ratios to the baseline measured in this run)")
    tr.write_line(f"{'group':<38} {'subject':<18} {'per second':>14} {'ratio':>8}")
    for group, rows in RESULTS.items():
        base = rows.get(BASELINES.get(group, ""), 0.0)
        for name, per_s in rows.items():
            ratio = f"{per_s / base:.1f}x" if base else ""
            tr.write_line(f"{group:<38} {name:<18} {per_s:>14,.0f} {ratio:>8}")
    for line in NOTES:
        tr.write_line(line)
