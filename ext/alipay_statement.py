"""Alipay's business statement (业务明细, bill_type 'trade'), the '_业务明细.csv' of the zip.

GBK text. Comment lines start with '#': a title, the account, the period
(``#起始日期：[2016年06月07日 00:00:00]   终止日期：[2016年06月08日 00:00:00]``), and a ruler
``#----...业务明细列表----...``. Then a CSV header (支付宝交易号,商户订单号,业务类型,...,
订单金额（元）,商家实收（元）,...,退款批次号/请求号,服务费（元）,...), one line per 交易 (payment) or
退款 (refund) with fields padded by tabs, the closing ruler ``#----...业务明细列表结束----...`` and the
totals ``#交易合计：N笔，商家实收共X元，...`` and ``#退款合计：N笔，商家实收退款共-Y元，...`` (older files
write ``商家实收：X元``). Both totals are checked against the lines (count and 商家实收).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator

from ext.beijing import TimeInvalid, dashed_ms
from ext.beijing import business_date as check_date
from ext.csv_rows import CsvRows
from ext.errors import AmountInvalid, StatementInvalid, SummaryMismatch
from ext.money import yuan_to_fen
from ext.records import Kind, StatementLine

REQUIRED = (
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "完成时间",
    "订单金额（元）",
    "商家实收（元）",
    "退款批次号/请求号",
    "服务费（元）",
)
KINDS: dict[str, Kind] = {"交易": "payment", "退款": "refund"}
STATEMENT_LINES_MAX = 50_000_000
MEMO_ENTRIES_MAX = 1 << 18
_PERIOD_RE = re.compile(r"起始日期：\[([0-9]{4})年([0-9]{2})月([0-9]{2})日")
_TOTAL_RE = re.compile(
    r"#(交易|退款)合计：([0-9]+)笔，商家实收(?:退款)?[共：](-?[0-9]+(?:\.[0-9]+)?)元"
)
_END_MARK = "业务明细列表结束"


def parse_business_statement(
    data: bytes, *, business_date: str | None = None
) -> Iterator[StatementLine]:
    lines = _gbk_lines(data)
    date, columns = _preamble(lines, business_date)
    body = _Body(lines)
    i_trade, i_order, i_type, i_time, i_amount, i_received, i_request, i_fee = (
        columns[name] for name in REQUIRED
    )
    width = len(columns)
    counts = {"交易": 0, "退款": 0}
    received = {"交易": 0, "退款": 0}  # sum of 商家实收, fen, signed as printed
    # Amounts and times repeat heavily within a day: each distinct text is converted once.
    fens: dict[str, int] = {}
    fees: dict[str, int] = {}
    times: dict[str, int] = {}
    for cells in CsvRows(body, lambda: body.line_no):
        try:
            if len(cells) != width:
                raise ValueError(f"{len(cells)} fields, the header has {width}")
            # Fields are tab-padded so spreadsheets keep ids as text.
            business_type = cells[i_type].strip()
            kind = KINDS.get(business_type)
            if kind is None:
                raise ValueError(f"unknown 业务类型 {business_type!r}")
            counts[business_type] += 1
            if counts[business_type] > STATEMENT_LINES_MAX:
                raise ValueError(f"more than {STATEMENT_LINES_MAX} lines")
            received[business_type] += _memo(fens, cells[i_received], _signed_fen)
            amount = abs(_memo(fens, cells[i_amount], _signed_fen))
            fee = abs(_memo(fees, cells[i_fee], _fee_fen))
            time_ms = _memo(times, cells[i_time], dashed_ms)
            trade_no, order = cells[i_trade].strip(), cells[i_order].strip()
            if kind == "payment":
                yield StatementLine(
                    "alipay", date, trade_no, kind, amount, fee, "success", time_ms, "", order
                )
                continue
            request_no = cells[i_request].strip()
            if not request_no or not amount:
                raise ValueError("a refund line needs 退款批次号/请求号 and a non-zero 订单金额")
        except (AmountInvalid, TimeInvalid, ValueError) as exc:
            raise StatementInvalid(str(exc), line_no=body.line_no) from exc
        # Same key as the refund notification: request numbers are unique only within a trade.
        refund_id = f"{trade_no}:{request_no}"
        yield StatementLine(
            "alipay", date, refund_id, kind, amount, fee, "success", time_ms, trade_no, order
        )
    if not body.ended:
        raise SummaryMismatch(
            "the closing ruler and totals are missing: the statement is truncated"
        )
    _check_totals(lines, counts, received)


def _signed_fen(text: str) -> int:
    return yuan_to_fen(text, negative_ok=True)


def _fee_fen(text: str) -> int:
    return yuan_to_fen(text or "0", negative_ok=True)  # blank when there is no service fee


def _memo(memo: dict[str, int], cell: str, convert: Callable[[str], int]) -> int:
    value = memo.get(cell)
    if value is None:
        if len(memo) >= MEMO_ENTRIES_MAX:
            memo.clear()
        value = memo[cell] = convert(cell.strip())
    return value


class _Body:
    """The CSV lines between the header and the closing ruler, for csv.reader to split."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self.lines = lines
        self.line_no = 0
        self.ended = False

    def __iter__(self) -> Iterator[str]:
        for line_no, line in self.lines:
            self.line_no = line_no
            if line.startswith("#"):
                if _END_MARK not in line:
                    raise StatementInvalid("comment inside the line list", line_no=self.line_no)
                self.ended = True
                return
            if line.strip():
                yield line


