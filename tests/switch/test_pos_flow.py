"""End to end through real gRPC and a real PostgreSQL: the pump flow and its response codes.

Every test ends (in the `switch` fixture) with conservation checked in PostgreSQL and the core's
memory compared with what PostgreSQL committed.
"""

from __future__ import annotations

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, common_pb2, pos_pb2

from loadtest.provision import Operator
from loadtest.terminal import Terminal
from switch import pinblock
from tests.switch.conftest import OPERATOR_TOKEN


async def balance_of(channel, account_id):
    account = await Operator(channel, OPERATOR_TOKEN).call("GetAccount", admin_pb2.GetAccountRequest(account_id=account_id))
    return account.balance, account.held


async def admin(channel, method, request):
    return await Operator(channel, OPERATOR_TOKEN).call(method, request)


async def test_authorize_then_complete_for_less(channel, network, terminal):
    card = network.cards[0]
    auth = (await terminal.authorize(card.pan, card.pin, 30_000, "95")).response
    assert auth.response_code == "00" and auth.approved_amount == 30_000
    assert auth.available_balance == 70_000 and auth.hold_id
    assert await balance_of(channel, card.account_id) == (100_000, 30_000)
    done = (await terminal.complete(auth.hold_id, 25_938, 33_000, "95", 786)).response
    assert done.response_code == "00" and done.settled_amount == 25_938
    assert done.balance == 74_062
    assert await balance_of(channel, card.account_id) == (74_062, 0)
    again = (await terminal.complete(auth.hold_id, 25_938, 33_000, "95", 786)).response
    assert again.response_code == "00" and again.transaction_id == done.transaction_id
    other = (await terminal.complete(auth.hold_id, 20_000, 0, "95", 0)).response
    assert other.response_code == "94"
    assert await balance_of(channel, card.account_id) == (74_062, 0)


async def test_complete_never_more_than_held(channel, network, terminal):
    card = network.cards[0]
    auth = (await terminal.authorize(card.pan, card.pin, 10_000, "92")).response
    assert (await terminal.complete(auth.hold_id, 10_001, 0, "92", 0)).response.response_code == "13"
    assert (await terminal.complete("999999999", 100, 0, "92", 0)).response.response_code == "25"
    assert await balance_of(channel, card.account_id) == (100_000, 10_000)


async def test_partial_approval(channel, network, terminal):
    card = network.cards[1]
    auth = (await terminal.authorize(card.pan, card.pin, 150_000, "92", partial_allowed=True)).response
    assert auth.response_code == "10" and auth.approved_amount == 100_000
    declined = (await terminal.authorize(card.pan, card.pin, 5_000, "92")).response
    assert declined.response_code == "51"
    assert await balance_of(channel, card.account_id) == (100_000, 100_000)


async def test_cancel_releases_the_hold(channel, network, terminal):
    card = network.cards[0]
    auth = (await terminal.authorize(card.pan, card.pin, 40_000, "98")).response
    assert (await terminal.cancel(auth.hold_id)).response.response_code == "00"
    assert await balance_of(channel, card.account_id) == (100_000, 0)
    assert (await terminal.complete(auth.hold_id, 100, 0, "98", 0)).response.response_code == "12"


async def test_reversal_after_its_original_voids_the_hold(channel, network, terminal):
    card = network.cards[0]
    sent = await terminal.authorize(card.pan, card.pin, 40_000, "92")
    assert sent.response.response_code == "00"
    assert (await terminal.reverse(sent.stan)).response.response_code == "00"
    assert await balance_of(channel, card.account_id) == (100_000, 0)
    assert (await terminal.reverse(sent.stan)).response.response_code == "00"  # repeated reversal: no change
    assert await balance_of(channel, card.account_id) == (100_000, 0)


async def test_reversal_before_its_original_wins(channel, network, terminal):
    card = network.cards[0]
    stan = terminal.next_stan()
    assert (await terminal.reverse(stan)).response.response_code == "00"
    late = (await terminal.authorize(card.pan, card.pin, 40_000, "92", stan=stan)).response
    assert late.response_code == "94"
    assert await balance_of(channel, card.account_id) == (100_000, 0)


async def test_purchase_refund_and_reversed_purchase(channel, network, terminal):
    card = network.cards[2]
    sale = (await terminal.purchase(card.pan, card.pin, 12_345, "0", 17_340)).response
    assert sale.response_code == "00" and sale.balance == 87_655
    assert (await terminal.refund(sale.transaction_id, 12_346)).response.response_code == "13"
    refund = (await terminal.refund(sale.transaction_id, 2_345)).response
    assert refund.response_code == "00" and refund.balance == 90_000
    second = await terminal.purchase(card.pan, card.pin, 10_000, "92", 13_550)
    assert (await terminal.reverse(second.stan)).response.response_code == "00"
    assert await balance_of(channel, card.account_id) == (90_000, 0)
    assert (await terminal.refund(second.response.transaction_id, 1)).response.response_code == "13"


