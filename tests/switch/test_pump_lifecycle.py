"""The pump lifecycle around a hold's deadline: expiry exactly at the deadline, completion after it as
an advice, reversal of a completion. The host's clock is moved by the test."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from fuelswitch.v1 import admin_pb2

from loadtest.provision import Operator, provision
from loadtest.terminal import Terminal
from switch import app as app_module
from switch.app import wall_clock_ms
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database

HOLD_TTL_MS = 60_000


class MovableClock:
    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return wall_clock_ms() + self.offset_ms


@pytest.fixture
async def lifecycle(switch_config):
    clock = MovableClock()
    running = await start_switch(dataclasses.replace(switch_config, hold_ttl_s=HOLD_TTL_MS // 1000), clock)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=50_000)
        spec = network.terminals[0]
        terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
        await terminal.sign_on()
        yield running, clock, channel, network.cards[0], terminal
    await assert_memory_equals_database(running)
    await running.stop(1.0)


async def _account(channel, card):
    return await Operator(channel, OPERATOR_TOKEN).call("GetAccount", admin_pb2.GetAccountRequest(
        account_id=card.account_id))


async def test_a_hold_expires_at_its_deadline_not_before(lifecycle):
    running, clock, channel, card, terminal = lifecycle
    hold = (await terminal.authorize(card.pan, card.pin, 20_000, "92")).response
    clock.offset_ms = hold.expires_at_ms - wall_clock_ms() - 50  # just before the deadline
    assert await running.app.sweep_expired() == 0
    assert (await _account(channel, card)).held == 20_000
    clock.offset_ms = hold.expires_at_ms - wall_clock_ms()  # at the deadline
    assert await running.app.sweep_expired() == 1
    await running.app.writer.submit([])
    assert (await _account(channel, card)).held == 0


async def test_the_sweep_releases_many_due_holds_in_bounded_steps(lifecycle, monkeypatch):
    running, clock, channel, card, terminal = lifecycle
    monkeypatch.setattr(app_module, "EXPIRY_BATCH", 3)  # one step releases at most 3
    holds = [(await terminal.authorize(card.pan, card.pin, 1_000, "92")).response for _ in range(7)]
    clock.offset_ms = max(h.expires_at_ms for h in holds) - wall_clock_ms()
    assert await running.app.sweep_expired() == 7  # 3 + 3 + 1: the short step ends the sweep
    await running.app.writer.submit([])
    assert (await _account(channel, card)).held == 0


async def test_a_completion_after_expiry_is_posted_as_an_advice_and_flagged(lifecycle):
    running, clock, channel, card, terminal = lifecycle
    hold = (await terminal.authorize(card.pan, card.pin, 20_000, "92")).response
    clock.offset_ms = HOLD_TTL_MS + 1_000
    await running.app.sweep_expired()
    too_much = (await terminal.complete(hold.hold_id, 20_001, 0, "92", 0)).response
    assert too_much.response_code == "13"  # never more than the hold reserved
    late = await terminal.complete(hold.hold_id, 18_500, 0, "92", 0)
    assert late.response.response_code == "00" and "advice" in late.response.message
    assert late.response.balance == 50_000 - 18_500
    again = await terminal.send_bytes("Complete", late.request_bytes)  # a retransmission: the same answer
    assert again == late.response
    repeat = (await terminal.complete(hold.hold_id, 18_500, 0, "92", 0)).response  # a new STAN, same completion
    assert (repeat.response_code, repeat.transaction_id) == ("00", late.response.transaction_id)
    assert (await _account(channel, card)).balance == 50_000 - 18_500  # posted once
    async with running.pool.acquire() as conn:
        review = await conn.fetchval("SELECT review FROM transactions WHERE transaction_id = $1",
                                     int(late.response.transaction_id))
    assert review == "completed after the hold expired"


async def test_a_completion_can_be_reversed_once(lifecycle):
    running, clock, channel, card, terminal = lifecycle
    hold = (await terminal.authorize(card.pan, card.pin, 20_000, "92")).response
    done = await terminal.complete(hold.hold_id, 12_000, 0, "92", 0)
    assert (await _account(channel, card)).balance == 38_000
    assert (await terminal.reverse(done.stan)).response.response_code == "00"
    assert (await _account(channel, card)).balance == 50_000  # the posted amount came back
    assert (await terminal.reverse(done.stan)).response.message == "already reversed"
    assert (await _account(channel, card)).balance == 50_000
