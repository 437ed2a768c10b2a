"""The e-CNY daily statement, as fuelswitch defines it (no common operator format is public).

UTF-8 CSV, LF or CRLF line ends::

    #ECNY-STATEMENT,version=1,merchant_no=<merchant_no>,business_date=<YYYY-MM-DD>
    txn_no,event_type,orig_txn_no,merchant_order_no,amount,fee,status,finish_time
    E20250115000001,PAYMENT,,TOPUP-1,10000,6,SUCCESS,2025-01-15 10:00:00
    E20250115000002,REFUND,E20250115000001,TOPUP-1,2500,1,SUCCESS,2025-01-15 11:00:00
    #TOTAL,count=2,payment_amount=10000,refund_amount=2500,fee_amount=7

amount and fee are fen; finish_time is Beijing time; status SUCCESS is "success", FAIL and
CLOSED are "failed". The totals cover every line whatever its status and are checked.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from ext.beijing import TimeInvalid, dashed_ms
from ext.beijing import business_date as check_date
from ext.csv_rows import CsvRows
from ext.errors import AmountInvalid, StatementInvalid, SummaryMismatch
from ext.money import parse_fen
from ext.records import Kind, StatementLine, Status

HEADER = (
    "txn_no",
    "event_type",
    "orig_txn_no",
    "merchant_order_no",
    "amount",
    "fee",
    "status",
    "finish_time",
)
STATUSES: dict[str, Status] = {"SUCCESS": "success", "FAIL": "failed", "CLOSED": "failed"}
KINDS: dict[str, Kind] = {"PAYMENT": "payment", "REFUND": "refund"}
TOTAL_KEYS = ("count", "payment_amount", "refund_amount", "fee_amount")
STATEMENT_LINES_MAX = 50_000_000


def parse_ecny_statement(
    data: bytes, *, merchant_no: str, business_date: str | None
) -> Iterator[StatementLine]:
    rows = CsvRows(_utf8_lines(data))
    date = _preamble(rows, merchant_no, business_date)
    sums = dict.fromkeys(TOTAL_KEYS, 0)
    for cells in rows:
        if cells and cells[0] == "#TOTAL":
            _check_totals(cells, sums, rows.line_num)
            if any(any(rest) for rest in rows):
                raise StatementInvalid("text after the totals line", line_no=rows.line_num)
            return
        if not cells:
            continue
        if sums["count"] >= STATEMENT_LINES_MAX:
            raise StatementInvalid(f"more than {STATEMENT_LINES_MAX} lines", line_no=rows.line_num)
        try:
            line = _line(cells, date)
        except (AmountInvalid, TimeInvalid, ValueError) as exc:
            raise StatementInvalid(str(exc), line_no=rows.line_num) from exc
        sums["count"] += 1
        sums[f"{line.kind}_amount"] += line.amount
        sums["fee_amount"] += line.fee
        yield line
    raise SummaryMismatch("the #TOTAL line is missing: the statement is truncated")


def _line(cells: list[str], date: str) -> StatementLine:
    if len(cells) != len(HEADER):
        raise ValueError(f"{len(cells)} fields, expected {len(HEADER)}")
    txn_no, event, original, order, amount, fee, status, finish = cells
    if event not in KINDS or status not in STATUSES:
        raise ValueError(f"unknown event_type/status {event!r}/{status!r}")
    return StatementLine(
        "ecny",
        date,
        txn_no,
        KINDS[event],
        parse_fen(amount),
        parse_fen(fee),
        STATUSES[status],
        dashed_ms(finish),
        original,
        order,
    )


def _preamble(rows: Iterator[list[str]], merchant_no: str, wanted: str | None) -> str:
    first = next(rows, [])
    meta = dict(cell.split("=", 1) for cell in first[2:] if "=" in cell)
    if first[:2] != ["#ECNY-STATEMENT", "version=1"] or set(meta) != {
        "merchant_no",
        "business_date",
    }:
        raise StatementInvalid("not an e-CNY statement v1 (first line)", line_no=1)
    if meta["merchant_no"] != merchant_no:
        raise StatementInvalid(
            f"statement of merchant {meta['merchant_no']!r}, not {merchant_no!r}", line_no=1
        )
    if wanted is not None and wanted != meta["business_date"]:
        raise StatementInvalid(f"statement is for {meta['business_date']}, not {wanted}", line_no=1)
    if tuple(next(rows, [])) != HEADER:
        raise StatementInvalid("second line is not the column header", line_no=2)
    try:
        return check_date(meta["business_date"])
    except TimeInvalid as exc:
        raise StatementInvalid(str(exc), line_no=1) from exc


def _check_totals(cells: list[str], sums: dict[str, int], line_no: int) -> None:
    totals = dict(cell.split("=", 1) for cell in cells[1:] if "=" in cell)
    if set(totals) != set(TOTAL_KEYS):
        raise StatementInvalid(f"#TOTAL needs {', '.join(TOTAL_KEYS)}", line_no=line_no)
    for key in TOTAL_KEYS:
        try:
            total = parse_fen(totals[key])
        except AmountInvalid as exc:
            raise StatementInvalid(str(exc), line_no=line_no) from exc
        if total != sums[key]:
            raise SummaryMismatch(
                f"#TOTAL {key}={total} but the lines give {sums[key]}", line_no=line_no
            )


def _utf8_lines(data: bytes) -> Iterator[str]:
    for line_no, raw in enumerate(io.BytesIO(data), start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StatementInvalid("not UTF-8", line_no=line_no) from exc
