"""100,000 offline records uploaded while live Authorize+Complete traffic runs, on a durable embedded
PostgreSQL; the switch and the uploading client each in their own process.

Reported: the UploadOfflineBatch upload's records/s and seconds (goal: 100,000 in ≤ 5 s), the live
traffic's p99 alone and during the upload, and — as the baseline of the same run — the same number
of records through UploadOffline, one record per stream message, with no live traffic.
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
from fuelswitch.v1 import admin_pb2

from loadtest.compare import _server
from loadtest.offline_upload import STREAM_RECORDS_MAX
from loadtest.provision import Operator, provision
from loadtest.workload import CardSpec, run_pos_load
from switch.pgembedded import EmbeddedPostgres
from tests.bench.results import note, record

RECORDS = int(os.environ.get("FUELSWITCH_BENCH_OFFLINE_RECORDS", 100_000))
RECORDS_PER_MESSAGE = 500  # UploadOfflineBatch
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
                # Thousands of sales per card in one upload: far beyond the network's default risk bounds.
                await Operator(channel, token).call("SetStationOfflineLimits", admin_pb2.SetStationOfflineLimitsRequest(
                    station_id=network.station_id, limits=admin_pb2.OfflineLimitSettings(
                        max_count=STREAM_RECORDS_MAX, max_total=10**12, max_per_card_per_day=RECORDS)))
            live_terminals, uploader = network.terminals[:IN_FLIGHT], network.terminals[IN_FLIGHT]
            # Each live run on cards of its own: the workload's model starts from the provisioned balance.
            cards = [CardSpec(c.pan, c.pin, c.balance_fen) for c in network.cards]
            first_cards, second_cards = cards[:2 * IN_FLIGHT], cards[2 * IN_FLIGHT:4 * IN_FLIGHT]
            alone = await run_pos_load(target, live_terminals, first_cards, LIVE_S, IN_FLIGHT, seed=11)
            pans = [c.pan for c in network.cards[4 * IN_FLIGHT:]]
            client = _upload_client(work, env, target, uploader, pans, RECORDS_PER_MESSAGE, first_stan=1_000_000)
            client.start()
            during = await run_pos_load(target, live_terminals, second_cards, LIVE_S, IN_FLIGHT, seed=12)
            batched = await asyncio.to_thread(client.result)
            one_by_one_client = _upload_client(work, env, target, uploader, pans, 1, first_stan=2_000_000)
            one_by_one_client.start()
            one_by_one = await asyncio.to_thread(one_by_one_client.result)
    finally:
        await asyncio.to_thread(pg.stop)
    for result in (alone, during):
        assert (result.errors, result.mismatches) == (0, 0), result.problems
    for upload in (batched, one_by_one):
        assert (upload["applied"], upload["rejected"]) == (RECORDS, 0), upload
    return {"seconds": batched["seconds"], "records_per_s": RECORDS / batched["seconds"],
            "one_by_one_seconds": one_by_one["seconds"], "one_by_one_per_s": RECORDS / one_by_one["seconds"],
            "p99_alone": alone.latency_ms["p99"], "p99_during": during.latency_ms["p99"],
            "rpc_alone": alone.rpc_per_s, "rpc_during": during.rpc_per_s}


class _UploadClient:
    """loadtest.offline_upload in its own process: builds and MACs its records, then uploads on `start`."""

    def __init__(self, spec: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "loadtest.offline_upload", str(spec)], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready", self.process.stderr
        self.stdin, self.stdout = self.process.stdin, self.process.stdout

    def start(self) -> None:
        self.stdin.write("go\n")
        self.stdin.flush()

    def result(self) -> dict[str, float]:
        line = self.stdout.readline()
        self.process.wait(60)
        assert line, self.process.stderr.read() if self.process.stderr else "the upload client died"
        return json.loads(line)


def _upload_client(work: Path, env: dict[str, str], target: str, terminal: tuple[str, str, str], pans: list[str],
                   per_message: int, first_stan: int) -> _UploadClient:
    spec = work / f"upload-{per_message}.json"
    spec.write_text(json.dumps({"target": target, "terminal": list(terminal), "records": RECORDS, "seed": 5,
                                "pans": pans, "per_message": per_message, "first_stan": first_stan}))
    return _UploadClient(spec, env)


def test_offline_upload_beside_live_traffic(tmp_path):
    figures = asyncio.run(_scenario(tmp_path))
    (tmp_path / "offline.json").write_text(json.dumps(figures, indent=1))
    record("offline upload, 100k records", "UploadOffline, 1 record per message", figures["one_by_one_per_s"],
           baseline=True)
    record("offline upload, 100k records", f"UploadOfflineBatch, {RECORDS_PER_MESSAGE} per message, beside live load",
           figures["records_per_s"])
    record("live Authorize+Complete beside a 100k upload", "alone", figures["rpc_alone"], baseline=True)
    record("live Authorize+Complete beside a 100k upload", "during the upload", figures["rpc_during"])
    note(f"offline: {RECORDS:,} records in {figures['seconds']:.2f} s through UploadOfflineBatch beside live load "
         f"(goal ≤ 5 s), {figures['one_by_one_seconds']:.2f} s through UploadOffline alone; live p99 "
         f"{figures['p99_alone']:.1f} ms alone, {figures['p99_during']:.1f} ms during the upload")
