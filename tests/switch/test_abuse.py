"""Overload and abuse: per-terminal rate limits, bounded queues, suspension after repeated bad MACs,
and an operator's revocation ending a session at once."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, pos_pb2

from loadtest.provision import Operator, provision
from loadtest.terminal import Terminal
from switch.abuse import FailureCounter, TokenBuckets
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database


def test_token_bucket_refills_continuously_up_to_burst():
    buckets = TokenBuckets(rate_per_s=10, burst=3)
    assert [buckets.take("t", 0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("t", 50) is False  # half a token
    assert buckets.take("t", 100) is True  # one token after 100 ms at 10/s
    assert buckets.take("other", 100) is True  # buckets are per terminal
    assert [buckets.take("t", 10_000) for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_failure_counter_uses_a_sliding_window():
    counter = FailureCounter(limit=3, window_ms=1_000)
    assert [counter.record("t", ms) for ms in (0, 10, 1_005)] == [False, False, False]  # the first fell out
    assert counter.record("t", 1_006) is True
    counter.clear("t")
    assert counter.record("t", 1_007) is False


async def _signed_on(channel, spec) -> Terminal:
    terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
    await terminal.sign_on()
    return terminal


async def test_a_terminal_over_its_rate_gets_resource_exhausted_and_its_stan_stays_free(switch_config):
    running = await start_switch(dataclasses.replace(switch_config, terminal_requests_per_s=0.001, terminal_burst=3))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            network = await provision(channel, OPERATOR_TOKEN, terminals=2, cards=1, balance_fen=10_000)
            card = network.cards[0]
            busy = await _signed_on(channel, network.terminals[0])
            for _ in range(3):
                assert (await busy.balance_inquiry(card.pan, card.pin)).response.response_code == "00"
            request = pos_pb2.BalanceInquiryRequest(pan=card.pan, pin_block=busy.pin_block(card.pin, card.pan))
            stan, body = busy.prepare(request)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await busy.send_bytes("BalanceInquiry", body)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (busy.terminal_id, stan) not in running.app.state.messages  # nothing decided
            quiet = await _signed_on(channel, network.terminals[1])  # other terminals are not affected
            assert (await quiet.balance_inquiry(card.pan, card.pin)).response.response_code == "00"
    finally:
        await running.stop(1.0)


async def test_a_full_journal_queue_refuses_new_work_before_deciding(switch, channel, network, terminal):
    card = network.cards[0]
    switch.app.config = dataclasses.replace(switch.app.config, journal_queue_max=0)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await terminal.authorize(card.pan, card.pin, 1_000, "92")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert switch.app.state.ledger.balance(int(card.account_id)) == (100_000, 0)


async def test_repeated_bad_macs_suspend_the_terminal_until_an_operator_reactivates_it(switch, channel, network,
                                                                                     terminal, caplog):
    card = network.cards[0]
    limit = switch.app.config.abuse.mac_failures_max
    for attempt in range(limit):
        stan, body = terminal.prepare(pos_pb2.BalanceInquiryRequest(pan=card.pan))
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await terminal.send_bytes("BalanceInquiry", body, mac_hex="00" * 32)
        assert bad.value.code() == grpc.StatusCode.UNAUTHENTICATED
        expected = "suspended" if attempt == limit - 1 else "active"
        assert switch.app.state.terminals[terminal.terminal_id].state == expected
    assert any("suspended" in r.message and terminal.terminal_id in r.message for r in caplog.records)

    with pytest.raises(grpc.aio.AioRpcError) as ended:  # its session died with the suspension
        await terminal.balance_inquiry(card.pan, card.pin)
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError):  # and it cannot sign on again by itself
        await terminal.sign_on()
    async with switch.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT state, state_reason FROM terminals WHERE terminal_id = $1",
                                  terminal.terminal_id)
    assert row["state"] == "suspended" and "MAC failures" in row["state_reason"]

    operator = Operator(channel, OPERATOR_TOKEN)
    restored = await operator.call("SetTerminalState", admin_pb2.SetTerminalStateRequest(
        terminal_id=terminal.terminal_id, state="active", reason="firmware fixed"))
    assert (restored.state, restored.state_reason) == ("active", "")
    await terminal.sign_on()
    assert (await terminal.balance_inquiry(card.pan, card.pin)).response.response_code == "00"


async def test_revocation_ends_the_session_at_once_and_survives_restart(switch_config):
    running = await start_switch(switch_config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=10_000)
            card, spec = network.cards[0], network.terminals[0]
            terminal = await _signed_on(channel, spec)
            revoked = await Operator(channel, OPERATOR_TOKEN).call("SetTerminalState", admin_pb2.SetTerminalStateRequest(
                terminal_id=spec.terminal_id, state="revoked", reason="stolen"))
            assert (revoked.state, revoked.state_reason) == ("revoked", "stolen")
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await terminal.balance_inquiry(card.pan, card.pin)
            assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Registering the same terminal again does not lift the revocation.
            again = await Operator(channel, OPERATOR_TOKEN).call("RegisterTerminal", admin_pb2.RegisterTerminalRequest(
                terminal_id=spec.terminal_id, station_id=network.station_id, public_key=spec.public_key_hex))
            assert again.state == "revoked"
            with pytest.raises(grpc.aio.AioRpcError) as bad_state:
                await Operator(channel, OPERATOR_TOKEN).call("SetTerminalState", admin_pb2.SetTerminalStateRequest(
                    terminal_id=spec.terminal_id, state="paused"))
            assert bad_state.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await assert_memory_equals_database(running)
    finally:
        await running.stop(1.0)
    restarted = await start_switch(switch_config)
    try:
        assert restarted.app.state.terminals[spec.terminal_id].state == "revoked"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _signed_on(channel, spec)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await restarted.stop(1.0)
