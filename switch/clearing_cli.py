"""`fuelswitch reconcile ...` and `fuelswitch settlement ...`: finance's commands over the Clearing API.

    fuelswitch reconcile --channel wechat --day 2025-03-01 --statement bill.csv [--json]
    fuelswitch reconcile list-discrepancies --run 12 [--type missing_here] [--json]
    fuelswitch reconcile resolve --run 12 --txn 4200000001 --decision credit --account 1001 --note "ticket 7"
    fuelswitch settlement --day 2025-03-01 [--station ST-0001] [--export settlement.csv] [--json]

The statement is parsed with the channel's own parser (ext/) and streamed through ReconcileChunks; a
statement that fails its own checks (a summary that does not add up, a truncated file) cancels the
stream, so the switch stores no run. Exit codes: 0 done (reconcile: no discrepancy), 1 reconcile
found discrepancies, 2 error (bad usage, invalid statement, the switch refused or was unreachable).
Money is printed in fen and as ¥ yuan, with integer arithmetic only; `--json` gives plain integers.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.message import Message
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ext.alipay_statement import parse_business_statement
from ext.ecny_statement import parse_ecny_statement
from ext.errors import ChannelError
from ext.records import CHANNELS, StatementLine
from ext.unionpay_zm import parse_zm
from ext.wechat_bill import parse_bill
from switch import operator_channel
from switch.admin_cli import DEFAULT_TARGET, ENV_TARGET, ENV_TOKEN, format_yuan_symbol
from switch.clearing_client import ClearingClient
from switch.reconcile import TYPES

EXIT_OK, EXIT_DISCREPANCIES, EXIT_ERROR = 0, 1, 2
DEFAULT_TIMEOUT_S = 300.0  # a million-line statement takes seconds; the default leaves ample room
DECISIONS = ("credit", "debit", "reverse", "accept")
# The merchant id a statement parser checks, by channel: the key in the channels TOML table.
MERCHANT_KEYS = {"unionpay": "mer_id", "ecny": "merchant_no"}


class UsageError(Exception):
    pass


def statement_lines(channel: str, data: bytes, day: str, merchant: str) -> Iterator[StatementLine]:
    """The channel's own statement parser (a lazy iterator: its summary check runs after the last line)."""
    if channel == "wechat":
        return parse_bill(data, business_date=day)
    if channel == "alipay":
        return parse_business_statement(data, business_date=day)
    if not merchant:
        raise UsageError(f"a {channel} statement is checked against the merchant id: "
                         "give --merchant or --channels-config")
    if channel == "unionpay":
        return parse_zm(data, mer_id=merchant, business_date=day)
    return parse_ecny_statement(data, merchant_no=merchant, business_date=day)


class _Watched:
    """Remembers the parser's error: gRPC swallows it (cancelling the stream) and says only 'cancelled'."""

    def __init__(self, lines: Iterable[StatementLine]) -> None:
        self.lines = lines
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[StatementLine]:
        try:
            yield from self.lines
        except Exception as exc:
            self.error = exc
            raise


# -- commands ------------------------------------------------------------------------------


async def reconcile(client: ClearingClient, args: argparse.Namespace, out: Output) -> int:
    data = sys.stdin.buffer.read() if args.statement == "-" else Path(args.statement).read_bytes()
    lines = _Watched(statement_lines(args.channel, data, args.day, _merchant(args)))
    try:
        report = await client.reconcile(lines, channel=args.channel, business_date=args.day)
    except asyncio.CancelledError:
        if lines.error is not None:
            raise lines.error from None
        raise
    found = list(report.discrepancies)
    if report.discrepancies_omitted:
        found = [d async for d in client.discrepancies(report.run_id)]
    if args.json:
        out.json({**_fields(report, skip=("discrepancies",)), "counts": {t: getattr(report, t) for t in TYPES},
                  "discrepancies": [_fields(d) for d in found]})
    else:
        out.print(Text(f"{report.channel} {report.business_date}: reconcile run {report.run_id}", style="bold"))
        out.print(Text(f"{report.lines} statement lines, {report.matched} matched; net "
                       f"{format_yuan_symbol(report.statement_net)} on the statement, "
                       f"{format_yuan_symbol(report.journal_net)} here; fee tolerance {report.fee_tolerance} fen"))
        counts = Table(box=box.SIMPLE, title="discrepancies by type", title_justify="left")
        counts.add_column("type")
        counts.add_column("count", justify="right")
        for t in TYPES:
            counts.add_row(t, str(getattr(report, t)))
        counts.add_row(Text("total", style="bold"), str(len(found)))
        out.print(counts)
        if found:
            out.print(_discrepancy_table(found))
            out.print(Text(f"decide each with: fuelswitch reconcile resolve --run {report.run_id} --txn ID "
                           f"--decision {'|'.join(DECISIONS)}"))
    return EXIT_DISCREPANCIES if found else EXIT_OK


