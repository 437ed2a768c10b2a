"""WeChat Pay's daily trade bill (交易账单, API v2 downloadbill / v3 tradebill, bill_type ALL).

UTF-8 text, optionally with a BOM: a header line of column names; one line per payment or refund
with every field prefixed by a backtick (`) so spreadsheets keep ids as text; then the summary
header (总交易单数,应结订单总金额,退款总金额,...) and one summary line, backticked too. Amounts are
yuan with two decimals, fees with five ("0.01000"). Columns are found by name, so older bills
without 订单金额/申请退款金额 still parse.

A refund is its own line (交易状态 REFUND) carrying 微信退款单号 and the original 微信订单号.
Every total of the summary is checked against the sum of the lines (signed, exact); the check
runs after the last line has been yielded, so consumers must wait for the iterator to finish.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from ext.beijing import TimeInvalid, dashed_ms, date_of_ms
from ext.beijing import business_date as check_date
from ext.errors import AmountInvalid, StatementInvalid, SummaryMismatch
from ext.money import yuan_to_fen
from ext.records import StatementLine, Status

SUMMARY_FIRST_COLUMN = "总交易单数"
PAYMENT_STATES = frozenset({"SUCCESS", "REVOKED", "CLOSED", "NOTPAY", "USERPAYING", "PAYERROR"})
FEE_COLUMN = "手续费"
FEE_PLACES_MAX = 5
# Each sum is a (line column, summary column): the summary must equal the sum of the column.
SUMS = (
    ("应结订单金额", "应结订单总金额"),
    ("退款金额", "退款总金额"),
    ("充值券退款金额", "充值券退款总金额"),
    ("手续费", "手续费总金额"),
    ("订单金额", "订单总金额"),
    ("申请退款金额", "申请退款总金额"),
)
REQUIRED = (
    "交易时间",
    "微信订单号",
    "商户订单号",
    "交易状态",
    "应结订单金额",
    "微信退款单号",
    "退款金额",
    "退款状态",
    "手续费",
)
STATEMENT_LINES_MAX = 50_000_000
# Distinct amount and time texts remembered; a day has 86 400 seconds and few distinct amounts.
MEMO_ENTRIES_MAX = 1 << 18


def parse_bill(data: bytes, *, business_date: str | None = None) -> Iterator[StatementLine]:
    lines = _text_lines(data)
    line_no, header = _first_line(lines)
    if header is None:
        raise StatementInvalid("empty bill: no header line")
    columns = _columns(header.lstrip("\ufeff"), line_no)
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise StatementInvalid(f"bill header lacks {', '.join(missing)}", line_no=line_no)
    try:
        date = None if business_date is None else check_date(business_date)
    except TimeInvalid as exc:
        raise StatementInvalid(str(exc)) from exc
    rows = _Rows(columns, date)
    yield from rows.parse(lines)
    if rows.summary is None:
        raise SummaryMismatch("the summary lines are missing: the bill is truncated")
    _check_summary(lines, *rows.summary, rows)


class _Rows:
    """Turns backticked lines into StatementLines, keeping the running sums for the summary.

    Built for a million lines a day: the loop works on locals only, and amounts and times, which
    repeat heavily (zeros, fees, the 86 400 seconds of a day), are converted once per distinct
    text and memoized for the rest of the file.
    """

    def __init__(self, columns: dict[str, int], business_date: str | None) -> None:
        self.columns = columns
        self.business_date = business_date
        # The fee column has five decimal places ("0.01000"); every other amount has two.
        self.names = [col for col, _ in SUMS if col in columns and col != FEE_COLUMN]
        self.sums = [0] * len(self.names)
        self.fee_sum = 0
        self.count = 0
        self.summary: tuple[int, str] | None = None

    def totals(self) -> dict[str, int]:
        """Line column -> sum of its amounts, fen."""
        return {**dict(zip(self.names, self.sums, strict=True)), FEE_COLUMN: self.fee_sum}

    def parse(self, lines: Iterator[tuple[int, str]]) -> Iterator[StatementLine]:
        columns, names = self.columns, self.names
        width = len(columns)
        amount_columns = [(k, columns[name]) for k, name in enumerate(names)]
        values = [0] * len(names)
        memo: dict[str, int] = {}
        memo_get = memo.get
        fee_memo: dict[str, int] = {}
        times: dict[str, int] = {}
        i_time, i_txn, i_order, i_fee = (
            columns[name] for name in ("交易时间", "微信订单号", "商户订单号", FEE_COLUMN)
        )
        i_state, i_refund_id, i_refund_state = (
            columns[name] for name in ("交易状态", "微信退款单号", "退款状态")
        )
        k_payment = names.index("订单金额" if "订单金额" in names else "应结订单金额")
        k_refund = names.index("申请退款金额" if "申请退款金额" in names else "退款金额")
        sums, fee_sum, date, count = self.sums, 0, self.business_date, 0
        for line_no, line in lines:
            if not line:
                continue
            if line.startswith(SUMMARY_FIRST_COLUMN):
                self.summary = (line_no, line)
                break
            try:
                # Splitting on ",`" drops the backticks and keeps a comma inside a field (a
                # product name) in its field; a field without its backtick changes the count.
                if line[:1] != "`":
                    raise ValueError("the line does not start with a backtick")
                cells = line[1:].split(",`")
                if len(cells) != width:
                    raise ValueError(f"{len(cells)} backticked fields, the header has {width}")
                for k, index in amount_columns:
                    text = cells[index]
                    fen = memo_get(text)
                    if fen is None:
                        fen = _memoized(memo, text, 2)
                    values[k] = fen
                    sums[k] += fen
                fee = fee_memo.get(cells[i_fee])
                if fee is None:
                    fee = _memoized(fee_memo, cells[i_fee], FEE_PLACES_MAX)
                fee_sum += fee
                time_ms = times.get(cells[i_time])
                if time_ms is None:
                    time_ms = _memoized(times, cells[i_time], 0)
                if date is None:
                    # The bill itself has no date: without the caller's, the first line's day is used.
                    date = date_of_ms(time_ms)
                state = cells[i_state]
                if state == "REFUND":
                    if values[k_refund] <= 0:
                        raise ValueError("a refund line without a refund amount")
                    # PROCESSING, CHANGE (abnormal), REFUNDCLOSE: no money returned as of this bill.
                    status: Status = "success" if cells[i_refund_state] == "SUCCESS" else "failed"
                    line_out = StatementLine(
                        "wechat",
                        date,
                        cells[i_refund_id],
                        "refund",
                        values[k_refund],
                        abs(fee),
                        status,
                        time_ms,
                        cells[i_txn],
                        cells[i_order],
                    )
                elif state in PAYMENT_STATES:
                    line_out = StatementLine(
                        "wechat",
                        date,
                        cells[i_txn],
                        "payment",
                        values[k_payment],
                        abs(fee),
                        "success" if state == "SUCCESS" else "failed",
                        time_ms,
                        "",
                        cells[i_order],
                    )
                else:
                    raise ValueError(f"unknown 交易状态 {state!r}")
            except (AmountInvalid, TimeInvalid, ValueError) as exc:
                raise StatementInvalid(str(exc), line_no=line_no) from exc
            count += 1
            if count > STATEMENT_LINES_MAX:
                raise StatementInvalid(f"more than {STATEMENT_LINES_MAX} lines", line_no=line_no)
            yield line_out
        # Only a bill read to its end gets its summary checked, so the sums are published here.
        self.sums, self.fee_sum, self.count = sums, fee_sum, count


def _memoized(memo: dict[str, int], cell: str, places_max: int) -> int:
    """Convert an amount (places_max > 0) or time (0) cell the memo missed, and remember it."""
    if len(memo) >= MEMO_ENTRIES_MAX:
        memo.clear()
    value = memo[cell] = (
        yuan_to_fen(cell, negative_ok=True, places_max=places_max)
        if places_max
        else dashed_ms(cell)
    )
    return value


def _check_summary(lines: Iterator[tuple[int, str]], line_no: int, header: str, row: _Rows) -> None:
    names = _columns(header, line_no)
    values_no, values_line = _first_line(lines)
    if values_line is None:
        raise SummaryMismatch("the summary values line is missing", line_no=line_no)
    cells = values_line.split(",")
    if len(cells) != len(names) or any(cell[:1] != "`" for cell in cells):
        raise StatementInvalid("summary line does not match its header", line_no=values_no)
    summary = {name: cells[index][1:] for name, index in names.items()}
    sums = row.totals()
    try:
        text = summary.get(SUMMARY_FIRST_COLUMN, "")
        count = int(text) if text.isascii() and text.isdigit() else -1
        if count != row.count:
            raise SummaryMismatch(f"总交易单数 {count} but {row.count} lines", line_no=values_no)
        for line_col, summary_col in SUMS:
            if line_col in sums and summary_col not in summary:
                raise StatementInvalid(f"the summary lacks {summary_col}", line_no=line_no)
            if line_col in sums:
                total = yuan_to_fen(
                    summary[summary_col], negative_ok=True, places_max=FEE_PLACES_MAX
                )
                if total != sums[line_col]:
                    raise SummaryMismatch(
                        f"{summary_col} {summary[summary_col]} but the lines sum to {sums[line_col]} fen",
                        line_no=values_no,
                    )
    except AmountInvalid as exc:
        raise StatementInvalid(str(exc), line_no=values_no) from exc
    trailing_no, trailing = _first_line(lines)
    if trailing is not None:
        raise StatementInvalid("text after the summary", line_no=trailing_no)


def _columns(header: str, line_no: int) -> dict[str, int]:
    names = [name.strip() for name in header.split(",")]
    if len(set(names)) != len(names):
        raise StatementInvalid("repeated column name", line_no=line_no)
    return {name: index for index, name in enumerate(names)}


def _first_line(lines: Iterator[tuple[int, str]]) -> tuple[int, str | None]:
    """The next non-blank line, or (0, None) at the end."""
    for line_no, line in lines:
        if line:
            return line_no, line
    return 0, None


def _text_lines(data: bytes) -> Iterator[tuple[int, str]]:
    # Line by line from the buffer: a 1M-line bill is never held twice in memory.
    for line_no, raw in enumerate(io.BytesIO(data), start=1):
        try:
            yield line_no, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise StatementInvalid("not UTF-8", line_no=line_no) from exc
