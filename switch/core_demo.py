"""A demonstration of the hold/settle core: pump traffic against the compiled ledger.

It opens card accounts, runs pre-authorization/completion cycles (with some
declines, cancels and expiries) through the compiled engine, and checks that
money is conserved against the journal the engine produced.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from core import Kind, Ledger, Status


@dataclass(frozen=True)
class CoreDemoConfig:
    accounts: int = 10_000
    cycles: int = 300_000
    batch_size: int = 1_000
    seed: int = 7
    hold_ttl_ms: int = 180_000


def run_core_demo(config: CoreDemoConfig = CoreDemoConfig(), console: Console | None = None) -> int:
    console = console or Console()
    rng = random.Random(config.seed)
    ledger = Ledger(shards=64)
    opening = 0
    for account in range(1, config.accounts + 1):
        balance = rng.randint(0, 200_000)  # up to 2,000 CNY
        ledger.open_account(account, balance)
        opening += balance
    counts: dict[Status, int] = {}
    posted = 0
    now = 1_700_000_000_000
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("pump traffic (hold → settle)", total=config.cycles)
        next_hold = 1
        for _ in range(0, config.cycles, config.batch_size):
            ids = range(next_hold, next_hold + config.batch_size)
            next_hold += config.batch_size
            requested = {h: rng.choice([10_000, 20_000, 30_000, 50_000]) for h in ids}
            holds = [(h, [(rng.randint(1, config.accounts), requested[h])], now + config.hold_ttl_ms) for h in ids]
            for status in ledger.hold_batch(holds):
                counts[status] = counts.get(status, 0) + 1
            fuelled = [(h, rng.randint(1, requested[h]), now + 1) for h in ids if rng.random() < 0.97]
            ledger.settle_batch(fuelled)
            now += 10
            progress.advance(task, config.batch_size)
    ledger.expire(now + config.hold_ttl_ms)  # pumps that never completed
    elapsed = time.perf_counter() - started
    for entry in ledger.drain_journal():
        if entry.kind is Kind.SETTLE:
            posted += sum(amount for _, amount in entry.legs)
    total = sum(ledger.balance(a)[0] for a in range(1, config.accounts + 1))
    held = sum(ledger.balance(a)[1] for a in range(1, config.accounts + 1))

    table = Table(title="fuelswitch core demonstration")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("card accounts", f"{config.accounts:,}")
    table.add_row("pre-authorizations", f"{config.cycles:,}")
    for status, count in sorted(counts.items()):
        table.add_row(f"  {status.name}", f"{count:,}")
    table.add_row("hold+settle cycles/s", f"{config.cycles / elapsed:,.0f}")
    table.add_row("fuel sold (CNY)", f"{posted / 100:,.2f}")
    table.add_row("conservation", "ok" if total == opening - posted and held == 0 else "BROKEN")
    console.print(table)
    return 0 if total == opening - posted and held == 0 else 1
