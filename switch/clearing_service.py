"""Clearing over gRPC: channel payments and refunds applied exactly once, reconciliation, settlement.

Exactly once (docs/clearing.md): a payment or refund is keyed by (channel, channel_txn_id). Like the
POS path, a decision is taken on memory (`state.channel_txns`, the core) without an `await` in
between, then its records go to the journal writer and the answer waits for the commit. A repeat of
a key whose first copy is still committing waits for that same commit, so "duplicate" never vouches
for something not yet durable. Refusals ("rejected") are not remembered: the channel may retry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from fuelswitch.v1 import clearing_pb2

from core import Status
from switch import reconcile as R
from switch import settlement as S
from switch.admin_service import TOPUP_MAX_FEN
from switch.app import App
from switch.errors import OperatorError, Overloaded, RequestInvalid, parsing, parsing_stream
from switch.journal import Record
from switch.operator_auth import require_operator
from switch.state import ChannelTxn

log = logging.getLogger("fuelswitch.clearing")

SERVICE = "fuelswitch.v1.Clearing"
BULK_MAX = 10_000  # payments per SubmitPayments call
PAYMENT_MAX_FEN = TOPUP_MAX_FEN  # ¥1,000,000: a larger payment is refused ("rejected")
FUTURE_MS_MAX = 24 * 3600 * 1000  # a channel time further ahead of the host's clock is malformed
STATION_LEN_MAX = 64
OPERATOR_LEN_MAX, NOTE_LEN_MAX = 64, 1_000
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 500, 2_000
APPLIED, DUPLICATE, CONFLICT, REJECTED, ACCEPTED = "applied", "duplicate", "conflict", "rejected", "accepted"
# Which discrepancy each decision settles: (type, kind) pairs.
DECISIONS: dict[str, set[tuple[str, str]]] = {
    "credit": {("missing_here", "payment")},
    "debit": {("missing_here", "refund")},
    "reverse": {("missing_there", "payment"), ("status_mismatch", "payment")},
    "accept": set(),  # any
}

Key = tuple[str, str]  # (channel, channel_txn_id)
_NO_DATE = dt.date.min  # placeholder until validation computes it


@dataclass
class ClearingStats:
    outcomes: Counter[str] = field(default_factory=Counter)  # applied/duplicate/conflict/rejected, payments+refunds

    @property
    def conflicts(self) -> int:
        return self.outcomes[CONFLICT]


@dataclass
class _Pending:
    """Decisions taken on memory, to be committed together (one group commit)."""

    records: list[Record] = field(default_factory=list)
    new_keys: list[Key] = field(default_factory=list)
    waits: set[asyncio.Future[None]] = field(default_factory=set)  # commits of first copies still in flight
    touched_core: bool = False


@dataclass(slots=True)
class _Payment:
    """A well-formed payment, its fields read from the message once (each upb attribute read costs)."""

    channel: str
    channel_txn_id: str
    account_id: int
    amount: int
    fee: int
    paid_at_ms: int
    merchant_order_id: str
    station_id: str
    business_date: dt.date
    source: str = "channel"

    @property
    def key(self) -> Key:
        return (self.channel, self.channel_txn_id)


@dataclass(frozen=True)
class _Refund:
    req: clearing_pb2.SubmitRefundRequest
    business_date: dt.date
    source: str = "channel"


def _reference(key: Key) -> str:
    """The `transactions.reference` of a channel payment/refund: shown by ListTransactions."""
    return f"{key[0]}:{key[1]}"


def _check_id(value: str, what: str, *, required: bool = True, max_len: int = R.ID_LEN_MAX) -> None:
    if (required and not value) or len(value) > max_len or not value.isprintable():
        raise RequestInvalid(f"{what} must be printable text of {'1' if required else '0'}..{max_len} characters")


def _decimal_id(text: str, what: str = "account_id") -> int:
    if not text.isascii() or not text.isdigit() or int(text) <= 0 or int(text) >= 2**63:
        raise RequestInvalid(f"{what} must be a positive decimal id")
    return int(text)


def _check_channel(channel: str, what: str = "channel") -> None:
    if channel not in R.CHANNELS:
        raise RequestInvalid(f"{what} must be one of {', '.join(R.CHANNELS)}, not {channel!r}")


def _check_time(ms: int, now: int, what: str) -> None:
    if not 0 < ms <= now + FUTURE_MS_MAX:
        raise RequestInvalid(f"{what} must be ms since the epoch, and not more than a day ahead of the host")


def _payment_in(req: clearing_pb2.SubmitPaymentRequest, now: int, where: str) -> _Payment:
    """Malformed → INVALID_ARGUMENT (naming the field); business refusals come later, as "rejected"."""
    p = _Payment(req.channel, req.channel_txn_id, 0, req.amount, req.fee, req.paid_at_ms, req.merchant_order_id,
                 req.station_id, _NO_DATE)
    _check_channel(p.channel, where + "channel")
    _check_id(p.channel_txn_id, where + "channel_txn_id")
    p.account_id = _decimal_id(req.account_id, where + "account_id")
    if p.amount <= 0:
        raise RequestInvalid(f"{where}amount must be > 0 fen")
    if not 0 <= p.fee <= p.amount:
        raise RequestInvalid(f"{where}fee must be 0..amount fen")
    _check_time(p.paid_at_ms, now, where + "paid_at_ms")
    _check_id(p.merchant_order_id, where + "merchant_order_id", required=False)
    _check_id(p.station_id, where + "station_id", required=False, max_len=STATION_LEN_MAX)
    p.business_date = S.cst_date(p.paid_at_ms)
    return p


def _payment_reply(p: _Payment, result: str, message: str, txn_id: int = 0,
                   balance: int = 0) -> clearing_pb2.SubmitPaymentResponse:
    return clearing_pb2.SubmitPaymentResponse(
        result=result, message=message, transaction_id=str(txn_id) if txn_id else "", balance=balance,
        channel=p.channel, channel_txn_id=p.channel_txn_id,
    )


class Clearing:
    def __init__(self, app: App, operator_token: str) -> None:
        self.app = app
        self._token = operator_token.encode()
        self._inflight: dict[Key, asyncio.Future[None]] = {}  # key -> commit of its first copy
        self.stats = ClearingStats()

    def authorize(self, context: grpc.aio.ServicerContext) -> None:
        require_operator(context, self._token)

    def _writable(self) -> None:
        if not self.app.available:
            raise OperatorError(grpc.StatusCode.UNAVAILABLE, "the switch is recovering; retry")
        if self.app.writer.queue_depth >= self.app.config.journal_queue_max:
            raise Overloaded("the host is at capacity; retry")

    # -- payments ------------------------------------------------------------------------

    async def submit_payment(self, req: clearing_pb2.SubmitPaymentRequest, _: Any) -> clearing_pb2.SubmitPaymentResponse:
        payment = _payment_in(req, self.app.clock_ms(), "")
        self._writable()
        results, pending = self._decide_payments([payment])
        await self._commit(pending)
        return results[0]

    async def submit_payments(self, req: clearing_pb2.SubmitPaymentsRequest, _: Any) -> clearing_pb2.SubmitPaymentsResponse:
        if len(req.payments) > BULK_MAX:
            raise RequestInvalid(f"at most {BULK_MAX} payments per call")
        now = self.app.clock_ms()
        payments = [_payment_in(p, now, f"payments[{i}].") for i, p in enumerate(req.payments)]
        self._writable()
        results, pending = self._decide_payments(payments)
        await self._commit(pending)
        counts = Counter(r.result for r in results)
        return clearing_pb2.SubmitPaymentsResponse(
            results=results, applied=counts[APPLIED], duplicate=counts[DUPLICATE], conflict=counts[CONFLICT],
            rejected=counts[REJECTED],
        )

    def _decide_payments(self, payments: Sequence[_Payment]) -> tuple[list[clearing_pb2.SubmitPaymentResponse],
                                                                       _Pending]:
        """Every payment's outcome, in order; the new ones credited through one `credit_batch`."""
        state, pending, now = self.app.state, _Pending(), self.app.clock_ms()
        results: list[clearing_pb2.SubmitPaymentResponse | None] = [None] * len(payments)
        first_in_call: dict[Key, int] = {}
        repeats: list[int] = []  # same key as an earlier new payment of this call
        credits: list[tuple[int, int, int]] = []
        credited: list[int] = []
        for i, p in enumerate(payments):
            key = p.key
            known = state.channel_txns.get(key)
            if known is not None:
                results[i] = self._payment_repeat(p, known, pending)
            elif key in first_in_call:
                repeats.append(i)
            else:
                refusal = self._payment_refusal(p)
                if refusal:
                    results[i] = _payment_reply(p, REJECTED, refusal)
                    continue
                first_in_call[key] = i
                credits.append((state.ids.take(), p.account_id, p.amount))
                credited.append(i)
        statuses = state.ledger.credit_batch(credits) if credits else []
        pending.touched_core = bool(credits)
        for (txn_id, _, _), i, status in zip(credits, credited, statuses, strict=True):
            if status is not Status.OK:  # only OVERFLOW can get here: every other check came first
                results[i] = _payment_reply(payments[i], REJECTED, f"the core refused the credit: {status.name}")
                continue
            self._remember_payment(payments[i], txn_id, now, pending)
            results[i] = _payment_reply(payments[i], APPLIED, "credited", txn_id)
        self._running_balances(results, credits, credited)
        for i in repeats:
            first = first_in_call[payments[i].key]
            results[i] = self._repeat_in_call(payments[i], payments[first], results[first])
        done = [r for r in results if r is not None]
        assert len(done) == len(results)
        self.stats.outcomes.update(r.result for r in done)
        return done, pending

    def _running_balances(self, results: list[Any], credits: list[tuple[int, int, int]], credited: list[int]) -> None:
        """Each applied payment's "balance after the credit": the batch applied in order, nothing in between."""
        ledger = self.app.state.ledger
        after = {account: ledger.balance(account)[0] for _, account, _ in credits}
        for (_, account_id, amount), i in zip(reversed(credits), reversed(credited), strict=True):
            if results[i].result == APPLIED:
                results[i].balance = after[account_id]
                after[account_id] -= amount

    def _payment_refusal(self, p: _Payment) -> str:
        state = self.app.state
        if p.account_id not in state.accounts:
            return f"account {p.account_id} not found"
        if p.amount > PAYMENT_MAX_FEN:
            return f"amount above {PAYMENT_MAX_FEN} fen"
        if _reference(p.key) in state.topups:
            return f"reference {_reference(p.key)!r} is taken by an operator top-up"
        return ""

    def _remember_payment(self, p: _Payment, txn_id: int, now: int, pending: _Pending) -> None:
        state, key = self.app.state, p.key
        reference = _reference(key)
        state.channel_txns[key] = ChannelTxn("payment", p.account_id, p.amount, txn_id, station_id=p.station_id)
        state.topups[reference] = (txn_id, p.account_id, p.amount)
        pending.new_keys.append(key)
        pending.records += [
            ("transaction", (txn_id, "topup", p.account_id, None, None, p.station_id or None, None, p.amount, 0,
                             "", 0, None, reference, "00", now)),
            ("channel_txn", (p.channel, p.channel_txn_id, "payment", p.account_id, p.amount, p.fee, p.paid_at_ms,
                             p.business_date, None, p.merchant_order_id, p.station_id, txn_id, now, p.source)),
        ]

    def _payment_repeat(self, p: _Payment, known: ChannelTxn, pending: _Pending) -> clearing_pb2.SubmitPaymentResponse:
        self._wait_for_first(p.key, pending)
        differences = _differences(("kind", "payment", known.kind), ("account", p.account_id, known.account_id),
                                   ("amount", p.amount, known.amount))
        if differences:
            self._log_conflict(p.key, differences)
            return _payment_reply(p, CONFLICT, "key already applied with other content: " + differences)
        balance = self.app.state.ledger.balance(known.account_id)[0]
        note = f"; reversed by an operator ({known.reversed} fen)" if known.reversed else ""
        return _payment_reply(p, DUPLICATE, "applied before" + note, known.transaction_id, balance)

    def _repeat_in_call(self, p: _Payment, first_p: _Payment,
                        first: clearing_pb2.SubmitPaymentResponse | None) -> clearing_pb2.SubmitPaymentResponse:
        assert first is not None
        if first.result != APPLIED:  # the first copy was refused: so is this one, for the same reason
            return _payment_reply(p, first.result, first.message)
        differences = _differences(("account", p.account_id, first_p.account_id), ("amount", p.amount, first_p.amount))
        if differences:
            self._log_conflict(p.key, differences)
            return _payment_reply(p, CONFLICT, "key applied earlier in this call with other content: " + differences)
        balance = self.app.state.ledger.balance(p.account_id)[0]
        return _payment_reply(p, DUPLICATE, "applied earlier in this call", int(first.transaction_id), balance)

    # -- refunds -------------------------------------------------------------------------

    async def submit_refund(self, req: clearing_pb2.SubmitRefundRequest, _: Any) -> clearing_pb2.SubmitRefundResponse:
        refund = self._refund_in(req, self.app.clock_ms())
        self._writable()
        response, pending = self._decide_refund(refund)
        await self._commit(pending)
        return response

    @staticmethod
    def _refund_in(req: clearing_pb2.SubmitRefundRequest, now: int) -> _Refund:
        _check_channel(req.channel)
        _check_id(req.channel_txn_id, "channel_txn_id")
        _check_id(req.original_channel_txn_id, "original_channel_txn_id")
        if req.amount <= 0:
            raise RequestInvalid("amount must be > 0 fen")
        if not 0 <= req.fee_refunded <= req.amount:
            raise RequestInvalid("fee_refunded must be 0..amount fen")
        _check_time(req.refunded_at_ms, now, "refunded_at_ms")
        return _Refund(req, S.cst_date(req.refunded_at_ms))

    def _decide_refund(self, r: _Refund) -> tuple[clearing_pb2.SubmitRefundResponse, _Pending]:
        state, req, pending = self.app.state, r.req, _Pending()
        key = (req.channel, req.channel_txn_id)
        known = state.channel_txns.get(key)
        if known is not None:
            response = self._refund_repeat(key, r, known, pending)
        else:
            refusal, payment = self._refund_refusal(key, r)
            if refusal or payment is None:
                response = clearing_pb2.SubmitRefundResponse(result=REJECTED, message=refusal)
            else:
                txn_id = state.ids.take()
                status = state.ledger.debit(txn_id, payment.account_id, req.amount)
                pending.touched_core = True
                if status is Status.OK:
                    self._remember_refund(r, payment, txn_id, pending)
                    response = self._refund_reply(APPLIED, "debited", txn_id, payment.account_id)
                else:  # the available check came first: only a race-free impossibility lands here
                    response = clearing_pb2.SubmitRefundResponse(result=REJECTED, message=f"debit refused: {status.name}")
        self.stats.outcomes[response.result] += 1
        return response, pending

    def _refund_refusal(self, key: Key, r: _Refund) -> tuple[str, ChannelTxn | None]:
        state, req = self.app.state, r.req
        payment = state.channel_txns.get((req.channel, req.original_channel_txn_id))
        if payment is None or payment.kind != "payment":
            return (f"original payment {req.original_channel_txn_id!r} not found on channel {req.channel}; "
                    "if it is still to come, send the refund again after it"), None
        if req.amount > payment.refundable:
            return f"refund of {req.amount} fen exceeds the {payment.refundable} fen left to refund on the payment", None
        balance, held = state.ledger.balance(payment.account_id)
        if balance - held < req.amount:
            return f"insufficient funds: account {payment.account_id} has {balance - held} fen available", None
        if _reference(key) in state.topups:
            return f"reference {_reference(key)!r} is taken by an operator top-up", None
        return "", payment

    def _remember_refund(self, r: _Refund, payment: ChannelTxn, txn_id: int, pending: _Pending) -> None:
        state, req, now = self.app.state, r.req, self.app.clock_ms()
        key = (req.channel, req.channel_txn_id)
        payment.refunded += req.amount
        state.channel_txns[key] = ChannelTxn("refund", payment.account_id, req.amount, txn_id,
                                             req.original_channel_txn_id, payment.station_id)
        state.topups[_reference(key)] = (txn_id, payment.account_id, -req.amount)  # never equal to a TopUp's
        pending.new_keys.append(key)
        pending.records += [
            ("transaction", (txn_id, "channel_refund", payment.account_id, None, None, payment.station_id or None,
                             None, req.amount, 0, "", 0, payment.transaction_id, _reference(key), "00", now)),
            ("channel_txn", (req.channel, req.channel_txn_id, "refund", payment.account_id, req.amount,
                             req.fee_refunded, req.refunded_at_ms, r.business_date, req.original_channel_txn_id, "",
                             payment.station_id, txn_id, now, r.source)),
        ]

    def _refund_repeat(self, key: Key, r: _Refund, known: ChannelTxn,
                       pending: _Pending) -> clearing_pb2.SubmitRefundResponse:
        self._wait_for_first(key, pending)
        differences = _differences(("kind", "refund", known.kind),
                                   ("original", r.req.original_channel_txn_id, known.original),
                                   ("amount", r.req.amount, known.amount))
        if differences:
            self._log_conflict(key, differences)
            return clearing_pb2.SubmitRefundResponse(result=CONFLICT,
                                                     message="key already applied with other content: " + differences)
        return self._refund_reply(DUPLICATE, "applied before", known.transaction_id, known.account_id)

    def _refund_reply(self, result: str, message: str, txn_id: int, account_id: int) -> clearing_pb2.SubmitRefundResponse:
        return clearing_pb2.SubmitRefundResponse(
            result=result, message=message, transaction_id=str(txn_id),
            balance=self.app.state.ledger.balance(account_id)[0], account_id=str(account_id),
        )

    # -- shared by payments, refunds and resolutions -----------------------------------------

    def _wait_for_first(self, key: Key, pending: _Pending) -> None:
        first_commit = self._inflight.get(key)
        if first_commit is not None:
            pending.waits.add(first_commit)

    def _forget(self, keys: list[Key], commit: asyncio.Future[None]) -> None:
        for key in keys:
            if self._inflight.get(key) is commit:
                del self._inflight[key]

    def _log_conflict(self, key: Key, differences: str) -> None:
        log.warning("clearing conflict: %s %s submitted again with other content (%s); nothing changed",
                    key[0], key[1], differences)

    async def _commit(self, pending: _Pending) -> None:
        """Make this call's decisions durable, and wait for the first copies of the repeats it answers."""
        if pending.records or pending.touched_core:
            commit = self.app.writer.submit(pending.records)
            keys = pending.new_keys
            for key in keys:
                self._inflight[key] = commit
            # Forgotten when the commit ends, not when this call does: a cancelled caller must not
            # let a repeat answer "duplicate" before the commit is through.
            commit.add_done_callback(lambda _: self._forget(keys, commit))
            await asyncio.shield(commit)
        for first_commit in pending.waits:
            await asyncio.shield(first_commit)

    # -- reconciliation ------------------------------------------------------------------

    async def reconcile(self, stream: AsyncIterator[Any], _: Any) -> clearing_pb2.ReconcileReport:
        messages: list[Any] = []
        lines = 0
        async for message in stream:
            messages.append(message)
            lines += len(message.lines) if isinstance(message, clearing_pb2.StatementLines) else 1
            if lines > R.STATEMENT_LINES_MAX:
                raise RequestInvalid(f"a statement has at most {R.STATEMENT_LINES_MAX} lines")
        if not messages:
            raise RequestInvalid("empty stream: send at least one line (or a chunk naming channel and business_date)")
        channel, date = R.statement_key(messages[0])
        day = R.parse_date(date)
        statement = R.lines_of(messages, channel, date)
        tolerance = self.app.config.reconcile_fee_tolerance_fen
        async with self.app.pool.acquire() as conn:
            rows = await R.journal_rows(conn, channel, day)
        # The matching is pure Python over up to millions of lines: off the event loop.
        journal, journal_net = await asyncio.to_thread(R.journal_side, rows)
        del rows
        result = await asyncio.to_thread(R.match, statement, channel, date, journal, journal_net, tolerance,
                                         self.app.config.channel_fee_bps.get(channel))
        R.refuse_nul(result)  # before any query or INSERT carries a line's text
        async with self.app.pool.acquire() as conn:
            await R.other_dates(conn, result)
            run_id = await R.store_run(conn, result, tolerance, self.app.clock_ms())
        counts = result.counts()
        log.info("reconciled %s %s: %d lines, %d matched, %s (run %d)", channel, date, result.lines, result.matched,
                 ", ".join(f"{n} {t}" for t, n in counts.items() if n) or "no discrepancies", run_id)
        return R.report(result, run_id, tolerance)

    async def list_discrepancies(self, req: clearing_pb2.ListDiscrepanciesRequest,
                                 _: Any) -> clearing_pb2.ListDiscrepanciesResponse:
        run_id = _decimal_id(req.run_id, "run_id")
        if req.type and req.type not in R.TYPES:
            raise RequestInvalid(f"type must be one of {', '.join(R.TYPES)} (or empty)")
        after = _decimal_id(req.page_token, "page_token") if req.page_token else 0
        limit = min(req.limit or LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
        async with self.app.pool.acquire() as conn:
            header = await R.run_header(conn, run_id)
            if header is None:
                raise OperatorError(grpc.StatusCode.NOT_FOUND, f"reconcile run {run_id} not found")
            page = await R.discrepancies(conn, run_id, req.type, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return clearing_pb2.ListDiscrepanciesResponse(
            discrepancies=[f.proto(seq, resolution) for seq, f, resolution in page],
            next_page_token=str(page[-1][0]) if more and page else "", run=header,
        )

    # -- resolution ----------------------------------------------------------------------

    async def resolve_discrepancy(self, req: clearing_pb2.ResolveDiscrepancyRequest,
                                  _: Any) -> clearing_pb2.ResolveDiscrepancyResponse:
        run_id = _decimal_id(req.run_id, "run_id")
        _check_id(req.channel_txn_id, "channel_txn_id")
        if req.decision not in DECISIONS:
            raise RequestInvalid(f"decision must be one of {', '.join(DECISIONS)}")
        _check_id(req.operator, "operator", max_len=OPERATOR_LEN_MAX)
        if len(req.note) > NOTE_LEN_MAX:
            raise RequestInvalid(f"note is longer than {NOTE_LEN_MAX} characters")
        async with self.app.pool.acquire() as conn:
            header = await R.run_header(conn, run_id)
            found = await R.discrepancies_of(conn, run_id, req.channel_txn_id) if header else []
        if header is None or not found:
            raise OperatorError(grpc.StatusCode.NOT_FOUND,
                                f"no discrepancy {req.channel_txn_id!r} in reconcile run {run_id}")
        target = self._target(req, found)
        self._writable()
        # From here to the submit, no await: two operators resolving the same item cannot both pass.
        if (run_id, req.channel_txn_id) in self.app.state.resolutions:
            raise OperatorError(grpc.StatusCode.ALREADY_EXISTS,
                                f"{req.channel_txn_id!r} of run {run_id} is already resolved")
        key = (header.channel, req.channel_txn_id)
        result, message, txn_id, account_id, pending = self._apply_decision(req, key, target,
                                                                            R.parse_date(header.business_date))
        now = self.app.clock_ms()
        self.app.state.resolutions.add((run_id, req.channel_txn_id))
        pending.records.append(("resolution", (run_id, req.channel_txn_id, req.decision, req.operator, req.note,
                                               account_id or None, txn_id or None, result, now)))
        await self._commit(pending)
        log.info("discrepancy %s of run %d resolved by %s: %s (%s)", req.channel_txn_id, run_id, req.operator,
                 req.decision, result)
        balance = self.app.state.ledger.balance(account_id)[0] if account_id else 0
        return clearing_pb2.ResolveDiscrepancyResponse(
            result=result, message=message, transaction_id=str(txn_id or ""), balance=balance,
            account_id=str(account_id or ""), resolved_at_ms=now,
        )

    @staticmethod
    def _target(req: clearing_pb2.ResolveDiscrepancyRequest, found: list[R.Found]) -> R.Found | None:
        """The discrepancy the decision acts on (None for "accept")."""
        if req.decision == "accept":
            return None
        fits = [f for f in found if (f.type, f.kind) in DECISIONS[req.decision]]
        if not fits:
            have = ", ".join(f"{f.type} {f.kind}" for f in found)
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{req.decision!r} does not fit this discrepancy ({have})")
        if req.decision == "credit":
            _decimal_id(req.account_id)
        if req.decision != "reverse" and fits[0].statement_amount <= 0:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, "the statement line moves no money (accept it)")
        return fits[0]

    def _apply_decision(self, req: clearing_pb2.ResolveDiscrepancyRequest, key: Key, target: R.Found | None,
                        business_date: dt.date) -> tuple[str, str, int, int, _Pending]:
        """Move the money (synchronously, on memory) through the same exactly-once paths as the channel's."""
        if target is None:
            return ACCEPTED, "closed without moving money", 0, 0, _Pending()
        time_ms = int(target.detail.get("time_ms") or 0) or S.day_start_ms(business_date, 12)
        if req.decision == "credit":
            payment = _Payment(key[0], key[1], int(req.account_id), target.statement_amount,
                               min(target.statement_fee, target.statement_amount), time_ms,
                               target.detail.get("merchant_order_id", ""), "", business_date, "resolution")
            results, pending = self._decide_payments([payment])
            r = results[0]
            self._refuse_unless_moved(r.result, r.message)
            return r.result, r.message, int(r.transaction_id), int(req.account_id), pending
        if req.decision == "debit":
            refund = clearing_pb2.SubmitRefundRequest(
                channel=key[0], channel_txn_id=key[1], amount=target.statement_amount,
                original_channel_txn_id=target.detail.get("original_channel_txn_id", ""), refunded_at_ms=time_ms,
                fee_refunded=min(target.statement_fee, target.statement_amount))
            response, pending = self._decide_refund(_Refund(refund, business_date, "resolution"))
            self._refuse_unless_moved(response.result, response.message)
            return response.result, response.message, int(response.transaction_id), int(response.account_id), pending
        return self._reverse(key)

    @staticmethod
    def _refuse_unless_moved(result: str, message: str) -> None:
        if result not in (APPLIED, DUPLICATE):
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"{result}: {message}")

    def _reverse(self, key: Key) -> tuple[str, str, int, int, _Pending]:
        """Take back what is left of a payment the channel never paid (refunds already returned the rest)."""
        state, pending = self.app.state, _Pending()
        payment = state.channel_txns.get(key)
        if payment is None or payment.kind != "payment":
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"{key[1]!r} is not a payment applied here")
        if payment.reversed:
            return DUPLICATE, "reversed before", payment.reversal_id, payment.account_id, pending
        amount = payment.refundable
        if amount == 0:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, "fully refunded: nothing to reverse (accept it)")
        balance, held = state.ledger.balance(payment.account_id)
        if balance - held < amount:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"account {payment.account_id} has {balance - held} fen available, {amount} to reverse")
        txn_id = state.ids.take()
        status = state.ledger.debit(txn_id, payment.account_id, amount)
        pending.touched_core = True
        if status is not Status.OK:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"debit refused: {status.name}")
        payment.reversed, payment.reversal_id = amount, txn_id
        now = self.app.clock_ms()
        pending.records += [
            ("transaction", (txn_id, "channel_reversal", payment.account_id, None, None, payment.station_id or None,
                             None, amount, 0, "", 0, payment.transaction_id, None, "00", now)),
            ("channel_reversal", (key[0], key[1], txn_id, amount)),
        ]
        return APPLIED, f"reversed {amount} fen", txn_id, payment.account_id, pending

    # -- settlement ----------------------------------------------------------------------

    async def get_settlement(self, req: clearing_pb2.GetSettlementRequest, _: Any) -> clearing_pb2.GetSettlementResponse:
        day = R.parse_date(req.business_date)
        _check_id(req.station_id, "station_id", required=False, max_len=STATION_LEN_MAX)
        config = self.app.config
        rules = S.SettlementRules(config.settlement_cutoff_hour, config.settlement_fee_bps)
        async with self.app.pool.acquire() as conn:
            batches, final = await S.settlement(conn, day, req.station_id, rules, self.app.clock_ms())
        return clearing_pb2.GetSettlementResponse(
            batches=[clearing_pb2.SettlementBatch(
                batch_id=b.batch_id, station_id=b.station_id, business_date=b.business_date,
                sales_count=b.sales_count, sales_amount=b.sales_amount, refunds_count=b.refunds_count,
                refunds_amount=b.refunds_amount, fees_amount=b.fees_amount, net_payable=b.net_payable,
                final=b.final, closed_at_ms=b.closed_at_ms, late_count=b.late_count, fee_bps=b.fee_bps,
            ) for b in batches],
            export_csv=S.export_csv(batches), export_name=S.export_name(day, final), final=final,
        )


