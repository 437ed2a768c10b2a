"""Tamper evidence: `fuelswitch verify` names each edited, deleted or moved journal row.

The journal is made by real traffic through gRPC, the switch is stopped, rows are altered directly
in PostgreSQL, and verify must point at exactly the altered row.
"""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import grpc
import pytest

from core import Kind
from loadtest.provision import provision
from loadtest.terminal import Terminal
from switch.keyring import Keyring, load_master_key, read_keyring
from switch.server import start_switch
from switch.verify import verify
from tests.switch.conftest import OPERATOR_TOKEN


@pytest.fixture
async def journal(switch_config) -> tuple[str, Keyring]:
    """A stopped switch's database with a chained journal of real traffic; returns (dsn, keys)."""
    running = await start_switch(switch_config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=3, balance_fen=100_000)
            spec = network.terminals[0]
            terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
            await terminal.sign_on()
            for card in network.cards:
                for amount in (10_000, 7_000):
                    hold = (await terminal.authorize(card.pan, card.pin, amount, "92")).response
                    await terminal.complete(hold.hold_id, amount - 1_234, 0, "92", 0)
    finally:
        await running.stop(1.0)
    master = load_master_key(switch_config.data_dir, create=False)
    conn = await asyncpg.connect(switch_config.dsn)
    try:
        keys = await read_keyring(conn, master)
    finally:
        await conn.close()
    return switch_config.dsn, keys


async def _verify(dsn: str, keys: Keyring):
    conn = await asyncpg.connect(dsn)
    try:
        return await verify(conn, keys)
    finally:
        await conn.close()


async def _sql(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _settle_seq(dsn: str, nth: int = 0) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        seqs = await conn.fetch(f"SELECT seq FROM journal WHERE kind = {int(Kind.SETTLE)} ORDER BY seq")
        return int(seqs[nth]["seq"])
    finally:
        await conn.close()


async def test_untouched_journal_verifies(journal):
    report = await _verify(*journal)
    assert report.ok, report.problems
    assert report.rows == 18 and report.key_versions == {1}  # 3 opens, 3 top-ups, 6 holds, 6 settles


async def test_an_edited_amount_is_named(journal):
    dsn, keys = journal
    seq = await _settle_seq(dsn)
    await _sql(dsn, f"UPDATE journal SET amounts[1] = amounts[1] - 100 WHERE seq = {seq}")
    report = await _verify(dsn, keys)
    assert [(p.seq, p.kind) for p in report.problems] == [(seq, "edited")]
    assert report.conservation is not None and not report.conservation.ok  # the balance no longer adds up


async def test_an_edited_row_with_its_chain_recomputed_without_the_key_is_named(journal):
    dsn, keys = journal
    seq = await _settle_seq(dsn)
    # An attacker without the journal key can only guess: a plain SM3 over the new content.
    await _sql(dsn, f"UPDATE journal SET value = value + 1, chain = sm3_guess.h FROM (SELECT "
                    f"sha256(convert_to('x', 'UTF8')) AS h) sm3_guess WHERE seq = {seq}")
    report = await _verify(dsn, keys)
    assert (seq, "edited") in [(p.seq, p.kind) for p in report.problems]


async def test_a_deleted_row_is_named(journal):
    dsn, keys = journal
    seq = await _settle_seq(dsn)
    await _sql(dsn, f"DELETE FROM journal WHERE seq = {seq}")
    report = await _verify(dsn, keys)
    assert [(p.seq, p.kind) for p in report.problems] == [(seq + 1, "deleted")]
    assert f"rows {seq}..{seq}" in report.problems[0].detail


async def test_a_deleted_row_hidden_by_renumbering_is_named(journal):
    dsn, keys = journal
    seq = await _settle_seq(dsn)
    await _sql(dsn, f"DELETE FROM journal WHERE seq = {seq}",
               f"UPDATE journal SET seq = seq - 1 WHERE seq > {seq}")
    report = await _verify(dsn, keys)
    assert [(p.seq, p.kind) for p in report.problems] == [(seq, "deleted")]


async def test_reordered_rows_are_named(journal):
    dsn, keys = journal
    first, second = await _settle_seq(dsn, 0), await _settle_seq(dsn, 2)
    await _sql(dsn, f"UPDATE journal SET seq = -1 WHERE seq = {first}",
               f"UPDATE journal SET seq = {first} WHERE seq = {second}",
               f"UPDATE journal SET seq = {second} WHERE seq = -1")
    report = await _verify(dsn, keys)
    problems = [(p.seq, p.kind) for p in report.problems]
    assert problems[0] == (first, "moved")
    assert f"seq {second - 1}" in report.problems[0].detail  # where it was really written
    assert (second, "moved") in problems
    assert all(kind == "moved" for _, kind in problems)


async def test_verify_command_exit_status_and_report(journal, switch_config):
    dsn, _ = journal
    command = [sys.executable, "-m", "switch.cli", "verify", "--dsn", dsn, "--data-dir", str(switch_config.data_dir)]
    ok = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "chain: intact" in ok.stdout and ok.stdout.strip().endswith("OK")
    seq = await _settle_seq(dsn, 1)
    await _sql(dsn, f"UPDATE journal SET status = 5 WHERE seq = {seq}")
    bad = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert f"seq {seq}: edited" in bad.stdout and bad.stdout.strip().endswith("FAILED")
    no_key = subprocess.run([*command[:-1], str(switch_config.data_dir / "elsewhere")], capture_output=True,
                            text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert no_key.returncode == 2 and "no master key" in no_key.stderr