async def test_balance_inquiry_and_pin_lockout(channel, network, terminal):
    card = network.cards[3]
    ok = (await terminal.balance_inquiry(card.pan, card.pin)).response
    assert (ok.response_code, ok.balance, ok.available) == ("00", 100_000, 100_000)
    assert "*" in ok.masked_pan and card.pan not in ok.masked_pan
    codes = [(await terminal.authorize(card.pan, "000000", 1_000, "92")).response.response_code for _ in range(3)]
    assert codes == ["55", "55", "75"]
    assert (await terminal.authorize(card.pan, card.pin, 1_000, "92")).response.response_code == "75"
    card_msg = await admin(channel, "GetCard", admin_pb2.GetCardRequest(card_id=card.card_id))
    assert card_msg.pin_locked
    await admin(channel, "ResetPin", admin_pb2.ResetPinRequest(card_id=card.card_id, pin="654321"))
    assert (await terminal.authorize(card.pan, "654321", 1_000, "92")).response.response_code == "00"


async def test_card_states_and_limits(channel, network, terminal):
    lost, frozen, limited, closed = network.cards
    await admin(channel, "SetCardState", admin_pb2.SetCardStateRequest(card_id=lost.card_id, state="lost"))
    await admin(channel, "SetCardState", admin_pb2.SetCardStateRequest(card_id=frozen.card_id, state="frozen"))
    await admin(channel, "SetCardState", admin_pb2.SetCardStateRequest(card_id=closed.card_id, state="closed"))
    assert (await terminal.authorize(lost.pan, lost.pin, 1_000, "92")).response.response_code == "41"
    assert (await terminal.authorize(frozen.pan, frozen.pin, 1_000, "92")).response.response_code == "62"
    assert (await terminal.authorize(closed.pan, closed.pin, 1_000, "92")).response.response_code == "14"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin(channel, "SetCardState", admin_pb2.SetCardStateRequest(card_id=lost.card_id, state="active"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    account = await admin(channel, "CreateAccount", admin_pb2.CreateAccountRequest(kind="fleet", holder_name="车队"))
    await admin(channel, "TopUp", admin_pb2.TopUpRequest(account_id=account.account_id, amount=50_000, reference="t1"))
    capped = await admin(channel, "IssueCard", admin_pb2.IssueCardRequest(
        account_id=account.account_id, pin="4321", per_transaction_limit=20_000, expiry="2099-12"))
    assert (await terminal.authorize(capped.pan, "4321", 20_001, "92")).response.response_code == "61"
    partial = (await terminal.authorize(capped.pan, "4321", 30_000, "92", partial_allowed=True)).response
    assert partial.response_code == "61"  # the card does not allow partial approval: no capping at the limit
    expired = await admin(channel, "IssueCard", admin_pb2.IssueCardRequest(
        account_id=account.account_id, pin="4321", expiry="2020-01"))
    assert (await terminal.authorize(expired.pan, "4321", 100, "92")).response.response_code == "54"
    unknown_pan = "9000019999999999999"
    assert (await terminal.authorize(unknown_pan, "1234", 100, "92")).response.response_code == "14"
    assert limited.pan != unknown_pan


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"amount": -5}, "13"),
        ({"amount": 0}, "13"),
        ({"amount": 2**63 - 1}, "13"),
        ({"product_code": "93"}, "12"),
        ({"product_code": "x" * 10_000}, "12"),
        ({"pin_block": b"\x01" * 16}, "55"),
        ({"pin_block": b""}, "55"),
    ],
)
async def test_bad_input_gets_a_response_code_and_moves_nothing(channel, network, terminal, fields, code):
    card = network.cards[0]
    request = pos_pb2.AuthorizeRequest(pan=card.pan, amount=1_000, product_code="92",
                                       pin_block=pinblock.encrypt_pin_block(terminal.session.pin_key, card.pin, card.pan))
    for name, value in fields.items():
        setattr(request, name, value)
    sent = await terminal.send("Authorize", request)
    assert sent.response.response_code == code
    assert await balance_of(channel, card.account_id) == (100_000, 0)


