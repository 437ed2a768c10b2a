"""The switch against the naive baseline, in one run, same client, same embedded PostgreSQL (durable)."""

from __future__ import annotations

import asyncio
import json
import os

from loadtest.compare import CompareOptions, compare
from tests.bench.results import note, record


def test_authorize_complete_against_naive_baseline(tmp_path):
    options = CompareOptions(duration_s=float(os.environ.get("FUELSWITCH_BENCH_S", 10)), in_flight=64)
    result = asyncio.run(compare(options, tmp_path))
    (tmp_path / "compare.json").write_text(json.dumps(result, indent=1))
    switch, naive = result["switch"], result["baseline"]
    for name, figures in (("switch", switch), ("naive baseline", naive)):
        assert figures["errors"] == 0 and figures["mismatches"] == 0, figures["problems"]
        record("POS Authorize+Complete, 64 in flight", name, figures["rpc_per_s"], baseline=name != "switch")
        note(f"{name}: p50 {figures['latency_ms']['p50']:.1f} ms, p99 {figures['latency_ms']['p99']:.1f} ms, "
             f"{figures['pairs_per_s']:,.0f} pairs/s")