def _preamble(lines: Iterator[tuple[int, str]], wanted: str | None) -> tuple[str, dict[str, int]]:
    """(business date, column name -> index) from the comment lines and the header line."""
    date = ""
    for line_no, line in lines:
        if line.startswith("#"):
            match = _PERIOD_RE.search(line)
            if match:
                date = "-".join(match.groups())
            continue
        if not line.strip():
            continue
        names = [name.strip() for name in _header_cells(line, line_no)]
        columns = {name: index for index, name in enumerate(names)}
        missing = [name for name in REQUIRED if name not in columns]
        if missing or len(columns) != len(names):
            raise StatementInvalid(
                f"header lacks {', '.join(missing) or 'unique names'}", line_no=line_no
            )
        return _business_date(date, wanted, line_no), columns
    raise StatementInvalid("no header line")


def _header_cells(line: str, line_no: int) -> list[str]:
    return next(CsvRows((line.lstrip("\ufeff"),), lambda: line_no))


def _business_date(found: str, wanted: str | None, line_no: int) -> str:
    if wanted is not None and found and wanted != found:
        raise StatementInvalid(f"statement is for {found}, not {wanted}", line_no=line_no)
    date = found or wanted
    if not date:
        raise StatementInvalid(
            "no 起始日期 in the header and no business_date given", line_no=line_no
        )
    try:
        return check_date(date)
    except TimeInvalid as exc:
        raise StatementInvalid(str(exc), line_no=line_no) from exc


def _check_totals(
    lines: Iterator[tuple[int, str]], counts: dict[str, int], received: dict[str, int]
) -> None:
    seen: set[str] = set()
    for line_no, line in lines:
        match = _TOTAL_RE.match(line)
        if match is None:
            continue  # 导出时间 and other notes
        business_type, count, amount = match.groups()
        try:
            total = yuan_to_fen(amount, negative_ok=True)
        except AmountInvalid as exc:
            raise StatementInvalid(str(exc), line_no=line_no) from exc
        if int(count) != counts[business_type] or total != received[business_type]:
            raise SummaryMismatch(
                f"{business_type}合计 {count}笔 {amount}元 but the lines give "
                f"{counts[business_type]}笔 {received[business_type]} fen",
                line_no=line_no,
            )
        seen.add(business_type)
    if seen != set(KINDS):
        raise SummaryMismatch(f"totals missing for {', '.join(sorted(set(KINDS) - seen))}")


def _gbk_lines(data: bytes) -> Iterator[tuple[int, str]]:
    for line_no, raw in enumerate(io.BytesIO(data), start=1):
        try:
            yield line_no, raw.decode("gbk").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise StatementInvalid("not GBK text", line_no=line_no) from exc
