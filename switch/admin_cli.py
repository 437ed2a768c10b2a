"""`fuelswitch admin ...`: the operator command line, a thin client over the CardAdmin gRPC API.

Every call carries the operator credential as gRPC metadata `authorization: Bearer <token>`
(CONTRACT.md, CardAdmin). Money is integer fen everywhere (docs/pos-protocol.md §1): amounts
are read as fen (or as yuan with at most two decimals, converted exactly with Decimal) and
shown as fen and as ¥ yuan formatted with integer arithmetic only — no float touches money.

The full PAN is printed only by `issue-card`, the one response that carries it; every other
command shows `masked_pan` and drops a `pan` the server should not have sent anyway.

Exit codes: 0 success, 1 the server refused the call (any gRPC status other than the two
below), 2 bad usage (nothing was sent), 3 the switch is unreachable or did not answer in time
(UNAVAILABLE, DEADLINE_EXCEEDED). Errors go to stderr as `error: <STATUS_CODE>: <details>`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import getpass
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

import grpc
from fuelswitch.v1 import admin_pb2, admin_pb2_grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from switch import operator_channel
from switch.operator_channel import ENV_TLS_CA

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

ENV_TARGET = "FUELSWITCH_TARGET"
ENV_TOKEN = "FUELSWITCH_OPERATOR_TOKEN"
DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 10.0

INT64_MAX = 2**63 - 1
OFFLINE_COUNT_MAX = 1_000_000  # max_count and max_per_card_per_day (admin.proto OfflineLimitSettings)
FEN_PER_YUAN = 100
ML_PER_LITRE = 1000
MAX_PAGE_SIZE = 500
# Calendar periods are China Standard Time (UTC+8); naive times on the command line mean CST.
CST = dt.timezone(dt.timedelta(hours=8), "CST")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)

ACCOUNT_KINDS = ("personal", "family", "fleet")
TIERS = ("standard", "silver", "gold")
CARD_STATES = ("active", "frozen", "lost", "closed")
TRANSACTION_KINDS = (
    "sale",
    "purchase",
    "offline_sale",
    "refund",
    "reversal",
    "topup",
    "channel_payment",
    "channel_refund",
    "adjustment",
)

# ASCII digits only: \d and Decimal() would also accept full-width or Arabic-Indic digits.
_FEN_RE = re.compile(r"[0-9]+")
_YUAN_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_PIN_RE = re.compile(r"[0-9]{4,6}")
_MONTH_RE = re.compile(r"[0-9]{4}-(?:0[1-9]|1[0-2])")
_PUBLIC_KEY_RE = re.compile(r"04[0-9a-fA-F]{128}")
_STATION_CLASS_RE = re.compile(r"[a-z0-9_-]{1,32}")
# Printable ASCII without spaces: what a gRPC metadata value and a bearer token may hold.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
# Spreadsheet programs run a cell starting with these as a formula (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class UsageError(Exception):
    """Bad command-line input found after parsing; nothing has been sent."""


class ProtocolError(Exception):
    """The server answered with something this client cannot follow (e.g. a looping page token)."""


# ---------------------------------------------------------------------------------------------
# Money, volume and time formatting: integers only.


def format_yuan(fen: int, *, grouping: bool = False) -> str:
    """Fen as a plain yuan string with exactly two decimals: 123456 -> "1234.56", -5 -> "-0.05"."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), FEN_PER_YUAN)
    whole_text = f"{whole:,}" if grouping else str(whole)
    return f"{sign}{whole_text}.{cents:02d}"


def format_yuan_symbol(fen: int, *, signed: bool = False) -> str:
    """Fen for people: "¥1,234.56", "-¥0.05"; with signed=True also "+¥12.00"."""
    sign = "-" if fen < 0 else ("+" if signed and fen > 0 else "")
    return f"{sign}¥{format_yuan(abs(fen), grouping=True)}"


def format_money(fen: int) -> str:
    """Both units, as operators read them: "123456 fen (¥1,234.56)"."""
    return f"{fen} fen ({format_yuan_symbol(fen)})"


def format_litres(ml: int) -> str:
    """Millilitres as litres with three decimals: 35000 -> "35.000"."""
    sign = "-" if ml < 0 else ""
    whole, frac = divmod(abs(ml), ML_PER_LITRE)
    return f"{sign}{whole}.{frac:03d}"


def format_time_ms(ms: int, *, timespec: str = "milliseconds", sep: str = "T") -> str:
    """Ms since the epoch as ISO 8601 in China Standard Time; 0 (unset) as ""."""
    if ms == 0:
        return ""
    return (_EPOCH + ms * _ONE_MS).astimezone(CST).isoformat(sep=sep, timespec=timespec)


def yuan_to_fen(text: str) -> int:
    """Parse "12.34" into 1234 exactly; refuses more than two decimals, signs and exponents."""
    if not _YUAN_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a yuan amount like 12.34")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex already rules this out
        raise ValueError(f"{text!r} is not a yuan amount like 12.34") from exc
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -2:
        raise ValueError(f"{text!r} has more than 2 decimals; 1 fen (0.01) is the smallest unit")
    fen = int(value * FEN_PER_YUAN)
    if value * FEN_PER_YUAN != fen:  # pragma: no cover - guaranteed by the exponent check
        raise ValueError(f"{text!r} is not a whole number of fen")
    return fen