@pytest.mark.parametrize(
    "fields",
    [{"pan": ""}, {"pan": "9" * 5_000}, {"pan": "90000112345678901２"}, {"pin_block": b"short"},
     {"pin_block": b"\x00" * 4_096}],
)
async def test_malformed_requests_are_invalid_argument_and_move_nothing(channel, network, terminal, fields):
    card = network.cards[0]
    request = pos_pb2.AuthorizeRequest(pan=card.pan, amount=1_000, product_code="92")
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await terminal.send("Authorize", request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await balance_of(channel, card.account_id) == (100_000, 0)


async def test_garbage_bytes_are_invalid_argument(channel, network, terminal):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await terminal.send_bytes("Authorize", b"\xff\xff\xff\xff garbage")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in refused.value.details()
    stanless = pos_pb2.AuthorizeRequest(header=common_pb2.TerminalHeader(
        terminal_id=terminal.terminal_id, stan=0, terminal_time_ms=terminal.now_ms()))
    with pytest.raises(grpc.aio.AioRpcError) as zero:
        await terminal.send_bytes("Authorize", stanless.SerializeToString())
    assert zero.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_retransmission_returns_the_original_and_moves_no_money(channel, network, terminal):
    card = network.cards[0]
    sent = await terminal.authorize(card.pan, card.pin, 20_000, "92")
    again = await terminal.send_bytes("Authorize", sent.request_bytes)
    assert again == sent.response
    assert await balance_of(channel, card.account_id) == (100_000, 20_000)
    other = pos_pb2.AuthorizeRequest.FromString(sent.request_bytes)
    other.amount = 20_001
    duplicate = await terminal.send_bytes("Authorize", other.SerializeToString())
    assert duplicate.response_code == "94"
    assert await balance_of(channel, card.account_id) == (100_000, 20_000)


async def test_security_refusals_come_before_business_logic(channel, network, terminal):
    card = network.cards[0]
    request = pos_pb2.AuthorizeRequest(pan=card.pan, amount=1_000, product_code="92")
    stan, body = terminal.prepare(request)
    for mac, token in (("00" * 32, "bad-mac"), ("not hex", "bad-mac")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await terminal.send_bytes("Authorize", body, mac_hex=mac)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details().startswith(token)
    with pytest.raises(grpc.aio.AioRpcError) as no_md:
        await terminal.send_bytes("Authorize", body, metadata=())
    assert no_md.value.details().startswith("missing-metadata")
    # The refused calls did not use the STAN: the same request now goes through.
    assert (await terminal.send_bytes("Authorize", body)).response_code == "55"
    skewed = pos_pb2.AuthorizeRequest(pan=card.pan, amount=1_000, product_code="92")
    skewed.header.terminal_time_ms = terminal.now_ms() - 301_000
    with pytest.raises(grpc.aio.AioRpcError) as skew:
        await terminal.send("Authorize", skewed)
    assert skew.value.details().startswith("clock-skew")
    assert any(k == "fs-host-time-ms" for k, _ in skew.value.trailing_metadata())


async def test_unknown_terminal_and_replaced_session(channel, network, terminal):
    spec = network.terminals[1]
    stranger = Terminal(channel, "ST-9999-T001", spec.private_key_hex, spec.public_key_hex)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stranger.sign_on()
    assert unknown.value.details().startswith("unknown-terminal")
    impostor = Terminal(channel, spec.terminal_id, network.terminals[0].private_key_hex, spec.public_key_hex)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await impostor.sign_on()
    assert bad.value.details().startswith("bad-signature")
    old_session = terminal.session
    await terminal.sign_on()
    card = network.cards[0]
    request = pos_pb2.BalanceInquiryRequest(pan=card.pan)
    _, body = terminal.prepare(request)
    from loadtest.terminal import TerminalSession  # the old keys no longer work
    terminal._session = TerminalSession(old_session.session_id, old_session.mac_key, old_session.pin_key,
                                        old_session.expires_at_ms, old_session.station_id, old_session.host_time_ms)
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await terminal.send_bytes("BalanceInquiry", body)
    assert stale.value.details().startswith("unknown-session")


async def test_expired_session(channel, switch, network, terminal):
    card = network.cards[0]
    switch.app.clock_ms = lambda real=switch.app.clock_ms: real() + 25 * 3600 * 1000
    terminal._clock_offset_ms += 25 * 3600 * 1000
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await terminal.balance_inquiry(card.pan, card.pin)
    assert expired.value.details().startswith("session-expired")


async def test_operator_api_needs_the_token(channel, network):
    from fuelswitch.v1 import admin_pb2_grpc

    stub = admin_pb2_grpc.CardAdminStub(channel)
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", OPERATOR_TOKEN),)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetAccount(admin_pb2.GetAccountRequest(account_id=network.cards[0].account_id),
                                  metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_list_transactions_newest_first_in_pages(channel, network, terminal):
    card = network.cards[0]
    for amount in (1_000, 2_000, 3_000):
        await terminal.purchase(card.pan, card.pin, amount, "92", 0)
    first = await admin(channel, "ListTransactions", admin_pb2.ListTransactionsRequest(account_id=card.account_id, limit=2))
    rest = await admin(channel, "ListTransactions", admin_pb2.ListTransactionsRequest(
        account_id=card.account_id, limit=2, page_token=first.next_page_token))
    kinds = [(t.kind, t.amount) for t in [*first.transactions, *rest.transactions]]
    assert kinds == [("purchase", 3_000), ("purchase", 2_000), ("purchase", 1_000), ("topup", 100_000)]
    assert rest.next_page_token == ""
    assert all(t.masked_pan == "" or card.pan not in t.masked_pan for t in first.transactions)
