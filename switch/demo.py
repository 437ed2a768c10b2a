"""`make demo`: the switch on its embedded PostgreSQL, a station's worth of pumps, and a conservation check.

It starts the switch (fresh data directory, embedded PostgreSQL), provisions a station, terminals and
cards through CardAdmin, then each terminal signs on and runs pump cycles — authorize, fuel, complete —
with some cancels, some wrong PINs and some cards that run dry, for `duration_s`. At the end it prints
what happened and checks in PostgreSQL that every fen is accounted for.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import uvloop
from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from loadtest.provision import CardSpec, provision
from loadtest.terminal import Terminal
from switch.audit import check_conservation
from switch.config import ServeConfig
from switch.products import amount_for_volume
from switch.server import RunningSwitch, start_switch

CARDS_PER_TERMINAL = 4
CARD_BALANCE_FEN = 2_000_000  # ¥20,000: enough that approvals, not empty cards, dominate 15 s
LATENCY_US_MAX = 60_000_000


def run_demo(duration_s: float = 15.0, terminals: int = 16, seed: int = 2026) -> int:
    return uvloop.run(_demo(duration_s, terminals, seed, Console()))


async def _demo(duration_s: float, terminal_count: int, seed: int, console: Console) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="fuelswitch-demo-"))
    token = secrets.token_hex(16)
    console.print(f"[bold]fuelswitch demo[/]: starting the switch with an embedded PostgreSQL in {data_dir}")
    running = await start_switch(ServeConfig(listen="127.0.0.1:0", data_dir=data_dir, operator_token=token))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            network = await provision(channel, token, terminals=terminal_count,
                                      cards=terminal_count * CARDS_PER_TERMINAL, balance_fen=CARD_BALANCE_FEN)
            console.print(f"provisioned station {network.station_id}: {terminal_count} terminals, "
                          f"{len(network.cards)} cards with ¥{CARD_BALANCE_FEN // 100:,} each")
            stats = Stats()
            pumps = [
                Pump(Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex,
                              require_response_mac=True),
                     network.cards[n * CARDS_PER_TERMINAL:(n + 1) * CARDS_PER_TERMINAL], random.Random(seed + n), stats)
                for n, spec in enumerate(network.terminals)
            ]
            for pump in pumps:
                await pump.terminal.sign_on()
            elapsed = await _drive(pumps, duration_s, stats, console)
        return await _report(running, stats, elapsed, console)
    finally:
        await running.stop(2.0)
        shutil.rmtree(data_dir, ignore_errors=True)


class Stats:
    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.rpcs = 0
        self.cycles = 0
        self.errors = 0
        self.histogram = HdrHistogram(1, LATENCY_US_MAX, 3)


class Pump:
    """One terminal working through its cards: pre-authorize, fuel, complete (or cancel)."""

    def __init__(self, terminal: Terminal, cards: list[CardSpec], rng: random.Random, stats: Stats) -> None:
        self.terminal, self.cards, self.rng, self.stats = terminal, cards, rng, stats

    async def _call(self, coro):  # type: ignore[no-untyped-def]
        started = time.perf_counter_ns()
        try:
            sent = await coro
        except grpc.aio.AioRpcError:
            self.stats.errors += 1
            return None
        self.stats.histogram.record_value(max(1, (time.perf_counter_ns() - started) // 1000))
        self.stats.rpcs += 1
        return sent.response

    async def cycle(self) -> None:
        card = self.rng.choice(self.cards)
        pin = card.pin if self.rng.random() > 0.01 else "000000"  # now and then a customer mistypes
        amount = self.rng.choice([10_000, 20_000, 30_000, 50_000])
        product = self.rng.choice(["92", "95", "0"])
        auth = await self._call(self.terminal.authorize(card.pan, pin, amount, product, partial_allowed=True))
        if auth is None:
            return
        self.stats.codes[auth.response_code] += 1
        if auth.response_code not in ("00", "10"):
            return
        if self.rng.random() < 0.05:  # the driver drives off without fuelling
            await self._call(self.terminal.cancel(auth.hold_id))
            return
        volume_ml = self.rng.randint(1, max(1, auth.approved_volume_ml))  # the tank fills before the preset
        fuelled = amount_for_volume(volume_ml, auth.unit_price)
        done = await self._call(self.terminal.complete(auth.hold_id, fuelled, volume_ml, product, auth.unit_price))
        if done is not None:
            self.stats.cycles += 1

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await self.cycle()


async def _drive(pumps: list[Pump], duration_s: float, stats: Stats, console: Console) -> float:
    started = time.monotonic()
    deadline = started + duration_s
    columns = (TextColumn("pump traffic"), BarColumn(), TextColumn("{task.fields[rpcs]} RPCs"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("traffic", total=duration_s, rpcs=0)
        workers = [asyncio.create_task(p.run(deadline)) for p in pumps]
        while not all(w.done() for w in workers):
            await asyncio.wait(workers, timeout=0.25)  # refresh the bar while the pumps run
            progress.update(task, completed=min(duration_s, time.monotonic() - started), rpcs=stats.rpcs)
        for w in workers:
            w.result()
    return time.monotonic() - started


async def _report(running: RunningSwitch, stats: Stats, elapsed: float, console: Console) -> int:
    await running.app.writer.flush()
    async with running.pool.acquire() as conn:
        report = await check_conservation(conn)
    table = Table(title="fuelswitch demo: one station, simulated pumps")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("pump cycles completed", f"{stats.cycles:,}")
    for code, count in sorted(stats.codes.items()):
        label = {"00": "approved", "10": "partially approved", "51": "declined: insufficient funds",
                 "55": "declined: incorrect PIN", "75": "declined: PIN tries exceeded"}.get(code, f"code {code}")
        table.add_row(f"authorizations {code} ({label})", f"{count:,}")
    table.add_row("gRPC errors", f"{stats.errors:,}")
    table.add_row("RPC/s (client and switch share one process)", f"{stats.rpcs / elapsed:,.0f}")
    h = stats.histogram
    table.add_row("latency p50 / p99 (ms)",
                  f"{h.get_value_at_percentile(50) / 1000:.2f} / {h.get_value_at_percentile(99) / 1000:.2f}")
    table.add_row("group commits / average answers per commit",
                  f"{running.app.writer.stats.commits:,} / "
                  f"{running.app.writer.stats.submissions / max(1, running.app.writer.stats.commits):.1f}")
    table.add_row("money on card accounts (CNY)", f"{report.total_balance / 100:,.2f}")
    table.add_row("conservation in PostgreSQL", "[green]ok[/]" if report.ok else f"[red]BROKEN[/] {report}")
    console.print(table)
    return 0 if report.ok and stats.errors == 0 and stats.cycles > 0 else 1
