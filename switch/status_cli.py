"""`fuelswitch status`: ask a running switch how it is (CardAdmin.GetStatus, operator token).

Exit codes: 0 the switch is SERVING, 1 it answered NOT_SERVING (database down, recovering or
stopping) or refused the call, 2 bad usage, 3 unreachable (no answer in time). `--json` prints the
proto3 JSON mapping of `SwitchStatus` (admin.proto field names; int64 and uint64 values are strings).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import TextIO

import grpc
from fuelswitch.v1 import admin_pb2, admin_pb2_grpc
from google.protobuf import json_format

from switch import operator_channel

ENV_TARGET = "FUELSWITCH_TARGET"
ENV_TOKEN = "FUELSWITCH_OPERATOR_TOKEN"
DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 5.0
EXIT_SERVING, EXIT_NOT_SERVING, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fuelswitch status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", metavar="HOST:PORT",
                        help=f"switch address (default: ${ENV_TARGET} or {DEFAULT_TARGET})")
    parser.add_argument("--token", metavar="TOKEN",
                        help=f"operator token (default: ${ENV_TOKEN}; prefer the variable, command lines are "
                             "visible to other local users)")
    parser.add_argument("--json", action="store_true", help="print SwitchStatus as one JSON document")
    parser.add_argument("--timeout", metavar="S", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT_S:g})")
    operator_channel.add_tls_arguments(parser)
    return parser


def fetch(target: str, token: str, timeout_s: float, args: argparse.Namespace) -> admin_pb2.SwitchStatus:
    with operator_channel.channel(target, args) as channel:
        stub = admin_pb2_grpc.CardAdminStub(channel)
        status: admin_pb2.SwitchStatus = stub.GetStatus(
            admin_pb2.GetStatusRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=timeout_s)
        return status


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours}h {minutes:02d}m {secs:02d}s"


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else "never"


def render(status: admin_pb2.SwitchStatus, target: str) -> str:
    keys = ", ".join(f"{k.purpose} v{k.version}" for k in status.key_versions) or "none"
    state = status.serving + (" (recovering: memory is being rebuilt, POS answers 91)" if status.recovering else "")
    rows = [
        ("serving", state),
        ("version", status.version),
        ("uptime", f"{_duration(status.uptime_s)} (since {_time(status.started_at_ms)})"),
        ("database", f"{'reachable' if status.database_reachable else 'UNREACHABLE'} "
                     f"(checked {_time(status.database_checked_at_ms)})"),
        ("journal", f"queue {status.journal_queue_depth:,}, last commit {status.last_commit_ms:.1f} ms, "
                    f"{status.journal_commits:,} commits, {status.journal_commit_failures:,} failed"),
        ("open holds", f"{status.open_holds:,}"),
        ("accounts", f"{status.accounts:,}"),
        ("sessions", f"{status.sessions:,}"),
        ("requests/s", f"{status.requests_per_s:,.1f} (last {status.requests_window_s:.0f} s)"),
        ("data keys", keys),
    ]
    lines = [f"fuelswitch at {target}"] + [f"  {name:<12} {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    target = args.target or os.environ.get(ENV_TARGET) or DEFAULT_TARGET
    token = (args.token or os.environ.get(ENV_TOKEN) or "").strip()
    if not token:
        print(f"error: no operator token: pass --token TOKEN or set {ENV_TOKEN}", file=err)
        return EXIT_USAGE
    try:
        status = fetch(target, token, args.timeout, args)
    except operator_channel.TlsOptionsError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except grpc.RpcError as exc:
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        details = exc.details() if callable(getattr(exc, "details", None)) else ""
        name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        print(f"error: {name}: {details or ''}".rstrip(), file=err)
        if code in _UNREACHABLE:
            print(f"(no answer from the switch at {target})", file=err)
            return EXIT_UNREACHABLE
        return EXIT_NOT_SERVING
    if args.json:
        document = json_format.MessageToDict(status, preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True)
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
    else:
        print(render(status, target), file=out)
    return EXIT_SERVING if status.serving == "SERVING" else EXIT_NOT_SERVING