async def list_discrepancies(client: ClearingClient, args: argparse.Namespace, out: Output) -> int:
    found = [d async for d in client.discrepancies(args.run, args.type or "")]
    if args.json:
        out.json({"run_id": args.run, "discrepancies": [_fields(d) for d in found]})
    else:
        out.print(_discrepancy_table(found))
    return EXIT_OK


async def resolve(client: ClearingClient, args: argparse.Namespace, out: Output) -> int:
    answer = await client.resolve(args.run, args.txn, args.decision, operator=args.operator,
                                  account_id=args.account or "", note=args.note or "")
    if args.json:
        out.json(_fields(answer))
    else:
        moved = f"; transaction {answer.transaction_id}" if answer.transaction_id else ""
        account = (f"; account {answer.account_id} balance {format_yuan_symbol(answer.balance)}"
                   if answer.account_id else "")
        out.print(Text(f"{args.txn} of run {args.run}: {answer.result} ({answer.message}){moved}{account}"))
    return EXIT_OK


async def settlement(client: ClearingClient, args: argparse.Namespace, out: Output) -> int:
    answer = await client.settlement(args.day, args.station or "")
    if args.export == "-":
        out.stream.write(answer.export_csv.decode())
        return EXIT_OK
    if args.export:
        path = Path(args.export)
        path = path / answer.export_name if path.is_dir() else path
        path.write_bytes(answer.export_csv)
    if args.json:
        out.json({"business_date": args.day, "final": answer.final, "export_name": answer.export_name,
                  "batches": [_fields(b) for b in answer.batches]})
        return EXIT_OK
    state = "final" if answer.final else "provisional: the day is still open"
    table = Table(box=box.SIMPLE, title=f"settlement {args.day} ({state})", title_justify="left")
    for column in ("batch", "station", "sales", "refunds", "fees", "net payable", "late"):
        table.add_column(column, justify="left" if column in ("batch", "station") else "right")
    for b in answer.batches:
        table.add_row(Text(b.batch_id), Text(b.station_id), f"{b.sales_count} / {format_yuan_symbol(b.sales_amount)}",
                      f"{b.refunds_count} / {format_yuan_symbol(b.refunds_amount)}",
                      format_yuan_symbol(b.fees_amount), format_yuan_symbol(b.net_payable), str(b.late_count))
    out.print(table if answer.batches else Text(f"settlement {args.day}: no station activity ({state})"))
    if args.export:
        out.print(Text(f"written: {path}"))
    return EXIT_OK


def _discrepancy_table(found: list[Any]) -> Table:
    table = Table(box=box.SIMPLE)
    for column in ("seq", "type", "channel_txn_id", "kind", "statement fen", "here fen", "fee (stmt/here)",
                   "status (stmt/here)", "resolution", "message"):
        table.add_column(column, overflow="fold")
    for d in found:
        table.add_row(str(d.seq), d.type, Text(d.channel_txn_id), d.kind, str(d.statement_amount),
                      str(d.journal_amount), f"{d.statement_fee}/{d.journal_fee}",
                      f"{d.statement_status or '-'}/{d.journal_status or '-'}", d.resolution or "",
                      Text(d.message))
    return table


