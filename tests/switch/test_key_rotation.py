"""Rotating data keys mid-traffic fails nothing: old ciphertexts, PINs and chain links stay valid."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import grpc
from fuelswitch.v1 import admin_pb2

from loadtest.provision import Operator, provision
from loadtest.terminal import Terminal
from loadtest.workload import run_pos_load
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database


async def _commits_past(running, count: int) -> None:
    """Wait for the journal writer to commit `count` more batches (traffic is flowing)."""
    target = running.app.writer.stats.commits + count
    while running.app.writer.stats.commits < target:
        await asyncio.sleep(0.005)  # polling a condition, not a stand-in for it


async def test_rotation_mid_traffic(switch_config):
    running = await start_switch(switch_config)
    try:
        target = f"127.0.0.1:{running.port}"
        async with grpc.aio.insecure_channel(target) as channel:
            network = await provision(channel, OPERATOR_TOKEN, terminals=4, cards=16, balance_fen=10_000_000)

        async def rotate_twice() -> None:
            await _commits_past(running, 30)
            assert await running.app.rotate_keys() == {"pan": 2, "pvk": 2, "journal": 2}
            await _commits_past(running, 30)
            # The command an operator runs beside the switch, on its database:
            # (subprocess.run in a thread: a fork from uvloop's child watcher crashes beside gRPC's threads)
            cli = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "switch.cli", "keys", "rotate", "--dsn", switch_config.dsn,
                "--data-dir", str(switch_config.data_dir)], capture_output=True, text=True, timeout=120)
            assert cli.returncode == 0 and "journal v3" in cli.stdout, cli.stderr
            assert await running.app.refresh_keyring()  # what the periodic refresh does within seconds

        load, _ = await asyncio.gather(
            run_pos_load(target, network.terminals, network.cards, duration_s=3.0, in_flight=16, seed=7),
            rotate_twice(),
        )
        assert (load.errors, load.mismatches) == (0, 0), load.problems
        assert load.pairs > 100
        await assert_memory_equals_database(running)  # includes the chain walk across key versions
        async with running.pool.acquire() as conn:
            versions = {r["key_version"] for r in await conn.fetch("SELECT DISTINCT key_version FROM journal")}
            assert versions == {1, 2, 3}
            pvk_versions = {r["pvk_version"] for r in await conn.fetch("SELECT pvk_version FROM cards")}
            assert pvk_versions == {3}  # every card used after the rotation had its PIN check value renewed

        async with grpc.aio.insecure_channel(target) as channel:
            account = await Operator(channel, OPERATOR_TOKEN).call(
                "CreateAccount", admin_pb2.CreateAccountRequest(kind="personal", holder_name="after rotation"))
            new_card = await Operator(channel, OPERATOR_TOKEN).call(
                "IssueCard", admin_pb2.IssueCardRequest(account_id=account.account_id, pin="2468"))
        card = running.app.state.cards[int(new_card.card_id)]
        assert int.from_bytes(card.pan_enc[:2], "big") == 3 and card.pvk_version == 3
    finally:
        await running.stop(1.0)

    # After a restart every version is still readable: old cards and the new one both authorize.
    again = await start_switch(switch_config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{again.port}") as channel:
            spec = network.terminals[0]
            terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
            await terminal.sign_on()
            for pan, pin in ((network.cards[0].pan, network.cards[0].pin), (new_card.pan, "2468")):
                answer = (await terminal.balance_inquiry(pan, pin)).response
                assert answer.response_code == "00", answer
        await assert_memory_equals_database(again)
    finally:
        await again.stop(1.0)
    conn = await asyncpg.connect(switch_config.dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM data_keys")
        assert stored == 4 + 3 + 3  # four purposes at v1, three rotatable ones twice
    finally:
        await conn.close()
