"""`fuelswitch loadtest`: drive a switch with self-checking POS load and report what it sustained.

    fuelswitch loadtest --spawn --duration 30 --in-flight 64 --processes 2 \\
        --mix auth_complete=70,purchase=10,cancel=5,inquiry=10,topup=4,offline=1 \\
        --baseline naive --json run.json --report run.png

Setup (spawn the switch and PostgreSQL, or reach --target; provision a station, terminals and funded
cards through CardAdmin), one leg against the switch, optionally one against the naive baseline with
the same client, seed and workload, then a summary, a JSON file and a PNG. Every reply is checked
against the lanes' model of each card (loadtest.workload, loadtest.operations); any error or
mismatch fails the run and the seed to replay it is printed. docs/loadtest.md has the details.

Exit codes: 0 clean, 1 errors or mismatches, 2 bad arguments or setup failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from fuelswitch.v1 import admin_pb2
from rich.console import Console

from loadtest import spawn
from loadtest.display import LiveFigures, summary_table
from loadtest.mix import Mix, MixError, parse_mix
from loadtest.operations import BASELINE_OPERATIONS, HANDLERS
from loadtest.provision import Network, Operator, provision
from loadtest.report import write_report
from loadtest.workload import AUTH_COMPLETE, LoadOptions, LoadResult, run_pos_load

EXIT_OK, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
DEFAULT_MIX = f"{AUTH_COMPLETE}=100"
DEFAULT_STATION = "LOADTEST"
BALANCE_FEN_DEFAULT = 10_000_000  # ¥100,000 per card: declines stay rare, the model still checks them
OFFLINE_PER_CARD_DAY_SPAWNED = 1_000_000  # a spawned network lets offline sales apply, not hit 65


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fuelswitch loadtest",
        description="Self-checking POS load against the switch (and the naive baseline); "
        "exit 0 clean, 1 errors or mismatches, 2 bad arguments or setup failure.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--spawn", action="store_true",
                       help="start PostgreSQL (embedded, durable) and the switch here; tear down after")
    where.add_argument("--target", metavar="HOST:PORT", help="a running switch (plaintext gRPC)")
    parser.add_argument("--operator-token", default=os.environ.get("FUELSWITCH_OPERATOR_TOKEN"),
                        help="CardAdmin token of --target, to provision (FUELSWITCH_OPERATOR_TOKEN)")
    parser.add_argument("--station-id", default=DEFAULT_STATION,
                        help=f"station to register (or update) for the run's terminals (default {DEFAULT_STATION})")
    parser.add_argument("--terminals", type=int, default=16, metavar="N", help="terminals (default 16)")
    parser.add_argument("--cards", type=int, metavar="N",
                        help="cards, at least --in-flight (default 2 × --in-flight)")
    parser.add_argument("--balance-fen", type=int, default=BALANCE_FEN_DEFAULT,
                        help=f"each card's starting balance, fen (default {BALANCE_FEN_DEFAULT})")
    parser.add_argument("--duration", type=float, default=10.0, metavar="S", help="seconds per leg (default 10)")
    parser.add_argument("--in-flight", type=int, default=64, metavar="K",
                        help="calls outstanding at once: that many lanes (default 64)")
    parser.add_argument("--seed", type=int, help="replays a run's sequence of operations (default random)")
    parser.add_argument("--processes", type=int, default=1, metavar="P",
                        help="client processes, so the client is not what is measured (default 1)")
    parser.add_argument("--mix", default=DEFAULT_MIX, metavar="NAME=WEIGHT,...",
                        help=f"operation weights, names: {', '.join(HANDLERS)} (default {DEFAULT_MIX})")
    parser.add_argument("--baseline", choices=("naive",),
                        help="also run the naive baseline server, same client and workload; report the ratio")
    parser.add_argument("--baseline-dsn", metavar="DSN",
                        help="PostgreSQL for the baseline (default: the spawned one, or a new embedded one)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--report", type=Path, metavar="FILE.png", help="write the PNG report")
    parser.add_argument("--work-dir", type=Path,
                        help="keep the spawned databases and server logs here (default: a temporary "
                             "directory, removed at the end)")
    # Test hook: credit the first card behind the model's back, to prove a wrong model fails the run.
    parser.add_argument("--tamper-fen", type=int, default=0, help=argparse.SUPPRESS)
    return parser


@dataclass(frozen=True)
class Plan:
    args: argparse.Namespace
    mix: Mix | None  # None: plain auth_complete
    seed: int
    cards: int
    run_tag: str


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Plan:
    """Validate the arguments (parser.error exits 2)."""
    if args.target and not args.operator_token:
        parser.error("--target needs --operator-token (or FUELSWITCH_OPERATOR_TOKEN) to provision")
    for name in ("terminals", "in_flight", "processes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.duration > 0:
        parser.error("--duration must be above 0")
    cards = args.cards if args.cards is not None else 2 * args.in_flight
    if cards < args.in_flight:
        parser.error(f"--cards {cards} < --in-flight {args.in_flight}: every lane needs a card")
    if args.balance_fen < 0:
        parser.error("--balance-fen must be 0 or more")
    try:
        mix = parse_mix(args.mix, HANDLERS)
    except MixError as exc:
        parser.error(str(exc))
    if args.baseline and not mix.only(BASELINE_OPERATIONS):
        parser.error(
            f"--baseline naive runs only {', '.join(sorted(BASELINE_OPERATIONS))} (the baseline "
            f"serves SignOn, Authorize and Complete), but --mix is {mix}; drop --baseline or use "
            f"--mix {DEFAULT_MIX}"
        )
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    plain = mix.only({AUTH_COMPLETE})
    return Plan(args, None if plain else mix, seed, cards, secrets.token_hex(4))


# ---------------------------------------------------------------------- setup


@contextlib.asynccontextmanager
async def _work_dir(args: argparse.Namespace) -> AsyncIterator[Path]:
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        yield args.work_dir
        return
    path = Path(tempfile.mkdtemp(prefix="fuelswitch-loadtest-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _provision(plan: Plan, target: str, token: str) -> Network:
    args = plan.args
    async with grpc.aio.insecure_channel(target) as channel:
        network = await provision(
            channel, token, terminals=args.terminals, cards=plan.cards,
            balance_fen=args.balance_fen, station_id=args.station_id,
            reference_prefix=f"loadtest-{plan.run_tag}-fund",
        )  # fmt: skip
        operator = Operator(channel, token)
        if args.spawn and plan.mix is not None and "offline" in plan.mix.names:
            limits = admin_pb2.OfflineLimitSettings(max_per_card_per_day=OFFLINE_PER_CARD_DAY_SPAWNED)
            await operator.call(
                "SetStationOfflineLimits",
                admin_pb2.SetStationOfflineLimitsRequest(station_id=args.station_id, limits=limits),
            )
        if args.tamper_fen:
            card = network.cards[0]
            await operator.call(
                "TopUp",
                admin_pb2.TopUpRequest(account_id=card.account_id, amount=args.tamper_fen,
                                       reference=f"loadtest-tamper-{plan.run_tag}"),
            )  # fmt: skip
    return network


# ---------------------------------------------------------------------- legs


async def _leg(
    console: Console, label: str, target: str, network: Network, plan: Plan, token: str,
    *, mix: Mix | None, audit: bool,
) -> LoadResult:  # fmt: skip
    args = plan.args
    options = LoadOptions(mix=mix, operator_token=token, audit=audit, run_tag=plan.run_tag)
    with LiveFigures(console, label, args.duration) as live:
        return await run_pos_load(
            target, network.terminals, network.cards, args.duration, args.in_flight, plan.seed,
            processes=args.processes, options=options, progress=live,
        )  # fmt: skip


async def _baseline_leg(
    console: Console, plan: Plan, network: Network, work_dir: Path, spawned_dsn: str | None
) -> LoadResult:
    async with contextlib.AsyncExitStack() as stack:
        dsn = plan.args.baseline_dsn
        if dsn is None:
            if spawned_dsn is None:  # --target: the baseline gets a PostgreSQL of its own
                spawned_dsn = await stack.enter_async_context(
                    spawn.embedded_postgres(work_dir / "baseline-postgres")
                )
            dsn = await spawn.database(spawned_dsn, "naive")
        await spawn.prepare_baseline(
            dsn,
            [(t.terminal_id, t.public_key_hex) for t in network.terminals],
            [(c.pan, c.pin, c.balance_fen) for c in network.cards],
        )
        address = stack.enter_context(
            spawn.server_process(
                spawn.baseline_command(dsn), "naive baseline listening on", work_dir / "baseline.log"
            )
        )
        return await _leg(console, "baseline", address, network, plan, "", mix=None, audit=False)


async def run(plan: Plan, console: Console) -> tuple[int, dict[str, LoadResult]]:
    args = plan.args
    legs: dict[str, LoadResult] = {}
    async with contextlib.AsyncExitStack() as stack:
        work_dir = await stack.enter_async_context(_work_dir(args))
        spawned_dsn: str | None = None
        try:
            if args.spawn:
                token = secrets.token_hex(16)
                console.print(f"spawning PostgreSQL and the switch under {work_dir} …", highlight=False)
                spawned_dsn = await stack.enter_async_context(
                    spawn.embedded_postgres(work_dir / "postgres")
                )
                switch_dsn = await spawn.database(spawned_dsn, "fuelswitch")
                target = stack.enter_context(
                    spawn.server_process(
                        spawn.switch_command(switch_dsn, work_dir / "switch", token),
                        "fuelswitch listening on",
                        work_dir / "switch.log",
                    )
                )
            else:
                target, token = args.target, args.operator_token
            console.print(
                f"provisioning {args.terminals} terminals and {plan.cards} cards at {target} …",
                highlight=False,
            )
            network = await _provision(plan, target, token)
        except Exception as exc:  # noqa: BLE001 - any setup failure is exit 2 with its reason
            console.print(f"[bold red]setup failed:[/] {_text(exc)}")
            return EXIT_SETUP, legs
        try:
            legs["switch"] = await _leg(
                console, "switch", target, network, plan, token, mix=plan.mix, audit=True
            )
            if args.baseline:
                legs["baseline"] = await _baseline_leg(console, plan, network, work_dir, spawned_dsn)
        except Exception as exc:  # noqa: BLE001 - a leg that could not finish fails the run
            console.print(f"[bold red]run failed:[/] {_text(exc)}")
            return EXIT_FAILED, legs
    failed = any(r.errors or r.mismatches for r in legs.values())
    return (EXIT_FAILED if failed else EXIT_OK), legs


def _text(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------- output


def ratio_of(legs: dict[str, LoadResult]) -> float | None:
    if "baseline" not in legs or "switch" not in legs:
        return None
    return round(legs["switch"].rpc_per_s / max(legs["baseline"].rpc_per_s, 1e-9), 2)


def figures(plan: Plan, legs: dict[str, LoadResult], code: int, argv: Sequence[str]) -> dict[str, Any]:
    """The JSON document: the switch's figures at the top level, the baseline's under "baseline"."""
    args = plan.args
    document: dict[str, Any] = {
        "passed": code == EXIT_OK,
        "exit_code": code,
        "seed": plan.seed,
        "replay": replay_command(argv, plan.seed),
        "mix": str(plan.mix or parse_mix(DEFAULT_MIX, HANDLERS)),
        "spawned": bool(args.spawn),
        "duration_requested_s": args.duration,
    }
    if "switch" in legs:
        switch = legs["switch"]
        document |= switch.to_dict() | {"timeline_rpc": switch.timeline}
    if "baseline" in legs:
        naive = legs["baseline"]
        document["baseline"] = naive.to_dict() | {
            "timeline_rpc": naive.timeline, "mix": DEFAULT_MIX, "ratio": ratio_of(legs),
        }  # fmt: skip
    return document


def replay_command(argv: Sequence[str], seed: int) -> str:
    """The same command line with --seed fixed (replacing any --seed given)."""
    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--seed":
            skip = True
            continue
        if item.startswith("--seed="):
            continue
        kept.append(item)
    return shlex.join(["fuelswitch", "loadtest", *kept, "--seed", str(seed)])


def _report_problems(console: Console, plan: Plan, legs: dict[str, LoadResult], argv: Sequence[str]) -> None:
    for name, result in legs.items():
        for problem in result.problems:
            console.print(f"  {name}: {problem}", highlight=False, markup=False)
    console.print(
        f"[bold red]FAILED[/]: seed {plan.seed} — replay with: {replay_command(argv, plan.seed)}",
        highlight=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        plan = _plan(args, parser)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for bad arguments
        return int(exc.code or 0)
    console = Console(highlight=False, soft_wrap=True)  # log lines stay whole when not a TTY
    mix_text = str(plan.mix) if plan.mix else DEFAULT_MIX
    console.print(
        f"fuelswitch loadtest: seed {plan.seed}, mix {mix_text}, {args.terminals} terminals, "
        f"{args.in_flight} in flight, {args.processes} client process(es), {args.duration:g} s per leg"
        + (", baseline: naive (auth_complete only)" if args.baseline else "")
    )
    code, legs = asyncio.run(run(plan, console))
    if not legs:
        return code
    console.print(summary_table(legs, ratio_of(legs)))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures(plan, legs, code, argv), indent=1) + "\n")
        console.print(f"figures: {args.json}")
    if args.report is not None:
        title = f"fuelswitch loadtest: {mix_text}, {args.in_flight} in flight, seed {plan.seed}"
        args.report.parent.mkdir(parents=True, exist_ok=True)
        write_report(args.report, legs, title)
        console.print(f"report: {args.report}")
    if code != EXIT_OK:
        _report_problems(console, plan, legs, argv)
    return code


if __name__ == "__main__":
    sys.exit(main())
