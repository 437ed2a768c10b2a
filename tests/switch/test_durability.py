"""Answers are durable: a restart keeps every balance, hold and answer; a failed commit leaves no trace."""

from __future__ import annotations

import asyncio

import grpc
from fuelswitch.v1 import admin_pb2

from loadtest.provision import Operator, provision
from loadtest.terminal import Terminal
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database


async def test_restart_keeps_balances_open_holds_and_answers(switch_config):
    first = await start_switch(switch_config)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=2, balance_fen=50_000)
        spec, card = network.terminals[0], network.cards[0]
        terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
        await terminal.sign_on()
        open_hold = await terminal.authorize(card.pan, card.pin, 20_000, "92")
        settled = (await terminal.authorize(card.pan, card.pin, 10_000, "95")).response
        await terminal.complete(settled.hold_id, 8_000, 0, "95", 0)
    await first.stop(1.0)

    second = await start_switch(switch_config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            account = await Operator(channel, OPERATOR_TOKEN).call(
                "GetAccount", admin_pb2.GetAccountRequest(account_id=card.account_id))
            assert (account.balance, account.held) == (42_000, 20_000)
            terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
            await terminal.sign_on()  # sessions do not survive a restart
            replay = await terminal.send_bytes("Authorize", open_hold.request_bytes)
            assert replay == open_hold.response  # the retransmission gets the original answer
            done = (await terminal.complete(open_hold.response.hold_id, 20_000, 0, "92", 0)).response
            assert (done.response_code, done.balance) == ("00", 22_000)
        await assert_memory_equals_database(second)
    finally:
        await second.stop(1.0)


async def test_failed_commit_answers_91_and_memory_returns_to_committed_state(switch, channel, network, terminal):
    card = network.cards[0]
    writer = switch.app.writer
    real_write = writer._write
    failures = 0

    async def failing_write(entries, batch):
        nonlocal failures
        failures += 1
        raise ConnectionResetError("simulated loss of the database connection")

    writer._write = failing_write
    answer = (await terminal.authorize(card.pan, card.pin, 30_000, "92")).response
    assert answer.response_code == "91"
    assert failures == 1
    writer._write = real_write
    await asyncio.wait_for(switch.app.serving.wait(), 10)
    assert switch.app.state.ledger.balance(int(card.account_id)) == (100_000, 0)
    retried = (await terminal.authorize(card.pan, card.pin, 30_000, "92")).response
    assert retried.response_code == "00"


async def test_concurrent_requests_share_commits(switch, channel, network):
    terminals = []
    for spec in network.terminals:
        t = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
        await t.sign_on()
        terminals.append(t)
    before = switch.app.writer.stats.commits
    calls = [t.balance_inquiry(c.pan, c.pin) for t in terminals for c in network.cards for _ in range(5)]
    answers = await asyncio.gather(*calls)
    assert all(a.response.response_code == "00" for a in answers)
    commits = switch.app.writer.stats.commits - before
    assert 1 <= commits < len(calls)  # group commit: many answers per transaction
