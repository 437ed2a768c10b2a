"""Backup and restore as docs/operations.md describes them: `fuelswitch db backup` (pg_dump, custom
format) of a serving switch, `fuelswitch db restore` into a new database, `fuelswitch verify` on it, and a
switch started on the restored database holds the same balances and the same open holds.

The master key is not in the dump: without it `verify` (and a switch) cannot open the data keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys

import grpc
import pytest
from fuelswitch.v1 import admin_pb2

from loadtest.provision import Operator, provision
from loadtest.terminal import Terminal
from loadtest.workload import CardSpec, run_pos_load
from switch.backup import tool_dsn
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database

LOAD_TERMINALS = 4
IN_FLIGHT = 8


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switch.cli", *args], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ".:proto"})


@pytest.fixture
def new_database(pg_server):
    names: list[str] = []

    def create(name: str) -> str:
        pg_server.psql(f"CREATE DATABASE {name}")
        names.append(name)
        return pg_server.dsn_for(name)

    yield create
    for name in names:
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _balances(running) -> dict[int, tuple[int, int]]:
    ledger = running.app.state.ledger
    return {account_id: ledger.balance(account_id) for account_id in running.app.state.accounts}


async def test_backup_of_a_serving_switch_restores_verifies_and_serves(switch, channel, switch_config, new_database,
                                                                      tmp_path):
    network = await provision(channel, OPERATOR_TOKEN, terminals=LOAD_TERMINALS + 1, cards=2 * IN_FLIGHT + 2,
                              balance_fen=10_000_000)  # ¥100,000: no card runs dry in 3 s
    target = f"127.0.0.1:{switch.port}"
    cards = [CardSpec(c.pan, c.pin, c.balance_fen) for c in network.cards[:2 * IN_FLIGHT]]
    key = tmp_path / "keys" / "master.key"  # the switch's master key, kept apart from the dump

    # 1. Online: a dump taken in the middle of traffic is one consistent snapshot.
    load = asyncio.create_task(run_pos_load(target, network.terminals[:LOAD_TERMINALS], cards, 3.0, IN_FLIGHT,
                                            seed=9))
    await asyncio.sleep(1.5)
    during = tmp_path / "during.dump"
    done = await asyncio.to_thread(_cli, "db", "backup", "--dsn", switch_config.dsn, str(during))
    assert done.returncode == 0, done.stderr
    result = await load
    assert (result.errors, result.mismatches) == (0, 0), result.problems
    assert result.pairs > 0
    mid = new_database("restored_mid")
    done = await asyncio.to_thread(_cli, "db", "restore", "--dsn", mid, str(during))
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(_cli, "verify", "--dsn", mid, "--master-key-file", str(key))
    assert done.returncode == 0, done.stdout + done.stderr

    # 2. Two pre-authorizations left open, then the backup the restored switch starts from.
    spec = network.terminals[LOAD_TERMINALS]
    pump = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex, require_response_mac=True)
    await pump.sign_on()
    holds = []
    for card in network.cards[2 * IN_FLIGHT:]:
        answer = (await pump.authorize(card.pan, card.pin, 30_000, "92")).response
        assert answer.response_code == "00"
        holds.append(answer.hold_id)
    await switch.app.writer.flush()
    backup = tmp_path / "fuelswitch.dump"
    done = await asyncio.to_thread(_cli, "db", "backup", "--dsn", switch_config.dsn, str(backup))
    assert done.returncode == 0, done.stderr
    assert "master key is not in it" in done.stdout
    original = _balances(switch)

    restored_dsn = new_database("restored")
    done = await asyncio.to_thread(_cli, "db", "restore", "--dsn", restored_dsn, str(backup))
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(_cli, "db", "restore", "--dsn", restored_dsn, str(backup))
    assert done.returncode == 1 and "not empty" in done.stderr  # never over a database in use
    elsewhere = tmp_path / "elsewhere"  # a data directory without the master key
    done = await asyncio.to_thread(_cli, "verify", "--dsn", restored_dsn, "--data-dir", str(elsewhere))
    assert done.returncode == 2 and "master key" in done.stderr
    done = await asyncio.to_thread(_cli, "verify", "--dsn", restored_dsn, "--master-key-file", str(key))
    assert done.returncode == 0, done.stdout + done.stderr

    config = dataclasses.replace(switch_config, dsn=restored_dsn, data_dir=tmp_path / "restored-switch",
                                 master_key_file=key)
    restored = await start_switch(config)
    try:
        assert _balances(restored) == original
        assert sum(held for _, held in original.values()) >= 2 * 30_000  # the open holds came along
        async with grpc.aio.insecure_channel(f"127.0.0.1:{restored.port}") as restored_channel:
            operator = Operator(restored_channel, OPERATOR_TOKEN)
            for card in network.cards:
                account = await operator.call("GetAccount", admin_pb2.GetAccountRequest(account_id=card.account_id))
                assert (account.balance, account.held) == original[int(card.account_id)]
            # The restored switch completes a pre-authorization made before the backup.
            terminal = Terminal(restored_channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex,
                                require_response_mac=True)
            await terminal.sign_on()
            done_pair = (await terminal.complete(holds[0], 25_000, 33_875, "92", 738)).response
            assert done_pair.response_code == "00"
        await assert_memory_equals_database(restored)
    finally:
        await restored.stop(0.5)


def test_the_password_stays_off_the_command_line():
    dsn, env = tool_dsn("postgresql://postgres:s%40cret@127.0.0.1:5433/fuelswitch")
    assert dsn == "postgresql://postgres@127.0.0.1:5433/fuelswitch"
    assert env["PGPASSWORD"] == "s@cret"
    assert tool_dsn("host=db user=x")[0] == "host=db user=x"