def _fields(message: Message, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A flat message as a dict of plain values (int64 stays an integer, unlike proto3 JSON)."""
    return {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields if f.name not in skip}


def _merchant(args: argparse.Namespace) -> str:
    if args.merchant or args.channel not in MERCHANT_KEYS:
        return args.merchant or ""
    if not args.channels_config:
        return ""
    with open(args.channels_config, "rb") as f:
        return str(tomllib.load(f).get(args.channel, {}).get(MERCHANT_KEYS[args.channel], ""))


# -- command line --------------------------------------------------------------------------


class Output:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.console = Console(file=stream, markup=False, emoji=False, highlight=False, width=None if tty else 200)

    def print(self, renderable: Any) -> None:
        self.console.print(renderable)

    def json(self, document: Any) -> None:
        json.dump(document, self.stream, indent=2, ensure_ascii=False)
        self.stream.write("\n")


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help=f"switch address (${ENV_TARGET}; default {DEFAULT_TARGET})")
    parser.add_argument("--token", help=f"operator token (prefer ${ENV_TOKEN}: command lines are visible)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline of each call, s")
    parser.add_argument("--json", action="store_true", help="one JSON document for scripts")
    operator_channel.add_tls_arguments(parser)


def _parsers() -> dict[str, tuple[argparse.ArgumentParser, Callable[..., Any]]]:
    epilog = "exit codes: 0 no discrepancy, 1 discrepancies found, 2 error"
    run = argparse.ArgumentParser(
        prog="fuelswitch reconcile", epilog=epilog + "; also: fuelswitch reconcile list-discrepancies|resolve --help",
        description="Reconcile one channel statement of one business day against the switch's journal. "
                    "Moves no money.")
    run.add_argument("--channel", required=True, choices=CHANNELS)
    run.add_argument("--day", required=True, metavar="YYYY-MM-DD", help="the statement's business date (UTC+8)")
    run.add_argument("--statement", required=True, metavar="FILE", help="the channel's statement file as downloaded "
                     "(WeChat trade bill, Alipay 业务明细 CSV, UnionPay ZM file, e-CNY CSV); - for stdin")
    run.add_argument("--merchant", help="merchant id the statement must be for (unionpay mer_id, ecny merchant_no)")
    run.add_argument("--channels-config", dest="channels_config", metavar="FILE",
                     help="the `channels serve` TOML, to take the merchant id from")
    _connection(run)

    listing = argparse.ArgumentParser(prog="fuelswitch reconcile list-discrepancies",
                                      description="Every discrepancy of a reconcile run, with its resolution.")
    listing.add_argument("--run", required=True, metavar="RUN_ID")
    listing.add_argument("--type", choices=TYPES)
    _connection(listing)

    decide = argparse.ArgumentParser(
        prog="fuelswitch reconcile resolve",
        description="Decide one discrepancy of a run: credit (a missing_here payment, to --account), debit (a "
                    "missing_here refund), reverse (a payment the channel lacks or failed), accept (no money "
                    "moves). Each is decided once; money moves through the exactly-once paths.")
    decide.add_argument("--run", required=True, metavar="RUN_ID")
    decide.add_argument("--txn", required=True, metavar="CHANNEL_TXN_ID", help="the discrepancy's channel id")
    decide.add_argument("--decision", required=True, choices=DECISIONS)
    decide.add_argument("--account", metavar="ACCOUNT_ID", help="account to credit (credit only)")
    decide.add_argument("--operator", default=_login(), help="who decides, kept in the audit trail "
                        "(default: the login name)")
    decide.add_argument("--note", help="why, kept in the audit trail")
    _connection(decide)

    settle = argparse.ArgumentParser(
        prog="fuelswitch settlement", epilog="exit codes: 0 ok, 2 error",
        description="What the network owes each station for a business day (provisional until the day closes).")
    settle.add_argument("--day", required=True, metavar="YYYY-MM-DD")
    settle.add_argument("--station", help="one station (default: every station with activity)")
    settle.add_argument("--export", metavar="FILE", help="write the CSV export there (a directory: under its "
                        "suggested name; - prints the CSV alone)")
    _connection(settle)
    return {"reconcile": (run, reconcile), "list-discrepancies": (listing, list_discrepancies),
            "resolve": (decide, resolve), "settlement": (settle, settlement)}


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def main(argv: list[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """`argv` starts with "reconcile" or "settlement"; returns the exit code."""
    out, err = Output(stdout or sys.stdout), stderr or sys.stderr
    name = argv[1] if argv[:1] == ["reconcile"] and argv[1:2] in (["list-discrepancies"], ["resolve"]) else argv[0]
    parser, command = _parsers()[name]
    try:
        args = parser.parse_args(argv[2:] if name in ("list-discrepancies", "resolve") else argv[1:])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    token = (args.token or os.environ.get(ENV_TOKEN) or "").strip()
    if not token:
        print(f"error: no operator token: pass --token or set {ENV_TOKEN}", file=err)
        return EXIT_ERROR
    target = args.target or os.environ.get(ENV_TARGET) or DEFAULT_TARGET

    async def run() -> int:
        async with operator_channel.aio_channel(target, args) as channel:
            return int(await command(ClearingClient(channel, token, timeout_s=args.timeout), args, out))

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details() or ''}".rstrip(), file=err)
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            print(f"(no answer from the switch at {target})", file=err)
    except ChannelError as exc:
        print(f"error: the statement is not a valid {getattr(args, 'channel', '')} statement: {exc}", file=err)
        print("nothing was reconciled (no run stored)", file=err)
    except (UsageError, OSError, ValueError) as exc:  # ValueError includes operator_channel.TlsOptionsError
        print(f"error: {exc}", file=err)
    return EXIT_ERROR
