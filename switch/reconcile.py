"""Reconciliation: a channel's daily statement against the channel transactions the host applied.

Moves no money. The comparison is a pure function (`match`) run in a worker thread, so a
million-line statement does not stall the event loop; the host's side is read from PostgreSQL
(`channel_transactions` of that channel and business date), the result is stored as a run with one
row per discrepancy (docs/clearing.md lists the types and their precedence).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fuelswitch.v1 import clearing_pb2

from switch.errors import RequestInvalid

CHANNELS = ("wechat", "alipay", "unionpay", "ecny")
ID_LEN_MAX = 160  # as ext.records: Alipay refund ids are trade_no ':' out_request_no
STATEMENT_LINES_MAX = 5_000_000
REPORT_DISCREPANCIES_MAX = 1_000  # inline in a report; ListDiscrepancies pages through the rest
TYPES = ("missing_here", "missing_there", "amount_mismatch", "status_mismatch", "duplicate", "fee_mismatch",
         "date_mismatch")
_KINDS = frozenset(("payment", "refund"))
_STATUSES = frozenset(("success", "failed"))

# Journal side of one channel id: (kind, amount, fee, reversed amount).
JournalEntry = tuple[str, int, int, int]


@dataclass(slots=True)
class Found:
    type: str
    channel_txn_id: str
    kind: str
    statement_amount: int
    journal_amount: int
    statement_fee: int
    journal_fee: int
    statement_status: str
    journal_status: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)  # statement fields a resolution needs

    def proto(self, seq: int = 0, resolution: str = "") -> clearing_pb2.Discrepancy:
        return clearing_pb2.Discrepancy(
            type=self.type, channel_txn_id=self.channel_txn_id, kind=self.kind,
            statement_amount=self.statement_amount, journal_amount=self.journal_amount,
            statement_status=self.statement_status, journal_status=self.journal_status, message=self.message,
            statement_fee=self.statement_fee, journal_fee=self.journal_fee, resolution=resolution, seq=seq,
        )


@dataclass
class Match:
    channel: str
    business_date: str
    lines: int = 0
    matched: int = 0
    statement_net: int = 0
    journal_net: int = 0
    found: list[Found] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(TYPES, 0)
        for f in self.found:
            counts[f.type] += 1
        return counts


def parse_date(text: str) -> dt.date:
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise RequestInvalid(f"business_date must be YYYY-MM-DD, not {text!r}")


def statement_key(first: clearing_pb2.StatementLine | clearing_pb2.StatementLines) -> tuple[str, str]:
    """Channel and business date of a statement, from its first message."""
    if isinstance(first, clearing_pb2.StatementLines):
        if first.channel or first.business_date:
            channel, date = first.channel, first.business_date
        elif first.lines:
            channel, date = first.lines[0].channel, first.lines[0].business_date
        else:
            raise RequestInvalid("the first chunk has neither lines nor channel and business_date")
    else:
        channel, date = first.channel, first.business_date
    if channel not in CHANNELS:
        raise RequestInvalid(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    parse_date(date)
    return channel, date


def lines_of(messages: list[Any], channel: str, date: str) -> Iterator[clearing_pb2.StatementLine]:
    """Every line of the collected stream; chunk headers, when set, must name the same statement."""
    if messages and isinstance(messages[0], clearing_pb2.StatementLine):
        return iter(messages)
    for chunk in messages:
        if (chunk.channel and chunk.channel != channel) or (chunk.business_date and chunk.business_date != date):
            raise RequestInvalid(f"every chunk must be of channel {channel} and business_date {date}")
    return itertools.chain.from_iterable(chunk.lines for chunk in messages)


def journal_side(rows: Iterable[asyncpg.Record]) -> tuple[dict[str, JournalEntry], int]:
    """channel_txn_id -> entry, and the journal's net (payments − reversals − refunds)."""
    entries: dict[str, JournalEntry] = {}
    net = 0
    for tid, kind, amount, fee, reversed_amount in rows:
        entries[tid] = (kind, amount, fee, reversed_amount)
        net += amount - reversed_amount if kind == "payment" else -amount
    return entries, net


def contract_fee(amount: int, fee_bps: int) -> int:
    """The channel's fee on `amount` at its contracted rate, rounded half up to the fen."""
    return (amount * fee_bps + 5_000) // 10_000