def _differences(*fields: tuple[str, object, object]) -> str:
    """'amount 200 (first: 100), ...' for every field whose new value differs from the first copy's."""
    return ", ".join(f"{name} {new} (first: {old})" for name, new, old in fields if new != old)


UNARY: dict[str, tuple[str, Any]] = {
    "SubmitPayment": ("submit_payment", clearing_pb2.SubmitPaymentRequest),
    "SubmitPayments": ("submit_payments", clearing_pb2.SubmitPaymentsRequest),
    "SubmitRefund": ("submit_refund", clearing_pb2.SubmitRefundRequest),
    "GetSettlement": ("get_settlement", clearing_pb2.GetSettlementRequest),
    "ListDiscrepancies": ("list_discrepancies", clearing_pb2.ListDiscrepanciesRequest),
    "ResolveDiscrepancy": ("resolve_discrepancy", clearing_pb2.ResolveDiscrepancyRequest),
}
STREAMS: dict[str, Any] = {
    "Reconcile": clearing_pb2.StatementLine,
    "ReconcileChunks": clearing_pb2.StatementLines,
}


def method_handlers(clearing: Clearing, guard: Callable[..., Any]) -> grpc.GenericRpcHandler:
    """Every route checks the operator token first, inside the error map."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method, (attr, request_type) in UNARY.items():
        handlers[method] = grpc.unary_unary_rpc_method_handler(  # raw bytes: parsed after the token check
            guard(_with_token(clearing, parsing(request_type, getattr(clearing, attr)))),
            response_serializer=lambda m: m.SerializeToString(),
        )
    for method, line_type in STREAMS.items():
        handlers[method] = grpc.stream_unary_rpc_method_handler(
            guard(_with_token(clearing, parsing_stream(line_type, clearing.reconcile))),
            response_serializer=lambda m: m.SerializeToString(),
        )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _with_token(clearing: Clearing, handler: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        clearing.authorize(context)
        return await handler(request, context)

    checked.__name__ = handler.__name__
    return checked
