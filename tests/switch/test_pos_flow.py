"""End to end through real gRPC and a real PostgreSQL: the pump flow and its response codes."""

from __future__ import annotations

from fuelswitch.v1 import admin_pb2

from loadtest.provision import Operator
from tests.switch.conftest import OPERATOR_TOKEN


async def balance_of(channel, account_id):
    account = await Operator(channel, OPERATOR_TOKEN).call("GetAccount", admin_pb2.GetAccountRequest(account_id=account_id))
    return account.balance, account.held


async def test_authorize_then_complete_for_less(channel, network, terminal):
    card = network.cards[0]
    auth = (await terminal.authorize(card.pan, card.pin, 30_000, "95")).response
    assert auth.response_code == "00" and auth.approved_amount == 30_000
    assert auth.available_balance == 70_000
    assert await balance_of(channel, card.account_id) == (100_000, 30_000)
    done = (await terminal.complete(auth.hold_id, 25_938, 33_000, "95", 786)).response
    assert done.response_code == "00" and done.settled_amount == 25_938
    assert done.balance == 74_062
    assert await balance_of(channel, card.account_id) == (74_062, 0)
