"""Settlement: per station and business day, what the network owes the station (docs/clearing.md).

A business day D runs from D at the cut-off hour (UTC+8) to D+1 at the cut-off hour. Once it has
ended, the first GetSettlement closes it (and every earlier day not closed yet) for the whole
network, in one PostgreSQL transaction: each settleable transaction recorded before the day's end
and not in a batch yet is stamped with its batch id, and the batch figures are stored. A stored
batch never changes. A transaction committed after its day was closed (its decision raced the
close) is still unstamped, so the next day's close takes it: it lands in the next batch, counted
in `late_count`. A day still open is computed on the fly from the unstamped transactions and
marked provisional.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import astuple, dataclass, fields

import asyncpg

CST = dt.timezone(dt.timedelta(hours=8))
DAY_MS = 86_400_000
_CST_OFFSET_MS = 8 * 3_600_000
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
SALE_KINDS = ("complete", "purchase", "offline_sale")
SETTLEABLE_KINDS = (*SALE_KINDS, "refund", "reversal")  # as in the transactions_unsettled index
BPS_DENOMINATOR = 10_000
# One key for "closing business days": concurrent closers (even in other processes) take turns.
CLOSE_LOCK_KEY = 0x5E771E  # arbitrary, fixed

_KINDS_SQL = ", ".join(f"'{k}'" for k in SETTLEABLE_KINDS)
_SALES_SQL = ", ".join(f"'{k}'" for k in SALE_KINDS)
_UNSETTLED = f"settlement_batch_id IS NULL AND station_id IS NOT NULL AND kind IN ({_KINDS_SQL})"

# Per station: sales; refunds net of reversals (a reversed sale is money back like a refund, a
# reversed refund takes a refund back); late = recorded before the batch's day began.
_FIGURES = f"""
SELECT a.station_id,
       count(*) FILTER (WHERE a.kind IN ({_SALES_SQL})) AS sales_count,
       coalesce(sum(a.amount) FILTER (WHERE a.kind IN ({_SALES_SQL})), 0)::bigint AS sales_amount,
       (count(*) FILTER (WHERE a.kind = 'refund' OR (a.kind = 'reversal' AND o.kind IN ({_SALES_SQL})))
        - count(*) FILTER (WHERE a.kind = 'reversal' AND o.kind = 'refund')) AS refunds_count,
       (coalesce(sum(a.amount) FILTER (WHERE a.kind = 'refund' OR (a.kind = 'reversal' AND o.kind IN ({_SALES_SQL}))), 0)
        - coalesce(sum(a.amount) FILTER (WHERE a.kind = 'reversal' AND o.kind = 'refund'), 0))::bigint AS refunds_amount,
       count(*) FILTER (WHERE a.recorded_ms < $3) AS late_count
FROM {{source}} a LEFT JOIN transactions o ON o.transaction_id = a.original_id
GROUP BY a.station_id
"""

# $1 business date, $2 end of the day (ms), $3 start of the day (ms), $4 fee bps, $5 now, $6 batch prefix
_CLOSE_DAY = f"""
WITH assigned AS (
    UPDATE transactions SET settlement_batch_id = $6 || station_id
    WHERE {_UNSETTLED} AND recorded_ms < $2
    RETURNING transaction_id, kind, station_id, amount, original_id, recorded_ms
), figures AS ({_FIGURES.format(source="assigned")})
INSERT INTO settlement_batches (batch_id, station_id, business_date, sales_count, sales_amount, refunds_count,
    refunds_amount, fees_amount, net_payable, fee_bps, late_count, closed_ms)
SELECT $6 || f.station_id, f.station_id, $1, f.sales_count, f.sales_amount, f.refunds_count, f.refunds_amount,
       fee.amount, f.sales_amount - f.refunds_amount - fee.amount, $4, f.late_count, $5