# ---------------------------------------------------------------------------------------------
# argparse value types (raise ArgumentTypeError -> usage error, exit 2, nothing sent).


def _text(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _fen(value: str, *, allow_zero: bool) -> int:
    if not _FEN_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a whole number of fen (e.g. 1234 = ¥12.34)"
        )
    fen = int(value)
    if fen == 0 and not allow_zero:
        raise argparse.ArgumentTypeError("must be more than 0 fen")
    if fen > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{value!r} is too large")
    return fen


def _positive_fen(value: str) -> int:
    return _fen(value, allow_zero=False)


def _limit_fen(value: str) -> int:
    return _fen(value, allow_zero=True)


def _yuan(value: str) -> int:
    try:
        fen = yuan_to_fen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if fen == 0:
        raise argparse.ArgumentTypeError("must be more than ¥0.00")
    if fen > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{value!r} is too large")
    return fen


def _pin(value: str) -> str:
    # Never echo the value: it is a PIN.
    if value != "-" and not _PIN_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "a PIN is 4 to 6 decimal digits (or '-' to read it from stdin)"
        )
    return value


def _month(value: str) -> str:
    if not _MONTH_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a month like 2030-12 (YYYY-MM)")
    return value


def _time_ms(value: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time like 2024-05-01, 2024-05-01T08:30 or 2024-05-01T00:30Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CST)
    ms = (moment - _EPOCH) // _ONE_MS
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not after 1970-01-01T00:00Z")
    return ms


def _public_key(value: str) -> str:
    if not _PUBLIC_KEY_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"an SM2 public key is 130 hex characters starting with 04 (04||x||y); got {len(value)} characters"
        )
    return value.lower()


def _station_class(value: str) -> str:
    if not _STATION_CLASS_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a station class: 1-32 characters a-z, 0-9, '_' or '-' (e.g. highway)"
        )
    return value


def _count(value: str) -> int:
    if not _FEN_RE.fullmatch(value) or int(value) > OFFLINE_COUNT_MAX:
        raise argparse.ArgumentTypeError(f"{value!r} is not a count 0..{OFFLINE_COUNT_MAX}")
    return int(value)


