"""The Clearing service through real gRPC on a real PostgreSQL: exactly-once payments and refunds,
reconciliation, resolution and settlement. Every test ends with conservation and the journal chain
checked in PostgreSQL and memory compared with it (the `switch` fixture, or explicitly)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import random

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, clearing_pb2

from loadtest.provision import Operator, provision
from loadtest.terminal import Terminal
from switch import settlement as S
from switch.app import wall_clock_ms
from switch.clearing_client import ClearingClient
from switch.config import ServeConfig
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database

DAY = "2025-03-01"
PAID_AT = S.day_start_ms(dt.date(2025, 3, 1), 10)  # 10:00 UTC+8 on DAY


def pay(txn: str, account: str, amount: int, *, fee: int = 0, channel: str = "wechat", paid_at: int = PAID_AT,
        station: str = "") -> clearing_pb2.SubmitPaymentRequest:
    return clearing_pb2.SubmitPaymentRequest(channel=channel, channel_txn_id=txn, account_id=account, amount=amount,
                                             fee=fee, paid_at_ms=paid_at, merchant_order_id=f"MO-{txn}",
                                             station_id=station)


def refund(txn: str, original: str, amount: int, *, channel: str = "wechat",
           at: int = PAID_AT + 3_600_000) -> clearing_pb2.SubmitRefundRequest:
    return clearing_pb2.SubmitRefundRequest(channel=channel, channel_txn_id=txn, original_channel_txn_id=original,
                                            amount=amount, refunded_at_ms=at)


def line(txn: str, amount: int, *, kind: str = "payment", fee: int = 0, status: str = "success",
         channel: str = "wechat", date: str = DAY, original: str = "") -> clearing_pb2.StatementLine:
    return clearing_pb2.StatementLine(channel=channel, business_date=date, channel_txn_id=txn, kind=kind,
                                      amount=amount, fee=fee, status=status, time_ms=PAID_AT,
                                      original_channel_txn_id=original)


@pytest.fixture
def clearing(channel):
    return ClearingClient(channel, OPERATOR_TOKEN)


async def balance(running, account: str) -> int:
    return running.app.state.ledger.balance(int(account))[0]


async def rows(running, sql: str, *args):
    await running.app.writer.flush()
    async with running.pool.acquire() as conn:
        return await conn.fetch(sql, *args)


# -- authentication and validation ---------------------------------------------------------

async def test_every_call_needs_the_operator_token(switch, channel):
    calls = {
        "SubmitPayment": pay("T1", "1", 100), "SubmitPayments": clearing_pb2.SubmitPaymentsRequest(),
        "SubmitRefund": refund("R1", "T1", 100), "GetSettlement": clearing_pb2.GetSettlementRequest(),
        "ListDiscrepancies": clearing_pb2.ListDiscrepanciesRequest(),
        "ResolveDiscrepancy": clearing_pb2.ResolveDiscrepancyRequest(),
    }
    for bad in (ClearingClient(channel, "wrong-token"), ClearingClient(channel, "")):
        for method, request in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await getattr(bad.stub, method)(request, metadata=bad.metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bad.reconcile([line("T1", 100)])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("change", [
    {"channel": "paypal"}, {"channel_txn_id": ""}, {"channel_txn_id": "x" * 161}, {"amount": 0},
    {"amount": -5}, {"fee": -1}, {"fee": 101}, {"account_id": "abc"}, {"account_id": ""}, {"paid_at_ms": 0},
    {"paid_at_ms": wall_clock_ms() + 3 * 86_400_000}, {"station_id": "s" * 65},
])
async def test_malformed_payments_are_invalid_argument(switch, clearing, network, change):
    request = pay("T-bad", network.cards[0].account_id, 100)
    for name, value in change.items():
        setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clearing.submit_payment(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:  # one malformed item refuses the whole bulk call
        await clearing.submit_payments([pay("T-ok", network.cards[0].account_id, 100), request])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "payments[1]" in err.value.details()
    assert await rows(switch, "SELECT * FROM channel_transactions") == []


async def test_business_refusals_are_rejected_and_not_remembered(switch, clearing, network):
    account = network.cards[0].account_id
    unknown = await clearing.submit_payment(pay("T1", "999999", 100))
    assert (unknown.result, unknown.transaction_id) == ("rejected", "")
    assert "not found" in unknown.message
    too_big = await clearing.submit_payment(pay("T2", account, 100_000_001))
    assert too_big.result == "rejected" and "amount" in too_big.message
    # Not remembered: the same key with a corrected account is applied.
    fixed = await clearing.submit_payment(pay("T1", account, 100))
    assert fixed.result == "applied" and fixed.balance == 100_100
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clearing.stub.SubmitPayments(clearing_pb2.SubmitPaymentsRequest(
            payments=[pay(f"B{i}", account, 1) for i in range(10_001)]), metadata=clearing.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- exactly once --------------------------------------------------------------------------

async def test_the_same_payment_fifty_times_at_once_credits_once(switch, clearing, network):
    account = network.cards[0].account_id
    answers = await asyncio.gather(*(clearing.submit_payment(pay("4200000001", account, 2_500)) for _ in range(50)))
    assert sorted(a.result for a in answers) == ["applied"] + ["duplicate"] * 49
    assert len({a.transaction_id for a in answers}) == 1
    assert all(a.balance == 102_500 for a in answers)
    assert await balance(switch, account) == 102_500
    stored = await rows(switch, "SELECT * FROM channel_transactions")
    assert len(stored) == 1 and stored[0]["business_date"] == dt.date(2025, 3, 1)
    txn = await rows(switch, "SELECT kind, amount, reference FROM transactions WHERE transaction_id = $1",
                     int(answers[0].transaction_id))
    assert tuple(txn[0]) == ("topup", 2_500, "wechat:4200000001")


async def test_bulk_applies_in_one_commit_with_internal_duplicates_and_conflicts(switch, clearing, network):
    a, b = network.cards[0].account_id, network.cards[1].account_id
    commits = switch.app.writer.stats.commits
    batch = [pay("P1", a, 100), pay("P2", b, 200), pay("P1", a, 100), pay("P1", a, 999), pay("P3", "424242", 5),
             pay("P4", a, 300), pay("P2", a, 200)]
    response = await clearing.stub.SubmitPayments(clearing_pb2.SubmitPaymentsRequest(payments=batch),
                                                  metadata=clearing.metadata)
    assert [r.result for r in response.results] == ["applied", "applied", "duplicate", "conflict", "rejected",
                                                    "applied", "conflict"]
    assert (response.applied, response.duplicate, response.conflict, response.rejected) == (3, 1, 2, 1)
    assert switch.app.writer.stats.commits == commits + 1
    assert response.results[2].transaction_id == response.results[0].transaction_id
    # Each applied payment reports the balance right after its own credit.
    assert (response.results[0].balance, response.results[5].balance) == (100_100, 100_400)
    assert (await balance(switch, a), await balance(switch, b)) == (100_400, 100_200)
    again = await clearing.submit_payments(batch)
    assert [r.result for r in again] == ["duplicate", "duplicate", "duplicate", "conflict", "rejected", "duplicate",
                                         "conflict"]
    assert (await balance(switch, a), await balance(switch, b)) == (100_400, 100_200)


async def test_a_repeat_after_a_restart_returns_the_first_result(switch_config):
    first = await start_switch(switch_config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as ch:
            network = await provision(ch, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=0)
            account = network.cards[0].account_id
            client = ClearingClient(ch, OPERATOR_TOKEN)
            applied = await client.submit_payment(pay("4200000009", account, 7_000))
            refunded = await client.submit_refund(refund("50300000009", "4200000009", 2_000))
            assert (applied.result, refunded.result) == ("applied", "applied")
    finally:
        await first.stop(1.0)
    second = await start_switch(switch_config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            client = ClearingClient(ch, OPERATOR_TOKEN)
            again = await client.submit_payment(pay("4200000009", account, 7_000))
            assert (again.result, again.transaction_id, again.balance) == ("duplicate", applied.transaction_id, 5_000)
            refund_again = await client.submit_refund(refund("50300000009", "4200000009", 2_000))
            assert (refund_again.result, refund_again.transaction_id) == ("duplicate", refunded.transaction_id)
            over = await client.submit_refund(refund("50300000010", "4200000009", 5_001))  # 5,000 left to refund
            assert over.result == "rejected"
            conflict = await client.submit_payment(pay("4200000009", account, 7_001))
            assert conflict.result == "conflict"
        await assert_memory_equals_database(second)
    finally:
        await second.stop(1.0)


async def test_a_conflict_changes_nothing_is_logged_and_counted(switch, clearing, network, caplog):
    a, b = network.cards[0].account_id, network.cards[1].account_id
    assert (await clearing.submit_payment(pay("C1", a, 1_000))).result == "applied"
    assert (await clearing.submit_refund(refund("CR1", "C1", 400))).result == "applied"
    caplog.set_level(logging.WARNING, logger="fuelswitch.clearing")
    for conflicting in (pay("C1", a, 1_001), pay("C1", b, 1_000), pay("CR1", a, 400)):
        answer = await clearing.submit_payment(conflicting)
        assert (answer.result, answer.transaction_id) == ("conflict", "")
    for conflicting_refund in (refund("CR1", "C1", 401), refund("C1", "C1", 400)):
        assert (await clearing.submit_refund(conflicting_refund)).result == "conflict"
    assert switch.clearing.stats.conflicts == 5
    assert sum("clearing conflict" in r.getMessage() for r in caplog.records) == 5
    assert (await balance(switch, a), await balance(switch, b)) == (100_600, 100_000)
    assert len(await rows(switch, "SELECT * FROM channel_transactions")) == 2


async def test_a_failed_commit_answers_unavailable_and_leaves_no_trace(switch, clearing, network):
    account = network.cards[0].account_id
    writer = switch.app.writer
    real_write = writer._write

    async def failing_write(entries, batch):
        raise ConnectionResetError("simulated loss of the database connection")

    writer._write = failing_write
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clearing.submit_payment(pay("F1", account, 500))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    writer._write = real_write
    await asyncio.wait_for(switch.app.serving.wait(), 10)
    assert ("wechat", "F1") not in switch.app.state.channel_txns
    retried = await clearing.submit_payment(pay("F1", account, 500))
    assert (retried.result, retried.balance) == ("applied", 100_500)


# -- refunds -------------------------------------------------------------------------------

async def test_refunds_never_exceed_the_payment(switch, clearing, network):
    account = network.cards[0].account_id
    await clearing.submit_payment(pay("P", account, 10_000))
    first = await clearing.submit_refund(refund("R1", "P", 4_000))
    assert (first.result, first.account_id, first.balance) == ("applied", account, 106_000)
    assert (await clearing.submit_refund(refund("R1", "P", 4_000))).transaction_id == first.transaction_id
    too_much = await clearing.submit_refund(refund("R2", "P", 6_001))
    assert too_much.result == "rejected" and "6000 fen left" in too_much.message
    assert (await clearing.submit_refund(refund("R2", "P", 6_000))).result == "applied"
    assert (await clearing.submit_refund(refund("R3", "P", 1))).result == "rejected"
    assert await balance(switch, account) == 100_000
    kinds = await rows(switch, "SELECT kind, amount, original_id FROM transactions WHERE kind = 'channel_refund'")
    assert sorted(r["amount"] for r in kinds) == [4_000, 6_000]


async def test_concurrent_refunds_race_for_the_same_payment(switch, clearing, network):
    account = network.cards[0].account_id
    await clearing.submit_payment(pay("P", account, 10_000))
    answers = await asyncio.gather(*(clearing.submit_refund(refund(f"R{i}", "P", 1_000)) for i in range(25)))
    assert sorted(a.result for a in answers).count("applied") == 10
    assert sum(a.result == "rejected" for a in answers) == 15
    assert await balance(switch, account) == 100_000


async def test_a_refund_before_its_payment_is_rejected_and_applies_once_the_payment_is_in(switch, clearing, network):
    account = network.cards[0].account_id
    early = await clearing.submit_refund(refund("R-early", "P-late", 300))
    assert early.result == "rejected" and "not found" in early.message
    await clearing.submit_payment(pay("P-late", account, 1_000))
    retried = await clearing.submit_refund(refund("R-early", "P-late", 300))
    assert (retried.result, retried.balance) == ("applied", 100_700)
    assert (await clearing.submit_refund(refund("R-early", "P-late", 300))).result == "duplicate"
    assert await balance(switch, account) == 100_700


async def test_a_refund_is_refused_when_the_money_is_spent(switch, clearing, network, terminal):
    card = network.cards[0]
    await clearing.submit_payment(pay("P", card.account_id, 1_000))
    spent = (await terminal.purchase(card.pan, card.pin, 100_500, "92", 15_000)).response
    assert spent.response_code == "00"
    answer = await clearing.submit_refund(refund("R", "P", 1_000))
    assert answer.result == "rejected" and "insufficient funds" in answer.message
    assert await balance(switch, card.account_id) == 500


async def test_randomized_payments_refunds_and_repeats_conserve_money(switch, clearing, network):
    rng = random.Random(20250301)
    accounts = [c.account_id for c in network.cards]
    expected = dict.fromkeys(accounts, 100_000)
    payments: dict[str, tuple[str, int]] = {}  # key -> (account, amount)
    refunded: dict[str, int] = {}
    refunds: dict[str, tuple[str, int]] = {}
    for step in range(150):
        roll = rng.random()
        if roll < 0.35 or not payments:
            key, account, amount = f"P{step}", rng.choice(accounts), rng.randint(1, 5_000)
            assert (await clearing.submit_payment(pay(key, account, amount))).result == "applied"
            payments[key], refunded[key] = (account, amount), 0
            expected[account] += amount
        elif roll < 0.5:
            group = [(f"B{step}-{i}", rng.choice(accounts), rng.randint(1, 3_000)) for i in range(rng.randint(1, 30))]
            group += rng.sample(group, len(group) // 3)  # repeats inside the call
            answers = await clearing.submit_payments([pay(k, a, m) for k, a, m in group])
            for (key, account, amount), answer in zip(group, answers, strict=True):
                if answer.result == "applied":
                    payments[key], refunded[key] = (account, amount), 0
                    expected[account] += amount
                else:
                    assert answer.result == "duplicate" and key in payments
        elif roll < 0.65:
            key = rng.choice(list(payments))
            account, amount = payments[key]
            same = rng.random() < 0.5
            answer = await clearing.submit_payment(pay(key, account, amount if same else amount + 1))
            assert answer.result == ("duplicate" if same else "conflict")
        elif roll < 0.9:
            key = rng.choice(list(payments))
            account, amount = payments[key]
            ask = rng.randint(1, amount)
            answer = await clearing.submit_refund(refund(f"R{step}", key, ask))
            if ask <= amount - refunded[key]:
                assert answer.result == "applied"
                refunded[key] += ask
                refunds[f"R{step}"] = (key, ask)
                expected[account] -= ask
            else:
                assert answer.result == "rejected"
        elif refunds:
            key = rng.choice(list(refunds))
            original, amount = refunds[key]
            assert (await clearing.submit_refund(refund(key, original, amount))).result == "duplicate"
    for account in accounts:
        assert await balance(switch, account) == expected[account]
    stored = await rows(switch, "SELECT kind, sum(amount)::bigint AS total FROM channel_transactions GROUP BY kind")
    totals = {r["kind"]: r["total"] for r in stored}
    assert totals["payment"] - totals.get("refund", 0) == sum(expected.values()) - 100_000 * len(accounts)


# -- reconciliation ------------------------------------------------------------------------

async def _reconcile_fixture(clearing, account: str) -> list[clearing_pb2.StatementLine]:
    """Journal: 8 payments and 2 refunds on DAY, one payment the day before. Returns a statement with one
    discrepancy of every type injected."""
    for i in range(1, 9):
        assert (await clearing.submit_payment(pay(f"P{i}", account, 1_000 * i, fee=6 * i))).result == "applied"
    assert (await clearing.submit_refund(refund("R1", "P1", 500))).result == "applied"
    assert (await clearing.submit_refund(refund("R2", "P2", 700))).result == "applied"
    assert (await clearing.submit_payment(pay("P-eve", account, 900, paid_at=PAID_AT - 86_400_000))).result == "applied"
    return [
        line("P1", 1_000, fee=6), line("P2", 2_000, fee=12), line("P3", 3_000, fee=18),  # matching
        line("R1", 500, kind="refund", original="P1"), line("R2", 700, kind="refund", original="P2"),
        line("P4", 4_001, fee=24),  # amount_mismatch
        line("P5", 5_000, fee=30, status="failed"),  # status_mismatch
        line("P6", 6_000, fee=37),  # fee_mismatch (1 fen more than the journal's 36)
        line("P7", 7_000, fee=42), line("P7", 7_000, fee=42),  # duplicate (the first copy matches)
        line("X1", 1_234, fee=7),  # missing_here
        line("X2", 99, status="failed"),  # failed at the channel, never here: agrees
        line("P-eve", 900),  # date_mismatch: applied here on the day before
        # P8 left out: missing_there
    ]


async def test_reconcile_finds_exactly_the_injected_discrepancies(switch, clearing, network):
    account = network.cards[0].account_id
    statement = await _reconcile_fixture(clearing, account)
    before = await balance(switch, account)
    report = await clearing.reconcile(statement)
    found = sorted((d.type, d.channel_txn_id) for d in report.discrepancies)
    assert found == sorted([("amount_mismatch", "P4"), ("status_mismatch", "P5"), ("fee_mismatch", "P6"),
                            ("duplicate", "P7"), ("missing_here", "X1"), ("date_mismatch", "P-eve"),
                            ("missing_there", "P8")])
    assert (report.missing_here, report.missing_there, report.amount_mismatch, report.status_mismatch,
            report.duplicate, report.fee_mismatch, report.date_mismatch) == (1, 1, 1, 1, 1, 1, 1)
    assert (report.lines, report.matched) == (len(statement), 7)  # P1 P2 P3 R1 R2 P7 X2
    assert report.statement_net == 1_000 + 2_000 + 3_000 - 500 - 700 + 4_001 + 6_000 + 14_000 + 1_234 + 900
    assert report.journal_net == sum(1_000 * i for i in range(1, 9)) - 500 - 700
    by_id = {d.channel_txn_id: d for d in report.discrepancies}
    assert (by_id["P4"].statement_amount, by_id["P4"].journal_amount) == (4_001, 4_000)
    assert (by_id["P5"].statement_status, by_id["P5"].journal_status) == ("failed", "applied")
    assert (by_id["P6"].statement_fee, by_id["P6"].journal_fee) == (37, 36)
    assert await balance(switch, account) == before  # reconciliation moves no money
    # The line-per-message form gives the same report; both runs are stored.
    single = await clearing.stub.Reconcile(iter(statement), metadata=clearing.metadata)
    assert sorted((d.type, d.channel_txn_id) for d in single.discrepancies) == found
    runs = await rows(switch, "SELECT run_id, counts FROM reconciliation_runs ORDER BY run_id")
    assert [str(r["run_id"]) for r in runs] == [report.run_id, single.run_id]
    listed = [d async for d in clearing.discrepancies(report.run_id)]
    assert [(d.seq, d.type, d.channel_txn_id) for d in listed] == [
        (d.seq, d.type, d.channel_txn_id) for d in report.discrepancies]
    assert [d.channel_txn_id async for d in clearing.discrepancies(report.run_id, "missing_here")] == ["X1"]


async def test_reconcile_fee_tolerance_is_configurable(switch_config):
    running = await start_switch(dataclasses.replace(switch_config, reconcile_fee_tolerance_fen=1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            network = await provision(ch, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=0)
            client = ClearingClient(ch, OPERATOR_TOKEN)
            await client.submit_payment(pay("P1", network.cards[0].account_id, 1_000, fee=6))
            await client.submit_payment(pay("P2", network.cards[0].account_id, 1_000, fee=6))
            report = await client.reconcile([line("P1", 1_000, fee=7), line("P2", 1_000, fee=8)])
            assert [(d.type, d.channel_txn_id) for d in report.discrepancies] == [("fee_mismatch", "P2")]
            assert (report.matched, report.fee_tolerance) == (1, 1)
        await assert_memory_equals_database(running)
    finally:
        await running.stop(1.0)


async def test_payments_notified_without_a_fee_are_reconciled_at_the_contracted_rate(switch_config):
    running = await start_switch(dataclasses.replace(switch_config, channel_fee_bps="wechat=60,alipay=55"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            network = await provision(ch, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=0)
            client = ClearingClient(ch, OPERATOR_TOKEN)
            account = network.cards[0].account_id
            for tid, fee in [("R1", 0), ("R2", 0), ("R3", 0), ("R4", 9)]:
                await client.submit_payment(pay(tid, account, 1_250, fee=fee))
            # 0.6% of 12.50 yuan is 7.5 fen: 8 after rounding half up. R4's notification carried its fee.
            report = await client.reconcile([line("R1", 1_250, fee=8), line("R2", 1_250, fee=7),
                                             line("R3", 1_250, fee=0), line("R4", 1_250, fee=9)])
            assert [(d.type, d.channel_txn_id) for d in report.discrepancies] == [
                ("fee_mismatch", "R2"), ("fee_mismatch", "R3")]
        await assert_memory_equals_database(running)
    finally:
        await running.stop(1.0)


def test_contracted_fee_rates_are_parsed_and_checked():
    assert ServeConfig(operator_token="t", channel_fee_bps="wechat=60, alipay=55").channel_fee_rates() == {
        "wechat": 60, "alipay": 55}
    for wrong in ("wechat", "wechat=-1", "wechat=10001", "=60"):
        with pytest.raises(ValueError, match="channel_fee_bps"):
            ServeConfig(operator_token="t", channel_fee_bps=wrong).validate()


@pytest.mark.parametrize("statement", [
    [line("A", 1), line("B", 1, channel="alipay")],
    [line("A", 1), line("B", 1, date="2025-03-02")],
    [line("A", 1, date="2025-3-1")],
    [line("A", 1, kind="chargeback")],
    [line("A", 1, status="pending")],
    [line("", 1)],
    [line("A", -1)],
])
async def test_a_malformed_statement_is_invalid_argument(switch, clearing, statement):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clearing.reconcile(statement)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await rows(switch, "SELECT * FROM reconciliation_runs") == []


async def test_an_empty_statement_reports_every_journal_entry_missing_there(switch, clearing, network):
    await clearing.submit_payment(pay("P1", network.cards[0].account_id, 1_000))
    report = await clearing.reconcile([], channel="wechat", business_date=DAY)
    assert [(d.type, d.channel_txn_id) for d in report.discrepancies] == [("missing_there", "P1")]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clearing.reconcile([])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- resolution ----------------------------------------------------------------------------

async def test_resolutions_move_money_once_with_an_audit_row(switch, clearing, network):
    a, b = network.cards[0].account_id, network.cards[1].account_id
    statement = await _reconcile_fixture(clearing, a)
    report = await clearing.reconcile(statement)
    run = report.run_id
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a decision must fit the discrepancy
        await clearing.resolve(run, "X1", "reverse", operator="finance-li")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clearing.resolve(run, "X1", "credit", operator="")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await clearing.resolve(run, "nowhere", "accept", operator="finance-li")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    # missing_here: credit the statement's payment to the account the customer names; two operators at once.
    attempts = await asyncio.gather(
        *(clearing.resolve(run, "X1", "credit", operator=f"op{i}", account_id=b, note="ticket 42") for i in range(5)),
        return_exceptions=True)
    done = [r for r in attempts if isinstance(r, clearing_pb2.ResolveDiscrepancyResponse)]
    refused = [r for r in attempts if isinstance(r, grpc.aio.AioRpcError)]
    assert len(done) == 1 and all(e.code() == grpc.StatusCode.ALREADY_EXISTS for e in refused)
    assert (done[0].result, done[0].balance) == ("applied", 101_234)
    # The channel's own notification arriving later is a duplicate of the resolution's payment.
    late = await clearing.submit_payment(pay("X1", b, 1_234))
    assert (late.result, late.transaction_id) == ("duplicate", done[0].transaction_id)

    # missing_there: the channel never paid P8; take it back.
    a_before = await balance(switch, a)
    reversed_ = await clearing.resolve(run, "P8", "reverse", operator="finance-li", note="not on statement")
    assert (reversed_.result, reversed_.balance) == ("applied", a_before - 8_000)
    # status_mismatch: failed at the channel; accept without moving money.
    accepted = await clearing.resolve(run, "P5", "accept", operator="finance-li", note="channel confirms success")
    assert (accepted.result, accepted.transaction_id) == ("accepted", "")
    assert await balance(switch, a) == a_before - 8_000

    audit = await rows(switch, "SELECT channel_txn_id, decision, operator, note, result, transaction_id"
                               " FROM reconciliation_resolutions ORDER BY channel_txn_id")
    assert [(r["channel_txn_id"], r["decision"], r["result"]) for r in audit] == [
        ("P5", "accept", "accepted"), ("P8", "reverse", "applied"), ("X1", "credit", "applied")]
    assert audit[2]["note"] == "ticket 42" and audit[2]["operator"].startswith("op")
    listed = {d.channel_txn_id: d.resolution async for d in clearing.discrepancies(run)}
    assert (listed["X1"], listed["P8"], listed["P4"]) == ("credit", "reverse", "")

    # Reconciled again, the resolved items agree: X1 is in the journal now, P8 is reversed.
    again = await clearing.reconcile(statement)
    assert {d.channel_txn_id for d in again.discrepancies} == {"P4", "P5", "P6", "P7", "P-eve"}
    assert again.journal_net == report.journal_net + 1_234 - 8_000
    # A reversed payment has nothing left to refund.
    assert (await clearing.submit_refund(refund("R9", "P8", 1))).result == "rejected"


async def test_a_missing_refund_is_applied_by_a_debit_decision(switch, clearing, network):
    account = network.cards[0].account_id
    await clearing.submit_payment(pay("P1", account, 1_000))
    report = await clearing.reconcile([line("P1", 1_000), line("R1", 400, kind="refund", original="P1")])
    assert [(d.type, d.channel_txn_id) for d in report.discrepancies] == [("missing_here", "R1")]
    answer = await clearing.resolve(report.run_id, "R1", "debit", operator="finance-li")
    assert (answer.result, answer.balance, answer.account_id) == ("applied", 100_600, account)
    assert (await clearing.submit_refund(refund("R1", "P1", 400))).result == "duplicate"


# -- settlement ----------------------------------------------------------------------------

class MovableClock:
    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return wall_clock_ms() + self.offset_ms


@pytest.fixture
async def settling(switch_config):
    """A switch whose clock the test moves, with one terminal; network fee 1.5% (150 bps)."""
    clock = MovableClock()
    running = await start_switch(dataclasses.replace(switch_config, settlement_fee_bps=150), clock)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        network = await provision(ch, OPERATOR_TOKEN, terminals=1, cards=2, balance_fen=500_000)
        spec = network.terminals[0]
        terminal = Terminal(ch, spec.terminal_id, spec.private_key_hex, spec.public_key_hex, clock)
        await terminal.sign_on()
        yield running, clock, ClearingClient(ch, OPERATOR_TOKEN), network, terminal
    await assert_memory_equals_database(running)
    await running.stop(1.0)


async def test_settlement_is_provisional_until_the_day_closes_then_immutable(settling):
    running, clock, client, network, terminal = settling
    card = network.cards[0]
    today = S.business_day(clock(), 0)
    sale = (await terminal.purchase(card.pan, card.pin, 30_000, "92", 40_000)).response
    assert (await terminal.purchase(card.pan, card.pin, 12_000, "95", 15_000)).response.response_code == "00"
    assert (await terminal.refund(sale.transaction_id, 5_000)).response.response_code == "00"
    await client.submit_payment(pay("TOPUP-1", card.account_id, 9_999, station=network.station_id))  # not a sale

    open_day = await client.settlement(today.isoformat())
    assert not open_day.final and open_day.export_name.endswith("-provisional.csv")
    (batch,) = open_day.batches
    assert (batch.final, batch.sales_count, batch.sales_amount, batch.refunds_count, batch.refunds_amount) == (
        False, 2, 42_000, 1, 5_000)
    assert (batch.fees_amount, batch.net_payable) == (630, 42_000 - 5_000 - 630)  # 1.5% of 42,000
    assert batch.batch_id == today.strftime("%Y%m%d-") + network.station_id

    clock.offset_ms = 86_400_000  # the next day: `today` has closed
    closed = await client.settlement(today.isoformat(), network.station_id)
    assert closed.final and closed.export_name == f"settlement-{today.isoformat()}.csv"
    (final,) = closed.batches
    assert (final.final, final.sales_amount, final.refunds_amount, final.net_payable, final.late_count) == (
        True, 42_000, 5_000, 36_370, 0)
    assert final.closed_at_ms > 0

    # A sale decided on the closed day but recorded after its batch was stored lands in the next batch.
    clock.offset_ms = 0
    assert (await terminal.purchase(card.pan, card.pin, 7_000, "92", 9_000)).response.response_code == "00"
    clock.offset_ms = 86_400_000
    assert await client.settlement(today.isoformat()) == closed  # unchanged, to the byte
    next_day = today + dt.timedelta(days=1)
    provisional = (await client.settlement(next_day.isoformat())).batches[0]
    assert (provisional.final, provisional.sales_amount, provisional.late_count) == (False, 7_000, 1)
    clock.offset_ms = 2 * 86_400_000
    settled = await client.settlement(next_day.isoformat())
    assert settled.final and [(b.sales_amount, b.late_count) for b in settled.batches] == [(7_000, 1)]
    csv_lines = settled.export_csv.decode().splitlines()
    assert csv_lines[0] == ",".join(S.CSV_COLUMNS)
    assert csv_lines[1].startswith(next_day.strftime("%Y%m%d-") + network.station_id + ",")
    assert csv_lines[1].split(",")[S.CSV_COLUMNS.index("final")] == "true"
    stamped = await rows(running, "SELECT settlement_batch_id, count(*) FROM transactions"
                                  " WHERE settlement_batch_id IS NOT NULL GROUP BY 1 ORDER BY 1")
    assert [(r[0][:8], r[1]) for r in stamped] == [(today.strftime("%Y%m%d"), 3), (next_day.strftime("%Y%m%d"), 1)]
    assert (await client.settlement((today - dt.timedelta(days=30)).isoformat())).batches == []


async def test_a_reversed_sale_counts_as_a_refund_in_settlement(settling):
    running, clock, client, network, terminal = settling
    card = network.cards[1]
    sent = await terminal.purchase(card.pan, card.pin, 8_000, "92", 10_000)
    assert (await terminal.reverse(sent.stan)).response.response_code == "00"
    (batch,) = (await client.settlement(S.business_day(clock(), 0).isoformat())).batches
    assert (batch.sales_amount, batch.refunds_count, batch.refunds_amount) == (8_000, 1, 8_000)


def test_business_days_follow_the_cutoff_hour_in_utc_plus_8():
    at = S.day_start_ms(dt.date(2025, 3, 1), 0)  # 2025-03-01 00:00 UTC+8 = 2025-02-28 16:00 UTC
    assert at == int(dt.datetime(2025, 2, 28, 16, tzinfo=dt.UTC).timestamp()) * 1000
    assert S.business_day(at, 0) == dt.date(2025, 3, 1)
    assert S.business_day(at - 1, 0) == dt.date(2025, 2, 28)
    six = S.day_start_ms(dt.date(2025, 3, 1), 6)
    assert S.business_day(six - 1, 6) == dt.date(2025, 2, 28) and S.business_day(six, 6) == dt.date(2025, 3, 1)
    assert S.cst_date(at - 1) == dt.date(2025, 2, 28)


async def test_clearing_is_in_health_and_reflection(switch, channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(
        service="fuelswitch.v1.Clearing"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_channel_top_ups_show_in_list_transactions(switch, channel, clearing, network):
    account = network.cards[0].account_id
    await clearing.submit_payment(pay("L1", account, 1_500))
    await clearing.submit_refund(refund("L2", "L1", 500))
    await clearing.submit_payment(pay("L3", account, 700))
    report = await clearing.reconcile([line("L1", 1_500), line("L2", 500, kind="refund", original="L1")])
    await clearing.resolve(report.run_id, "L3", "reverse", operator="finance-li")
    listed = await Operator(channel, OPERATOR_TOKEN).call("ListTransactions", admin_pb2.ListTransactionsRequest(
        account_id=account, kinds=["topup", "channel_refund", "channel_reversal"]))
    # balance_change carries the sign: channel refunds and reversals take money out.
    assert [(t.kind, t.amount, t.balance_change, t.reference) for t in listed.transactions][:4] == [
        ("channel_reversal", 700, -700, ""), ("topup", 700, 700, "wechat:L3"),
        ("channel_refund", 500, -500, "wechat:L2"), ("topup", 1_500, 1_500, "wechat:L1")]


async def test_channel_references_and_operator_top_ups_never_collide_in_the_database(switch, channel, clearing,
                                                                                     network):
    account = network.cards[0].account_id
    operator = Operator(channel, OPERATOR_TOKEN)
    await operator.call("TopUp", admin_pb2.TopUpRequest(account_id=account, amount=100, reference="wechat:K1"))
    taken = await clearing.submit_payment(pay("K1", account, 100))
    assert taken.result == "rejected" and "operator top-up" in taken.message
    await clearing.submit_payment(pay("K2", account, 200))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await operator.call("TopUp", admin_pb2.TopUpRequest(account_id=account, amount=300, reference="wechat:K2"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await balance(switch, account) == 100_300