FROM figures f, LATERAL (SELECT (f.sales_amount * $4 + {BPS_DENOMINATOR // 2}) / {BPS_DENOMINATOR} AS amount) fee
"""

# Provisional: the same figures over the unstamped transactions up to the day's end ($2), from $1 on.
_PROVISIONAL = _FIGURES.format(
    source=f"(SELECT * FROM transactions WHERE {_UNSETTLED} AND recorded_ms < $2 AND recorded_ms >= $1)"
)


@dataclass(frozen=True)
class Batch:
    batch_id: str
    station_id: str
    business_date: str  # YYYY-MM-DD
    sales_count: int
    sales_amount: int
    refunds_count: int
    refunds_amount: int
    fees_amount: int
    net_payable: int
    fee_bps: int
    late_count: int
    final: bool
    closed_at_ms: int  # 0 when provisional


def business_day(ms: int, cutoff_hour: int) -> dt.date:
    """The business day a time (ms since epoch, UTC) falls in."""
    return (dt.datetime.fromtimestamp(ms / 1000, CST) - dt.timedelta(hours=cutoff_hour)).date()


def day_start_ms(day: dt.date, cutoff_hour: int) -> int:
    start = dt.datetime(day.year, day.month, day.day, cutoff_hour, tzinfo=CST)
    return int(start.timestamp()) * 1000


def cst_date(ms: int) -> dt.date:
    """The UTC+8 calendar date of a time: a channel's business date (channels cut at midnight)."""
    return dt.date.fromordinal(_EPOCH_ORDINAL + (ms + _CST_OFFSET_MS) // DAY_MS)  # integer math: bulk calls


def batch_prefix(day: dt.date) -> str:
    """Batch ids are `YYYYMMDD-station`: stable, and they sort by day."""
    return day.strftime("%Y%m%d-")


@dataclass(frozen=True)
class SettlementRules:
    cutoff_hour: int = 0
    fee_bps: int = 0


async def close_through(conn: asyncpg.Connection, last_day: dt.date, rules: SettlementRules, now_ms: int) -> int:
    """Close every business day up to `last_day` not closed yet; returns how many were closed."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CLOSE_LOCK_KEY)
        last_closed: dt.date | None = await conn.fetchval("SELECT max(business_date) FROM settlement_days")
        if last_closed is not None:
            day = last_closed + dt.timedelta(days=1)
        else:  # nothing closed ever: start at the oldest unstamped transaction (or at last_day)
            first_ms = await conn.fetchval(f"SELECT min(recorded_ms) FROM transactions WHERE {_UNSETTLED}")
            day = min(business_day(first_ms, rules.cutoff_hour), last_day) if first_ms is not None else last_day
        closed = 0
        while day <= last_day:
            start = day_start_ms(day, rules.cutoff_hour)
            end = day_start_ms(day + dt.timedelta(days=1), rules.cutoff_hour)
            await conn.execute(_CLOSE_DAY, day, end, start, rules.fee_bps, now_ms, batch_prefix(day))
            await conn.execute(
                "INSERT INTO settlement_days (business_date, cutoff_hour, end_ms, closed_ms) VALUES ($1, $2, $3, $4)",
                day, rules.cutoff_hour, end, now_ms,
            )
            closed += 1
            day += dt.timedelta(days=1)
        return closed


async def settlement(conn: asyncpg.Connection, day: dt.date, station_id: str, rules: SettlementRules,
                     now_ms: int) -> tuple[list[Batch], bool]:
    """The batches of `day` (one station, or all with activity) and whether they are final."""
    today = business_day(now_ms, rules.cutoff_hour)
    await close_through(conn, today - dt.timedelta(days=1), rules, now_ms)
    if day < today:
        rows = await conn.fetch(
            "SELECT * FROM settlement_batches WHERE business_date = $1 AND ($2 = '' OR station_id = $2)"
            " ORDER BY station_id", day, station_id,
        )
        return [_stored(r) for r in rows], True
    # Open: today takes every unstamped transaction (late ones included); a later day only its own.
    start = -(2**63) if day == today else day_start_ms(day, rules.cutoff_hour)
    end = day_start_ms(day + dt.timedelta(days=1), rules.cutoff_hour)
    rows = await conn.fetch(_PROVISIONAL, start, end, day_start_ms(day, rules.cutoff_hour))
    batches = [_provisional(r, day, rules.fee_bps) for r in rows if not station_id or r["station_id"] == station_id]
    return sorted(batches, key=lambda b: b.station_id), False


def _stored(r: asyncpg.Record) -> Batch:
    return Batch(r["batch_id"], r["station_id"], r["business_date"].isoformat(), r["sales_count"],
                 r["sales_amount"], r["refunds_count"], r["refunds_amount"], r["fees_amount"], r["net_payable"],
                 r["fee_bps"], r["late_count"], True, r["closed_ms"])


def _provisional(r: asyncpg.Record, day: dt.date, fee_bps: int) -> Batch:
    fees = (r["sales_amount"] * fee_bps + BPS_DENOMINATOR // 2) // BPS_DENOMINATOR
    return Batch(batch_prefix(day) + r["station_id"], r["station_id"], day.isoformat(), r["sales_count"],
                 r["sales_amount"], r["refunds_count"], r["refunds_amount"], fees,
                 r["sales_amount"] - r["refunds_amount"] - fees, fee_bps, r["late_count"], False, 0)


CSV_COLUMNS = tuple(f.name for f in fields(Batch))


def export_csv(batches: list[Batch]) -> bytes:
    """UTF-8, a header line, one line per batch, amounts in integer fen, `final` as true/false."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for batch in batches:
        writer.writerow(str(v).lower() if isinstance(v, bool) else v for v in astuple(batch))
    return out.getvalue().encode()


def export_name(day: dt.date, final: bool) -> str:
    return f"settlement-{day.isoformat()}{'' if final else '-provisional'}.csv"