def _degrees(limit: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            degrees = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number of degrees") from None
        if not math.isfinite(degrees) or abs(degrees) > limit:
            raise argparse.ArgumentTypeError(f"{value!r} is outside -{limit:g}..{limit:g} degrees")
        return degrees

    return parse


def _page_size(value: str) -> int:
    if not _FEN_RE.fullmatch(value) or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{value!r} is not a page size 1..{MAX_PAGE_SIZE}")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return seconds


# ---------------------------------------------------------------------------------------------
# Command line.


def _global_options(*, suppress: bool) -> argparse.ArgumentParser:
    """The global options, accepted before or after the subcommand.

    Defaults are SUPPRESSed so a value given after the subcommand does not get overwritten
    by the main parser's default (and vice versa); main() fills in the real defaults.
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection and output (before or after the subcommand)")
    default = argparse.SUPPRESS if suppress else None
    group.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=default,
        help=f"switch address (default: ${ENV_TARGET} or {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=default,
        help=f"operator token, sent as 'authorization: Bearer TOKEN' (default: ${ENV_TOKEN}; "
        "prefer the environment variable, command lines are visible to other local users)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print one JSON document (proto3 JSON mapping, field names as in admin.proto; "
        "int64 values such as amounts are JSON strings)",
    )
    group.add_argument(
        "--timeout",
        metavar="S",
        type=_seconds,
        default=default,
        help=f"deadline of each call in seconds (default {DEFAULT_TIMEOUT_S:g})",
    )
    for flag, text in (("--tls-ca", "connect with TLS, trusting this CA for the switch's certificate "
                                    f"(default: ${ENV_TLS_CA})"),
                       ("--tls-cert", "client certificate chain, for a switch started with --tls-client-ca"),
                       ("--tls-key", "private key of --tls-cert")):
        group.add_argument(flag, metavar="PEM", type=Path, default=default, help=text)
    return parent


def build_parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="fuelswitch admin",
        description="Operator and card-issuer commands against the switch's CardAdmin API. "
        "Money is in fen (1/100 yuan): 1234 = ¥12.34.",
        epilog="exit codes: 0 ok, 1 refused by the server, 2 bad usage (nothing sent), "
        "3 switch unreachable or no answer in time",
        parents=[_global_options(suppress=False)],
    )
    sub_parent = _global_options(suppress=True)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, description=help_text, parents=[sub_parent]
        )

    p = command("create-account", "Open an account (the money holder that cards spend from).")
    p.add_argument("--kind", required=True, choices=ACCOUNT_KINDS, help="account kind")
    p.add_argument(
        "--holder",
        required=True,
        type=_text,
        metavar="NAME",
        help="holder (person or company) name",
    )
    p.add_argument("--tier", choices=TIERS, help="initial loyalty tier (default: standard)")
    p.set_defaults(handler=_create_account)

    p = command(
        "issue-card",
        "Issue a card on an account. The output shows the full PAN; it is never shown again.",
    )
    p.add_argument(
        "--account", required=True, type=_text, metavar="ID", help="account the card spends from"
    )
    p.add_argument(
        "--pin",
        required=True,
        type=_pin,
        metavar="PIN",
        help="initial PIN, 4-6 digits; '-' reads it from stdin (keeps it out of the process list)",
    )
    p.add_argument(
        "--parent-card", type=_text, metavar="ID", help="main card, for a family/fleet sub card"
    )
    p.add_argument(
        "--per-txn-limit",
        type=_limit_fen,
        default=0,
        metavar="FEN",
        help="largest single transaction in fen (default 0 = no limit)",
    )
    p.add_argument(
        "--partial",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="allow partial approvals (response code 10) when the balance does not cover the "
        "preset (default: allowed; --no-partial forbids them)",
    )
    p.add_argument(
        "--expiry",
        type=_month,
        metavar="YYYY-MM",
        help="last month of validity (default: host, 5 years)",
    )
    p.add_argument(
        "--label", type=_text, metavar="TEXT", help="free text for operators, e.g. vehicle plate"
    )
    p.set_defaults(handler=_issue_card)

    p = command(
        "set-card-state",
        "Freeze, unfreeze, report lost or close a card. Allowed: active->frozen|lost|closed, "
        "frozen->active|lost|closed, lost->closed, expired->closed.",
    )
    p.add_argument("--card", required=True, type=_text, metavar="ID", help="the card")
    p.add_argument("--state", required=True, choices=CARD_STATES, help="target state")
    p.add_argument(
        "--reason", default="", metavar="TEXT", help="operator's reason, kept in the journal"
    )
    p.set_defaults(handler=_set_card_state)

    p = command(
        "reset-pin", "Set a new PIN and clear the wrong-PIN counter (unlocks a PIN-locked card)."
    )
    p.add_argument("--card", required=True, type=_text, metavar="ID", help="the card")
    p.add_argument(
        "--pin",
        required=True,
        type=_pin,
        metavar="PIN",
        help="new PIN, 4-6 digits; '-' reads it from stdin (keeps it out of the process list)",
    )
    p.set_defaults(handler=_reset_pin)

    p = command(
        "top-up",
        "Counter top-up: credit an account. Idempotent by --reference: repeating the same "
        "reference credits nothing more, so it is safe to retry after a timeout.",
    )
    p.add_argument("--account", required=True, type=_text, metavar="ID", help="account to credit")
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument(
        "--amount", type=_positive_fen, metavar="FEN", help="amount in fen (1234 = ¥12.34)"
    )
    amount.add_argument(
        "--yuan",
        dest="amount",
        type=_yuan,
        metavar="YUAN",
        help="amount in yuan with at most 2 decimals (12.34), converted exactly to fen",
    )
    p.add_argument(
        "--reference", required=True, type=_text, metavar="REF", help="unique receipt number"
    )
    p.set_defaults(handler=_top_up)

    p = command("get-account", "Show an account: balance, holds, available, points, cards.")
    p.add_argument("account_id", type=_text, metavar="ID", help="account id")
    p.set_defaults(handler=_get_account)

    p = command("get-card", "Show a card (masked PAN), its state and controls.")
    p.add_argument("card_id", type=_text, metavar="ID", help="card id")
    p.set_defaults(handler=_get_card)

    p = command(
        "list-transactions",
        "List journal transactions of an account or card, newest first. Without --csv one page "
        "is printed; with --csv every page is fetched and written.",
    )
    p.add_argument(
        "--account", type=_text, metavar="ID", help="account (required unless --card is given)"
    )
    p.add_argument("--card", type=_text, metavar="ID", help="only this card")
    p.add_argument("--station", type=_text, metavar="ID", help="only at this station")
    p.add_argument(
        "--from",
        dest="from_ms",
        type=_time_ms,
        default=0,
        metavar="ISO8601",
        help="at or after this time; without an offset the time is China Standard Time (UTC+8)",
    )
    p.add_argument(
        "--to",
        dest="to_ms",
        type=_time_ms,
        default=0,
        metavar="ISO8601",
        help="before this time (exclusive; a bare date means 00:00 of that day, UTC+8)",
    )
    p.add_argument(
        "--kind",
        dest="kinds",
        action="extend",
        nargs="+",
        choices=TRANSACTION_KINDS,
        default=[],
        metavar="K",
        help="only these kinds (repeatable): " + ", ".join(TRANSACTION_KINDS),
    )
    p.add_argument(
        "--limit",
        type=_page_size,
        metavar="N",
        help=f"page size 1..{MAX_PAGE_SIZE} (default: the server's 50; {MAX_PAGE_SIZE} with --csv)",
    )
    p.add_argument(
        "--page-token",
        default="",
        metavar="TOKEN",
        help="continue from a previous page (without --csv)",
    )
    p.add_argument(
        "--csv",
        metavar="FILE",
        help="fetch all pages and write them as CSV to FILE ('-' = stdout); amounts in fen with "
        "yuan columns; the file is replaced only when every page has been fetched",
    )
    p.set_defaults(handler=_list_transactions)

    p = command(
        "register-station", "Create or update a station (registering an existing id updates it)."
    )
    p.add_argument(
        "--id", dest="station_id", required=True, type=_text, metavar="ID", help="station id"
    )
    p.add_argument("--name", required=True, type=_text, metavar="NAME", help="display name")
    p.add_argument(
        "--region", default="", metavar="R", help="region code used by card controls, e.g. GD-SZ"
    )
    p.add_argument(
        "--lat", type=_degrees(90.0), metavar="X", help="WGS-84 latitude, degrees (with --lon)"
    )
    p.add_argument(
        "--lon", type=_degrees(180.0), metavar="Y", help="WGS-84 longitude, degrees (with --lat)"
    )
    p.add_argument(
        "--class",
        dest="station_class",
        type=_station_class,
        metavar="CLASS",
        help="station class, e.g. standard, highway, truck: chooses how long pre-authorizations "
        "last there (the switch's --hold-ttl-by-class; classes it does not list use --hold-ttl-s). "
        "Default: keep the current class (standard for a new station)",
    )
    p.set_defaults(handler=_register_station)

    p = command(
        "list-stations",
        "List stations with their class, pre-authorization lifetime and offline limits.",
    )
    p.add_argument(
        "--class", dest="station_class", type=_station_class, metavar="CLASS", help="only this class"
    )
    p.set_defaults(handler=_list_stations)

    p = command(
        "set-offline-limits",
        "Set the offline risk limits of a station (replacing all of its own limits: a limit not "
        "given falls back to the network default) or a card's own offline floor limit (without "
        "--floor-limit the card's own limit is cleared and its station's applies). Terminals pick "
        "them up at their next SyncHotlist; uploads of offline sales are checked against them.",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--station", type=_text, metavar="ID", help="a station's limits")
    target.add_argument("--card", type=_text, metavar="ID", help="a card's own floor limit")
    p.add_argument(
        "--floor-limit",
        type=_limit_fen,
        metavar="FEN",
        help="largest single offline sale in fen; 0 = no offline sales at the station / never "
        "approve this card offline. A card's own limit replaces its station's, higher or lower",
    )
    p.add_argument(
        "--max-count",
        type=_count,
        metavar="N",
        help="station only: most offline sales a terminal may hold un-uploaded (and one upload may apply)",
    )
    p.add_argument(
        "--max-total",
        type=_limit_fen,
        metavar="FEN",
        help="station only: largest total of un-uploaded offline sales, fen (and of one upload)",
    )
    p.add_argument(
        "--max-per-card-per-day",
        type=_count,
        metavar="N",
        help="station only: most offline sales of one card on one terminal per day (UTC+8)",
    )
    p.set_defaults(handler=_set_offline_limits)

    p = command("register-terminal", "Create or update a terminal and its SM2 public key.")
    p.add_argument(
        "--id", dest="terminal_id", required=True, type=_text, metavar="ID", help="terminal id"
    )
    p.add_argument(
        "--station", required=True, type=_text, metavar="ID", help="station (must be registered)"
    )
    p.add_argument(
        "--public-key",
        required=True,
        type=_public_key,
        metavar="HEX130",
        help="SM2 public key, 130 hex characters 04||x||y",
    )
    p.set_defaults(handler=_register_terminal)

    p = command(
        "set-terminal-state",
        "Suspend, revoke or reactivate a terminal. Unless the state is active, its session ends at once "
        "and it cannot sign on. The host suspends a terminal by itself after repeated MAC failures.",
    )
    p.add_argument("--id", dest="terminal_id", required=True, type=_text, metavar="ID", help="terminal id")
    p.add_argument("--state", required=True, choices=("active", "suspended", "revoked"))
    p.add_argument("--reason", default="", type=_text, metavar="TEXT", help="kept with the state (who, why)")
    p.set_defaults(handler=_set_terminal_state)

    return root


# ---------------------------------------------------------------------------------------------
# Running a command.


@dataclass
class _Session:
    stub: Any  # admin_pb2_grpc.CardAdminStub (generated, untyped)
    metadata: tuple[tuple[str, str], ...]
    timeout: float
    target: str
    as_json: bool
    out: TextIO
    err: TextIO
    console: Console

    def call(self, rpc: str, request: Message) -> Any:
        method = getattr(self.stub, rpc)
        return method(request, metadata=self.metadata, timeout=self.timeout)

    def emit_json(self, document: Any) -> None:
        json.dump(document, self.out, indent=2, sort_keys=False)
        self.out.write("\n")


def _to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def _without_pan(card: Any) -> Any:
    """A copy of a Card without the full PAN (only IssueCard may show it)."""
    masked = type(card)()
    masked.CopyFrom(card)
    masked.ClearField("pan")
    return masked


def _cell(value: object) -> Text:
    # Text, not str: server-supplied strings must not be parsed as rich markup.
    return Text(str(value))


def _kv_table(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, show_header=False, box=box.SIMPLE, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, _cell(value))
    return table


def _account_table(account: Any, title: str = "Account") -> Table:
    return _kv_table(
        title,
        [
            ("account_id", account.account_id),
            ("kind", account.kind),
            ("holder", account.holder_name),
            ("balance", format_money(account.balance)),
            ("held", format_money(account.held)),
            ("available", format_money(account.available)),
            ("points", account.points),
            ("tier", account.tier),
            ("created", format_time_ms(account.created_at_ms, timespec="seconds", sep=" ")),
            ("cards", ", ".join(account.card_ids) or "-"),
        ],
    )


def _controls_summary(controls: Any) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        (
            "per-transaction limit",
            format_money(controls.per_transaction_limit)
            if controls.per_transaction_limit
            else "none",
        ),
        (
            "daily limit",
            format_money(controls.daily_amount_limit) if controls.daily_amount_limit else "none",
        ),
        (
            "monthly limit",
            format_money(controls.monthly_amount_limit)
            if controls.monthly_amount_limit
            else "none",
        ),
        (
            "daily volume limit",
            f"{format_litres(controls.daily_volume_limit_ml)} L"
            if controls.daily_volume_limit_ml
            else "none",
        ),
        ("partial approval", "allowed" if controls.partial_allowed else "not allowed"),
        ("PIN", "optional" if controls.pin_optional else "required"),
    ]
    if controls.allowed_products:
        rows.append(("products", ", ".join(controls.allowed_products)))
    if controls.allowed_stations:
        rows.append(("stations", ", ".join(controls.allowed_stations)))
    if controls.allowed_regions:
        rows.append(("regions", ", ".join(controls.allowed_regions)))
    if controls.allowed_hours:
        windows = [
            f"{w.start_minute // 60:02d}:{w.start_minute % 60:02d}-{w.end_minute // 60:02d}:{w.end_minute % 60:02d}"
            for w in controls.allowed_hours
        ]
        rows.append(("hours (UTC+8)", ", ".join(windows)))
    if controls.required_prompts:
        rows.append(("prompts", ", ".join(controls.required_prompts)))
    return rows


def _card_table(card: Any, *, show_pan: bool, title: str = "Card") -> Table:
    rows: list[tuple[str, object]] = [("card_id", card.card_id)]
    if show_pan and card.pan:
        rows.append(("PAN", card.pan))
    rows += [
        ("masked_pan", card.masked_pan),
        ("state", card.state + (" (PIN locked)" if card.pin_locked else "")),
        ("account_id", card.account_id),
        ("parent_card_id", card.parent_card_id or "-"),
        ("expiry", card.expiry),
        ("label", card.label or "-"),
        ("issued", format_time_ms(card.issued_at_ms, timespec="seconds", sep=" ")),
    ]
    if card.replaced_by_card_id:
        rows.append(("replaced by", card.replaced_by_card_id))
    rows += _controls_summary(card.controls)
    if card.HasField("offline_floor_limit"):
        limit = card.offline_floor_limit
        rows.append(("offline floor limit", format_money(limit) if limit else "never offline"))
    else:
        rows.append(("offline floor limit", "the station's"))
    return _kv_table(title, rows)


def _show_card(session: _Session, card: Any, *, show_pan: bool, title: str = "Card") -> None:
    if not show_pan:
        card = _without_pan(card)
    if session.as_json:
        session.emit_json(_to_dict(card))
        return
    session.console.print(_card_table(card, show_pan=show_pan, title=title))


def _read_pin(value: str) -> str:
    if value != "-":
        return value
    if sys.stdin is not None and sys.stdin.isatty():
        pin = getpass.getpass("PIN: ")
    else:
        pin = sys.stdin.readline().rstrip("\r\n") if sys.stdin is not None else ""
    if not _PIN_RE.fullmatch(pin):
        raise UsageError("the PIN read from stdin is not 4 to 6 decimal digits")
    return pin


# --- handlers ---------------------------------------------------------------------------------


def _create_account(session: _Session, args: argparse.Namespace) -> None:
    request = admin_pb2.CreateAccountRequest(
        kind=args.kind, holder_name=args.holder, tier=args.tier or ""
    )
    account = session.call("CreateAccount", request)
    if session.as_json:
        session.emit_json(_to_dict(account))
    else:
        session.console.print(_account_table(account, title="Account created"))


def _issue_card(session: _Session, args: argparse.Namespace) -> None:
    request = admin_pb2.IssueCardRequest(
        account_id=args.account,
        pin=_read_pin(args.pin),
        parent_card_id=args.parent_card or "",
        per_transaction_limit=args.per_txn_limit,
        partial_allowed=args.partial,
        expiry=args.expiry or "",
        label=args.label or "",
    )
    card = session.call("IssueCard", request)
    _show_card(session, card, show_pan=True, title="Card issued")
    if not session.as_json:
        session.console.print(
            Text(
                "The full PAN is shown only now; the switch will never return it again.",
                style="bold",
            )
        )


def _set_card_state(session: _Session, args: argparse.Namespace) -> None:
    request = admin_pb2.SetCardStateRequest(card_id=args.card, state=args.state, reason=args.reason)
    _show_card(session, session.call("SetCardState", request), show_pan=False)


def _reset_pin(session: _Session, args: argparse.Namespace) -> None:
    request = admin_pb2.ResetPinRequest(card_id=args.card, pin=_read_pin(args.pin))
    _show_card(session, session.call("ResetPin", request), show_pan=False, title="PIN reset")


def _top_up(session: _Session, args: argparse.Namespace) -> None:
    request = admin_pb2.TopUpRequest(
        account_id=args.account, amount=args.amount, reference=args.reference
    )
    response = session.call("TopUp", request)
    if session.as_json:
        session.emit_json(_to_dict(response))
        return
    session.console.print(
        _kv_table(
            "Top-up",
            [
                ("account_id", args.account),
                ("amount", format_money(args.amount)),
                ("reference", args.reference),
                ("transaction_id", response.transaction_id),
                ("balance", format_money(response.balance)),
                ("available", format_money(response.available)),
            ],
        )
    )


def _get_account(session: _Session, args: argparse.Namespace) -> None:
    account = session.call("GetAccount", admin_pb2.GetAccountRequest(account_id=args.account_id))
    if session.as_json:
        session.emit_json(_to_dict(account))
    else:
        session.console.print(_account_table(account))


def _get_card(session: _Session, args: argparse.Namespace) -> None:
    card = session.call("GetCard", admin_pb2.GetCardRequest(card_id=args.card_id))
    _show_card(session, card, show_pan=False)


def _register_station(session: _Session, args: argparse.Namespace) -> None:
    if (args.lat is None) != (args.lon is None):
        raise UsageError("give --lat and --lon together")
    request = admin_pb2.RegisterStationRequest(
        station_id=args.station_id,
        name=args.name,
        region=args.region,
        latitude=args.lat or 0.0,
        longitude=args.lon or 0.0,
        station_class=args.station_class or "",
    )
    _show_station(session, session.call("RegisterStation", request))


def _offline_limit_rows(station: Any) -> list[tuple[str, object]]:
    """Each effective limit, marked "(network default)" where the station has none of its own."""
    own, effective = station.offline_limits, station.effective_offline_limits
    rows: list[tuple[str, object]] = []
    for name, label, money in (
        ("floor_limit", "offline floor limit", True),
        ("max_count", "offline max count", False),
        ("max_total", "offline max total", True),
        ("max_per_card_per_day", "offline per card per day", False),
    ):
        if not effective.HasField(name):
            continue  # an older switch that does not report limits
        value = getattr(effective, name)
        text = format_money(value) if money else str(value)
        rows.append((label, text if own.HasField(name) else f"{text} (network default)"))
    return rows


def _show_station(session: _Session, station: Any) -> None:
    if session.as_json:
        session.emit_json(_to_dict(station))
        return
    rows: list[tuple[str, object]] = [
        ("station_id", station.station_id),
        ("name", station.name),
        ("region", station.region or "-"),
        ("latitude", station.latitude),
        ("longitude", station.longitude),
        ("class", station.station_class or "standard"),
    ]
    if station.hold_ttl_s:
        rows.append(("pre-auth lifetime", f"{station.hold_ttl_s} s"))
    rows += _offline_limit_rows(station)
    for price in station.prices:
        rows.append((f"price {price.product_code}", f"{format_money(price.unit_price)} per litre"))
    session.console.print(_kv_table("Station", rows))


def _limit_text(station: Any, name: str) -> str:
    """One effective offline limit; "*" marks the network default (the station has none of its own)."""
    value = str(getattr(station.effective_offline_limits, name))
    return value if station.offline_limits.HasField(name) else value + "*"


def _list_stations(session: _Session, args: argparse.Namespace) -> None:
    request = admin_pb2.ListStationsRequest(station_class=args.station_class or "")
    response = session.call("ListStations", request)
    if session.as_json:
        session.emit_json(_to_dict(response))
        return
    table = Table(title="Stations", title_justify="left", box=box.SIMPLE_HEAD)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("station", "left"),
        ("name", "left"),
        ("region", "left"),
        ("class", "left"),
        ("pre-auth s", "right"),
        ("floor fen", "right"),
        ("max count", "right"),
        ("max total fen", "right"),
        ("per card/day", "right"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    for station in response.stations:
        table.add_row(
            _cell(station.station_id),
            _cell(station.name),
            _cell(station.region or "-"),
            _cell(station.station_class or "standard"),
            _cell(station.hold_ttl_s or "-"),
            *(
                _cell(_limit_text(station, f))
                for f in ("floor_limit", "max_count", "max_total", "max_per_card_per_day")
            ),
        )
    count = len(response.stations)
    table.caption = f"{count} station{'s' if count != 1 else ''}; * = network default"
    table.caption_justify = "left"
    session.console.print(table)


def _set_offline_limits(session: _Session, args: argparse.Namespace) -> None:
    if args.card is not None:
        station_only = [
            flag
            for flag, value in (
                ("--max-count", args.max_count),
                ("--max-total", args.max_total),
                ("--max-per-card-per-day", args.max_per_card_per_day),
            )
            if value is not None
        ]
        if station_only:
            raise UsageError(f"{', '.join(station_only)} apply to a station, not a card")
        request = admin_pb2.SetCardOfflineLimitRequest(card_id=args.card, floor_limit=args.floor_limit)
        _show_card(session, session.call("SetCardOfflineLimit", request), show_pan=False)
        return
    limits = admin_pb2.OfflineLimitSettings(
        floor_limit=args.floor_limit,
        max_count=args.max_count,
        max_total=args.max_total,
        max_per_card_per_day=args.max_per_card_per_day,
    )
    request = admin_pb2.SetStationOfflineLimitsRequest(station_id=args.station, limits=limits)
    _show_station(session, session.call("SetStationOfflineLimits", request))


def _register_terminal(session: _Session, args: argparse.Namespace) -> None:
    request = admin_pb2.RegisterTerminalRequest(
        terminal_id=args.terminal_id, station_id=args.station, public_key=args.public_key
    )
    _show_terminal(session, session.call("RegisterTerminal", request))


def _set_terminal_state(session: _Session, args: argparse.Namespace) -> None:
    request = admin_pb2.SetTerminalStateRequest(terminal_id=args.terminal_id, state=args.state, reason=args.reason)
    _show_terminal(session, session.call("SetTerminalState", request))


def _show_terminal(session: _Session, terminal: admin_pb2.Terminal) -> None:
    if session.as_json:
        session.emit_json(_to_dict(terminal))
        return
    session.console.print(
        _kv_table(
            "Terminal",
            [
                ("terminal_id", terminal.terminal_id),
                ("station_id", terminal.station_id),
                ("public_key", terminal.public_key),
                ("state", terminal.state + (f" ({terminal.state_reason})" if terminal.state_reason else "")),
                (
                    "registered",
                    format_time_ms(terminal.registered_at_ms, timespec="seconds", sep=" "),
                ),
            ],
        )
    )


# --- transactions -----------------------------------------------------------------------------

CSV_COLUMNS = (
    "transaction_id",
    "time",
    "time_ms",
    "kind",
    "account_id",
    "card_id",
    "masked_pan",
    "amount_fen",
    "amount_yuan",
    "balance_change_fen",
    "balance_change_yuan",
    "balance_after_fen",
    "balance_after_yuan",
    "discount_fen",
    "discount_yuan",
    "product_code",
    "volume_ml",
    "unit_price_fen",
    "station_id",
    "terminal_id",
    "stan",
    "original_transaction_id",
    "reference",
    "points",
    "flagged",
)


def _csv_text(value: str) -> str:
    """Free text from outside (references) must not run as a spreadsheet formula."""
    return "'" + value if value.startswith(_FORMULA_PREFIXES) else value


def csv_row(txn: Any) -> list[str]:
    return [
        txn.transaction_id,
        format_time_ms(txn.time_ms),
        str(txn.time_ms),
        txn.kind,
        txn.account_id,
        txn.card_id,
        txn.masked_pan,
        str(txn.amount),
        format_yuan(txn.amount),
        str(txn.balance_change),
        format_yuan(txn.balance_change),
        str(txn.balance_after),
        format_yuan(txn.balance_after),
        str(txn.discount_amount),
        format_yuan(txn.discount_amount),
        txn.product_code,
        str(txn.volume_ml),
        str(txn.unit_price),
        txn.station_id,
        txn.terminal_id,
        str(txn.stan),
        txn.original_transaction_id,
        _csv_text(txn.reference),
        str(txn.points),
        "true" if txn.flagged else "false",
    ]


def _list_request(args: argparse.Namespace, page_size: int) -> Any:
    if not args.account and not args.card:
        raise UsageError("list-transactions needs --account or --card")
    if args.from_ms and args.to_ms and args.from_ms >= args.to_ms:
        raise UsageError("--from must be before --to")
    return admin_pb2.ListTransactionsRequest(
        account_id=args.account or "",
        card_id=args.card or "",
        station_id=args.station or "",
        from_time_ms=args.from_ms,
        to_time_ms=args.to_ms,
        kinds=args.kinds,
        limit=page_size,
    )


def _pages(session: _Session, request: Any) -> Iterator[Any]:
    """Every page, following next_page_token; stops on a token the server already gave."""
    seen: set[str] = set()
    while True:
        response = session.call("ListTransactions", request)
        yield response
        token = response.next_page_token
        if not token:
            return
        if token in seen:
            raise ProtocolError("the server repeated a page token; stopping instead of looping")
        seen.add(token)
        request.page_token = token


def _write_csv(stream: TextIO, pages: Iterator[Any]) -> tuple[int, int]:
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    count = page_count = 0
    for page in pages:
        page_count += 1
        for txn in page.transactions:
            writer.writerow(csv_row(txn))
            count += 1
    return count, page_count


def _list_transactions(session: _Session, args: argparse.Namespace) -> None:
    if args.csv is None:
        request = _list_request(args, args.limit or 0)
        request.page_token = args.page_token
        response = session.call("ListTransactions", request)
        if session.as_json:
            session.emit_json(_to_dict(response))
        else:
            session.console.print(_transactions_table(response))
        return

    if args.page_token:
        raise UsageError("--page-token cannot be combined with --csv (which fetches every page)")
    request = _list_request(args, args.limit or MAX_PAGE_SIZE)
    if args.csv == "-":
        _write_csv(session.out, _pages(session, request))
        return
    # Write into a temporary file beside the target and rename it at the end, so a failure
    # half-way never leaves a truncated CSV that looks complete.
    target = os.path.abspath(args.csv)
    try:
        handle, tmp_path = tempfile.mkstemp(
            prefix=".fuelswitch-", suffix=".csv.tmp", dir=os.path.dirname(target)
        )
    except OSError as exc:
        raise UsageError(f"cannot write {args.csv}: {exc.strerror or exc}") from None
    try:
        with open(handle, "w", encoding="utf-8", newline="") as stream:
            count, page_count = _write_csv(stream, _pages(session, request))
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
    if session.as_json:
        session.emit_json({"csv": args.csv, "transactions": count, "pages": page_count})
    else:
        session.console.print(
            Text(f"wrote {count} transactions ({page_count} pages) to {args.csv}")
        )


def _transactions_table(response: Any) -> Table:
    table = Table(
        title="Transactions (newest first, times UTC+8)", title_justify="left", box=box.SIMPLE_HEAD
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("time", "left"),
        ("kind", "left"),
        ("transaction", "left"),
        ("card", "left"),
        ("amount fen", "right"),
        ("amount ¥", "right"),
        ("change ¥", "right"),
        ("balance fen", "right"),
        ("balance ¥", "right"),
        ("product", "left"),
        ("litres", "right"),
        ("station", "left"),
        ("reference", "left"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    for txn in response.transactions:
        table.add_row(
            _cell(format_time_ms(txn.time_ms, timespec="seconds", sep=" ")),
            _cell(txn.kind + (" !" if txn.flagged else "")),
            _cell(txn.transaction_id),
            _cell(txn.masked_pan or "-"),
            _cell(txn.amount),
            _cell(format_yuan_symbol(txn.amount)),
            _cell(format_yuan_symbol(txn.balance_change, signed=True)),
            _cell(txn.balance_after),
            _cell(format_yuan_symbol(txn.balance_after)),
            _cell(txn.product_code or "-"),
            _cell(format_litres(txn.volume_ml) if txn.volume_ml else "-"),
            _cell(txn.station_id or "-"),
            _cell(txn.reference or "-"),
        )
    count = len(response.transactions)
    caption = f"{count} transaction{'s' if count != 1 else ''}"
    if response.next_page_token:
        caption += f"; more with --page-token {response.next_page_token}"
    table.caption = caption
    table.caption_justify = "left"
    return table


# ---------------------------------------------------------------------------------------------
# Entry point.


def _console(out: TextIO) -> Console:
    is_tty = hasattr(out, "isatty") and out.isatty()
    return Console(
        file=out,
        markup=False,
        emoji=False,
        highlight=False,
        # Redirected output is not cut to 80 columns: masked PANs and ids must stay whole.
        width=None if is_tty else 200,
    )


def _report_rpc_error(err: TextIO, exc: grpc.RpcError, session: _Session, command: str) -> int:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    print(f"error: {name}: {details or ''}".rstrip(), file=err)
    if code in _UNREACHABLE_CODES:
        print(f"(no answer from the switch at {session.target})", file=err)
        if command == "top-up":
            print(
                "the top-up may or may not have been applied: repeat it with the same --reference "
                "(a repeat credits nothing twice)",
                file=err,
            )
        return EXIT_UNREACHABLE
    return EXIT_REFUSED


def main(argv: list[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run `fuelswitch admin <argv>`; returns the process exit code (never raises)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    target = args.target or os.environ.get(ENV_TARGET) or DEFAULT_TARGET
    token = (args.token or os.environ.get(ENV_TOKEN) or "").strip()
    if not token:
        print(f"error: no operator token: pass --token TOKEN or set {ENV_TOKEN}", file=err)
        return EXIT_USAGE
    if not _TOKEN_RE.fullmatch(token):
        print("error: the operator token must be printable ASCII without spaces", file=err)
        return EXIT_USAGE
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT_S

    try:
        with operator_channel.channel(target, args) as channel:
            session = _Session(
                stub=admin_pb2_grpc.CardAdminStub(channel),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=timeout,
                target=target,
                as_json=bool(args.json),
                out=out,
                err=err,
                console=_console(out),
            )
            try:
                args.handler(session, args)
            except grpc.RpcError as exc:
                return _report_rpc_error(err, exc, session, args.command)
    except (UsageError, operator_channel.TlsOptionsError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except ProtocolError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_REFUSED
    except Exception as exc:  # last resort: an operator tool must not dump a traceback
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=err)
        return EXIT_REFUSED
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
