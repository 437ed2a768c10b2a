"""The switch against the naive baseline and against the ceiling of Python gRPC, in one run, same client.

The naive baseline and the switch run on one durable embedded PostgreSQL (loadtest/compare.py); the
ceiling is loadtest/echo_server.py, a bare grpc.aio server that answers canned approvals, driven by the
same terminal client with the same in-flight count, right after.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from loadtest.compare import CompareOptions, _server, compare
from loadtest.echo_server import echo_load
from loadtest.terminal import luhn_check_digit
from tests.bench.results import note, record

GROUP = "POS Authorize+Complete, 64 in flight"
CEILING_GROUP = "POS A+C vs bare gRPC server"


def test_authorize_complete_against_naive_baseline_and_grpc_ceiling(tmp_path):
    options = CompareOptions(duration_s=float(os.environ.get("FUELSWITCH_BENCH_S", 10)), in_flight=64)
    result = asyncio.run(compare(options, tmp_path))
    echo_rpc_per_s = asyncio.run(_echo(options))
    result["echo"] = {"rpc_per_s": echo_rpc_per_s}
    (tmp_path / "compare.json").write_text(json.dumps(result, indent=1))
    switch, naive = result["switch"], result["baseline"]
    for name, figures in (("switch", switch), ("naive baseline", naive)):
        assert figures["errors"] == 0 and figures["mismatches"] == 0, figures["problems"]
        record(GROUP, name, figures["rpc_per_s"], baseline=name != "switch")
        note(f"{name}: p50 {figures['latency_ms']['p50']:.1f} ms, p99 {figures['latency_ms']['p99']:.1f} ms, "
             f"{figures['pairs_per_s']:,.0f} pairs/s")
    record(CEILING_GROUP, "bare grpc.aio (canned)", echo_rpc_per_s, baseline=True)
    record(CEILING_GROUP, "switch", switch["rpc_per_s"])


async def _echo(options: CompareOptions) -> float:
    root = Path.cwd()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "proto")])}
    body = "900001" + "0" * 11 + "1"
    pan = body + luhn_check_digit(body)
    with _server([sys.executable, "-m", "loadtest.echo_server"], "echo server listening on", env) as address:
        return await echo_load(address, [f"ECHO{n:04d}" for n in range(options.terminals)], [(pan, "123456")],
                               options.duration_s, options.in_flight)
