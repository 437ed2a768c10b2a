"""UnionPay's merchant reconciliation file, the ZM file (INN<yymmdd>88ZM_<merId>) of the daily zip.

Fixed-width GBK records, one per line, fields separated by one byte, laid out as in
《全渠道平台接入接口规范 第3部分 文件接口》 6.1 (the ACP SDK's DemoBase.parseZMFile uses the same
widths). The fields read here: 交易传输时间 (MMDDhhmmss), 交易金额 (12-digit fen), 查询流水号
(queryId), 商户订单号, 商户手续费, 交易类型 (txnType), 原交易查询流水号 (origQryId) and 商户代码.
Slicing is on bytes because free-text fields may hold GBK Chinese. The file lists cleared
transactions only, and has no totals line, so there is no summary to check; every record's
merchant code must be the configured one.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from itertools import accumulate

from ext.beijing import TimeInvalid, day_start_ms, month_day_ms
from ext.beijing import business_date as check_date
from ext.errors import AmountInvalid, StatementInvalid
from ext.money import parse_padded_fen
from ext.records import StatementLine

# Widths of the ZM record's fields, in order, from the interface specification.
WIDTHS = (
    3,
    11,
    11,
    6,
    10,
    19,
    12,
    4,
    2,
    21,
    2,
    32,
    2,
    6,
    10,
    13,
    13,
    4,
    15,
    2,
    2,
    6,
    2,
    4,
    32,
    1,
    21,
    15,
)
FIELD_SEPARATOR_BYTES = 1
_STARTS = tuple(accumulate((w + FIELD_SEPARATOR_BYTES for w in WIDTHS[:-1]), initial=0))
TXN_TIME, TXN_AMT, QUERY_ID, ORDER_ID, MER_CHARGE, TXN_TYPE, ORIG_QRY_ID, MER_ID = (
    4,
    6,
    9,
    11,
    15,
    19,
    26,
    27,
)
RECORD_MIN_BYTES = _STARTS[MER_ID] + WIDTHS[MER_ID]
PAYMENT_TXN_TYPES = ("01",)
REFUND_TXN_TYPES = ("04", "31")  # 退货, 消费撤销
STATEMENT_LINES_MAX = 50_000_000
NOON_MS = 12 * 3600 * 1000
# 商户手续费 is 13 characters: an optional credit/debit indicator and the fen digits.
_FEE_RE = re.compile(r"[CD+-]?([0-9]{1,13})", re.ASCII)


def parse_zm(data: bytes, *, mer_id: str, business_date: str | None) -> Iterator[StatementLine]:
    if business_date is None:
        raise StatementInvalid(
            "a ZM file has no year: pass business_date (the settleDate downloaded)"
        )
    try:
        reference_ms = day_start_ms(check_date(business_date)) + NOON_MS
    except TimeInvalid as exc:
        raise StatementInvalid(str(exc)) from exc
    count = 0
    for line_no, raw in enumerate(io.BytesIO(data), start=1):
        record = raw.rstrip(b"\r\n")
        if not record.strip():
            continue
        count += 1
        if count > STATEMENT_LINES_MAX:
            raise StatementInvalid(f"more than {STATEMENT_LINES_MAX} records", line_no=line_no)
        try:
            yield _line(record, mer_id, business_date, reference_ms)
        except (AmountInvalid, TimeInvalid, UnicodeDecodeError, ValueError) as exc:
            raise StatementInvalid(str(exc), line_no=line_no) from exc


def _field(record: bytes, index: int) -> str:
    start = _STARTS[index]
    return record[start : start + WIDTHS[index]].decode("ascii").strip()


def _line(record: bytes, mer_id: str, business_date: str, reference_ms: int) -> StatementLine:
    if len(record) < RECORD_MIN_BYTES:
        raise ValueError(f"record of {len(record)} bytes, at least {RECORD_MIN_BYTES} expected")
    if _field(record, MER_ID) != mer_id:
        raise ValueError(f"record of merchant {_field(record, MER_ID)!r}, not {mer_id!r}")
    fee = _FEE_RE.fullmatch(_field(record, MER_CHARGE))
    if fee is None:
        raise ValueError(f"商户手续费 is not an amount: {_field(record, MER_CHARGE)!r}")
    query_id, txn_type = _field(record, QUERY_ID), _field(record, TXN_TYPE)
    amount = parse_padded_fen(_field(record, TXN_AMT))
    time_ms = month_day_ms(_field(record, TXN_TIME), reference_ms)
    order_id = _field(record, ORDER_ID)
    if not query_id:
        raise ValueError("record without a 查询流水号 (queryId)")
    if txn_type in PAYMENT_TXN_TYPES:
        return StatementLine(
            "unionpay",
            business_date,
            query_id,
            "payment",
            amount,
            int(fee.group(1)),
            "success",
            time_ms,
            "",
            order_id,
        )
    if txn_type in REFUND_TXN_TYPES:
        original = _field(record, ORIG_QRY_ID)
        if not original:
            raise ValueError("refund record without 原交易查询流水号 (origQryId)")
        return StatementLine(
            "unionpay",
            business_date,
            query_id,
            "refund",
            amount,
            int(fee.group(1)),
            "success",
            time_ms,
            original,
            order_id,
        )
    raise ValueError(f"txnType {txn_type!r} is neither a payment nor a refund")