def match(lines: Iterable[clearing_pb2.StatementLine], channel: str, date: str,
          journal: dict[str, JournalEntry], journal_net: int, fee_tolerance: int,
          contract_fee_bps: int | None = None) -> Match:
    """Compare every line with the journal (consumed: what is left was not on the statement).

    A fee recorded here as 0 means the channel's notification carried none (WeChat, Alipay and
    UnionPay notifications do not): with `contract_fee_bps` the line's fee is then checked against
    the contracted rate instead.

    One discrepancy per line at most, the first that applies: duplicate (a later line with an id
    already seen), missing_here, status_mismatch (kind differs, failed vs applied, success vs
    reversed), amount_mismatch, fee_mismatch. Raises RequestInvalid on a malformed line.
    """
    result = Match(channel, date, journal_net=journal_net)
    found = result.found
    seen: set[str] = set()
    n = matched = net = 0
    kinds, statuses = _KINDS, _STATUSES
    for line in lines:
        n += 1
        tid, kind, status, amount, fee = line.channel_txn_id, line.kind, line.status, line.amount, line.fee
        if line.channel != channel or line.business_date != date:
            raise RequestInvalid(f"line {n}: every line must be of channel {channel} and business_date {date}")
        if kind not in kinds or status not in statuses or not 0 < len(tid) <= ID_LEN_MAX or amount < 0 or fee < 0:
            raise RequestInvalid(f"line {n} ({tid[:ID_LEN_MAX]!r}): needs an id of 1..{ID_LEN_MAX} characters, "
                                 "kind payment|refund, status success|failed, amount and fee >= 0")
        if status == "success":
            net += amount if kind == "payment" else -amount
        if tid in seen:
            found.append(_line_found("duplicate", line, "the id appears more than once on the statement"))
            continue
        seen.add(tid)
        entry = journal.pop(tid, None)
        if entry is None:
            if status == "success":
                found.append(_line_found("missing_here", line, "on the statement, not applied here"))
            else:
                matched += 1  # failed at the channel and never applied here: both sides agree
            continue
        jkind, jamount, jfee, jreversed = entry
        jstatus = "reversed" if jreversed else "applied"
        if jfee == 0 and contract_fee_bps is not None:
            jfee = contract_fee(jamount, contract_fee_bps)
        problem = _compare(kind, status, amount, fee, jkind, jstatus, jamount, jfee, fee_tolerance)
        if problem is None:
            matched += 1
        else:
            found.append(Found(problem[0], tid, kind, amount, jamount, fee, jfee, status, jstatus, problem[1],
                               _detail(line)))
    for tid, (jkind, jamount, jfee, jreversed) in journal.items():
        if not jreversed:  # a reversed payment is rightly absent from the statement
            found.append(Found("missing_there", tid, jkind, 0, jamount, 0, jfee, "", "applied",
                               "applied here, not on the statement"))
    result.lines, result.matched, result.statement_net = n, matched, net
    return result


def _compare(kind: str, status: str, amount: int, fee: int, jkind: str, jstatus: str, jamount: int, jfee: int,
             fee_tolerance: int) -> tuple[str, str] | None:
    if kind != jkind:
        return "status_mismatch", f"a {kind} on the statement, a {jkind} here"
    if status == "failed":
        return ("status_mismatch", "failed at the channel, applied here") if jstatus == "applied" else None
    if jstatus == "reversed":
        return "status_mismatch", "successful at the channel, reversed here"
    if amount != jamount:
        return "amount_mismatch", f"amount {amount} on the statement, {jamount} here"
    if abs(fee - jfee) > fee_tolerance:
        return "fee_mismatch", f"fee {fee} on the statement, {jfee} here (tolerance {fee_tolerance})"
    return None


def _line_found(type_: str, line: clearing_pb2.StatementLine, message: str) -> Found:
    return Found(type_, line.channel_txn_id, line.kind, line.amount, 0, line.fee, 0, line.status, "", message,
                 _detail(line))


def _detail(line: clearing_pb2.StatementLine) -> dict[str, Any]:
    return {"time_ms": line.time_ms, "merchant_order_id": line.merchant_order_id,
            "original_channel_txn_id": line.original_channel_txn_id}


async def journal_rows(conn: asyncpg.Connection, channel: str, day: dt.date) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT channel_txn_id, kind, amount, fee, reversed_amount FROM channel_transactions"
        " WHERE channel = $1 AND business_date = $2", channel, day,
    )


async def other_dates(conn: asyncpg.Connection, result: Match) -> None:
    """A statement id missing here may be applied on another business date (a payment at midnight)."""
    missing = {f.channel_txn_id: i for i, f in enumerate(result.found) if f.type == "missing_here"}
    if not missing:
        return
    rows = await conn.fetch(
        "SELECT channel_txn_id, business_date, kind, amount, fee, reversed_amount FROM channel_transactions"
        " WHERE channel = $1 AND channel_txn_id = ANY($2::text[])", result.channel, list(missing),
    )
    for r in rows:
        f = result.found[missing[r["channel_txn_id"]]]
        f.type, f.journal_amount, f.journal_fee = "date_mismatch", r["amount"], r["fee"]
        f.journal_status = "reversed" if r["reversed_amount"] else "applied"
        f.message = f"applied here on business date {r['business_date'].isoformat()}"
        if r["amount"] != f.statement_amount or r["kind"] != f.kind:
            f.message += f" as a {r['kind']} of {r['amount']}"


