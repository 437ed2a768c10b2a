"""100,000 offline records uploaded while live Authorize+Complete traffic runs, on a durable embedded
PostgreSQL; the switch and the uploading client each in their own process.

Reported: the upload's records/s and seconds (goal: 100,000 in ≤ 5 s), and the live traffic's p99
alone and during the upload, measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import grpc

from loadtest.compare import _server
from loadtest.provision import provision
from loadtest.workload import CardSpec, run_pos_load
from switch.pgembedded import EmbeddedPostgres
from tests.bench.results import note, record

RECORDS = int(os.environ.get("FUELSWITCH_BENCH_OFFLINE_RECORDS", 100_000))
LIVE_S = 6.0
IN_FLIGHT = 16


async def _scenario(work: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(Path.cwd() / "proto")])}
    pg = EmbeddedPostgres(work / "postgres")
    dsn = await asyncio.to_thread(pg.start)
    token = secrets.token_hex(16)
    try:
        serve = [sys.executable, "-m", "switch.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir",
                 str(work / "switch"), "--operator-token", token, "--dsn", dsn, "--log-level", "WARNING"]
        with _server(serve, "fuelswitch listening on", env) as target:
            async with grpc.aio.insecure_channel(target) as channel:
                network = await provision(channel, token, terminals=IN_FLIGHT + 1, cards=4 * IN_FLIGHT + 50,
                                          balance_fen=100_000_000)
            live_terminals, uploader = network.terminals[:IN_FLIGHT], network.terminals[IN_FLIGHT]
            # Each live run on cards of its own: the workload's model starts from the provisioned balance.
            cards = [CardSpec(c.pan, c.pin, c.balance_fen) for c in network.cards]
            first_cards, second_cards = cards[:2 * IN_FLIGHT], cards[2 * IN_FLIGHT:4 * IN_FLIGHT]
            alone = await run_pos_load(target, live_terminals, first_cards, LIVE_S, IN_FLIGHT, seed=11)
            spec = work / "upload.json"
            spec.write_text(json.dumps({"target": target, "terminal": list(uploader), "records": RECORDS, "seed": 5,
                                        "pans": [c.pan for c in network.cards[4 * IN_FLIGHT:]]}))
            client = subprocess.Popen([sys.executable, "-m", "loadtest.offline_upload", str(spec)], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert client.stdin is not None and client.stdout is not None
            assert (await asyncio.to_thread(client.stdout.readline)).strip() == "ready"
            client.stdin.write("go\n")
            client.stdin.flush()
            during = await run_pos_load(target, live_terminals, second_cards, LIVE_S, IN_FLIGHT, seed=12)
            line = await asyncio.to_thread(client.stdout.readline)
            client.wait(60)
            assert line, client.stderr.read() if client.stderr else "the upload client died"
            upload = json.loads(line)
    finally:
        await asyncio.to_thread(pg.stop)
    for result in (alone, during):
        assert (result.errors, result.mismatches) == (0, 0), result.problems
    assert (upload["applied"], upload["rejected"]) == (RECORDS, 0), upload
    return {"seconds": upload["seconds"], "records_per_s": RECORDS / upload["seconds"],
            "p99_alone": alone.latency_ms["p99"], "p99_during": during.latency_ms["p99"],
            "rpc_alone": alone.rpc_per_s, "rpc_during": during.rpc_per_s}


def test_offline_upload_beside_live_traffic(tmp_path):
    figures = asyncio.run(_scenario(tmp_path))
    (tmp_path / "offline.json").write_text(json.dumps(figures, indent=1))
    record("UploadOffline, 100k records", "records/s", figures["records_per_s"])
    record("live Authorize+Complete beside a 100k upload", "alone", figures["rpc_alone"], baseline=True)
    record("live Authorize+Complete beside a 100k upload", "during the upload", figures["rpc_during"])
    note(f"offline: {RECORDS:,} records in {figures['seconds']:.2f} s (goal ≤ 5 s); live p99 "
         f"{figures['p99_alone']:.1f} ms alone, {figures['p99_during']:.1f} ms during the upload")