_DISCREPANCY_COLUMNS = ["run_id", "seq", "type", "channel_txn_id", "kind", "statement_amount", "journal_amount",
                        "statement_fee", "journal_fee", "statement_status", "journal_status", "message", "detail"]


def refuse_nul(result: Match) -> None:
    """A statement line whose stored text holds U+0000 (PostgreSQL text cannot) is refused by name.

    Lines are not walked for NUL as they stream in (millions of them); only what a run stores is checked.
    """
    for seq, f in enumerate(result.found, start=1):
        texts = (f.channel_txn_id, f.kind, f.statement_status, f.journal_status, f.message, json.dumps(f.detail))
        if any("\x00" in text or "\\u0000" in text for text in texts):
            raise RequestInvalid(f"statement line {f.channel_txn_id[:64]!r} (discrepancy {seq}) "
                                 "contains a NUL character")


async def store_run(conn: asyncpg.Connection, result: Match, fee_tolerance: int, now_ms: int) -> int:
    async with conn.transaction():
        run_id: int = await conn.fetchval(
            """INSERT INTO reconciliation_runs (channel, business_date, lines, matched, statement_net, journal_net,
               fee_tolerance, counts, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING run_id""",
            result.channel, parse_date(result.business_date), result.lines, result.matched, result.statement_net,
            result.journal_net, fee_tolerance, json.dumps(result.counts()), now_ms,
        )
        if result.found:
            await conn.copy_records_to_table("reconciliation_discrepancies", columns=_DISCREPANCY_COLUMNS, records=(
                (run_id, seq, f.type, f.channel_txn_id, f.kind, f.statement_amount, f.journal_amount,
                 f.statement_fee, f.journal_fee, f.statement_status, f.journal_status, f.message,
                 json.dumps(f.detail))
                for seq, f in enumerate(result.found, start=1)
            ))
    return run_id


def report(result: Match, run_id: int, fee_tolerance: int) -> clearing_pb2.ReconcileReport:
    shown = result.found[:REPORT_DISCREPANCIES_MAX]
    return clearing_pb2.ReconcileReport(
        channel=result.channel, business_date=result.business_date, lines=result.lines, matched=result.matched,
        statement_net=result.statement_net, journal_net=result.journal_net,
        discrepancies=[f.proto(seq) for seq, f in enumerate(shown, start=1)],
        run_id=str(run_id), discrepancies_omitted=len(result.found) - len(shown), fee_tolerance=fee_tolerance,
        **result.counts(),
    )


async def run_header(conn: asyncpg.Connection, run_id: int) -> clearing_pb2.ReconcileReport | None:
    r = await conn.fetchrow("SELECT * FROM reconciliation_runs WHERE run_id = $1", run_id)
    if r is None:
        return None
    return clearing_pb2.ReconcileReport(
        channel=r["channel"], business_date=r["business_date"].isoformat(), lines=r["lines"], matched=r["matched"],
        statement_net=r["statement_net"], journal_net=r["journal_net"], run_id=str(run_id),
        fee_tolerance=r["fee_tolerance"], **json.loads(r["counts"]),
    )


async def discrepancies(conn: asyncpg.Connection, run_id: int, type_: str, after_seq: int,
                        limit: int) -> list[tuple[int, Found, str]]:
    """A page of a run's discrepancies, in order, each with the decision that resolved it ('' if open)."""
    rows = await conn.fetch(
        """SELECT d.*, coalesce(r.decision, '') AS resolution FROM reconciliation_discrepancies d
           LEFT JOIN reconciliation_resolutions r ON r.run_id = d.run_id AND r.channel_txn_id = d.channel_txn_id
           WHERE d.run_id = $1 AND ($2 = '' OR d.type = $2) AND d.seq > $3 ORDER BY d.seq LIMIT $4""",
        run_id, type_, after_seq, limit,
    )
    return [(r["seq"], _found(r), r["resolution"]) for r in rows]


async def discrepancies_of(conn: asyncpg.Connection, run_id: int, channel_txn_id: str) -> list[Found]:
    rows = await conn.fetch(
        "SELECT * FROM reconciliation_discrepancies WHERE run_id = $1 AND channel_txn_id = $2 ORDER BY seq",
        run_id, channel_txn_id,
    )
    return [_found(r) for r in rows]


def _found(r: asyncpg.Record) -> Found:
    return Found(r["type"], r["channel_txn_id"], r["kind"], r["statement_amount"], r["journal_amount"],
                 r["statement_fee"], r["journal_fee"], r["statement_status"], r["journal_status"], r["message"],
                 json.loads(r["detail"]))
