"""Core throughput against the pure-Python twin, a ≥1M-operation lock-step run, and memory at scale."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from core import Ledger, Status
from core.reference import Ledger as ReferenceLedger
from tests.bench.results import note
from tests.core.random_ops import run_lockstep

ACCOUNTS = 10_000
CYCLES = 20_000
ENGINES = {"compiled": Ledger, "reference twin": ReferenceLedger}


class Cycles:
    """Fresh ids each round, so every round does real holds and settles (no idempotent repeats)."""

    def __init__(self, engine):
        self.ledger = engine(shards=64)
        for account in range(1, ACCOUNTS + 1):
            self.ledger.open_account(account, 10**12)
        self.next_id = 1

    def batch(self):
        first, self.next_id = self.next_id, self.next_id + CYCLES
        holds = [(h, [(h % ACCOUNTS + 1, 5_000)], 10**12) for h in range(first, first + CYCLES)]
        settles = [(h, 4_321, 1) for h in range(first, first + CYCLES)]
        self.ledger.drain_journal()
        return holds, settles


@pytest.mark.parametrize("engine", list(ENGINES))
def test_single_call_hold_settle(throughput, engine):
    cycles = Cycles(ENGINES[engine])
    work = {}

    def setup():
        work["holds"], work["settles"] = cycles.batch()

    def run():
        hold, settle = cycles.ledger.hold, cycles.ledger.settle
        for (h, legs, expires_at), (_, amount, now) in zip(work["holds"], work["settles"], strict=True):
            hold(h, legs, expires_at)
            settle(h, amount, now)

    throughput("core single-call hold+settle", engine, run, CYCLES, baseline=engine != "compiled", setup=setup)
    assert cycles.ledger.get_hold(cycles.next_id - 1).posted == (4_321,)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_batch_hold_settle(throughput, engine):
    cycles = Cycles(ENGINES[engine])
    work = {}

    def setup():
        work["holds"], work["settles"] = cycles.batch()

    def run():
        assert cycles.ledger.hold_batch(work["holds"])[-1] is Status.OK
        assert cycles.ledger.settle_batch(work["settles"])[-1] is Status.OK

    throughput("core batch hold+settle", engine, run, CYCLES, baseline=engine != "compiled", setup=setup)


def test_million_operation_lockstep_run():
    seed = int(os.environ.get("FUELSWITCH_SEED", time.time_ns() % 2**32))
    ops = int(os.environ.get("FUELSWITCH_LOCKSTEP_OPS", 1_000_000))
    print(f"\nlock-step run: seed={seed} ops={ops:,} (re-run with FUELSWITCH_SEED={seed})")
    started = time.perf_counter()
    run_lockstep(seed, ops, Ledger(shards=64), ReferenceLedger(), check_every=5_000)
    note(f"lock-step compiled vs twin: {ops:,} random operations identical, seed={seed}, "
         f"{time.perf_counter() - started:.0f} s")


RSS_SCRIPT = """
import psutil, sys
from core import Ledger
n = int(sys.argv[1])
proc = psutil.Process()
before = proc.memory_info().rss
ledger = Ledger(shards=64)
for a in range(1, n + 1):
    ledger.open_account(a, 10**9)
step = 100_000
for first in range(1, n + 1, step):
    ledger.hold_batch([(h, [(h, 5_000)], 10**12) for h in range(first, min(first + step, n + 1))])
    ledger.drain_journal()
assert ledger.stats()["holds_pending"] == n
print(proc.memory_info().rss - before)
"""


def test_rss_one_million_accounts_and_open_holds():
    n = 1_000_000
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(n)], check=True, capture_output=True, text=True)
    rss_mb = int(out.stdout.strip()) / 2**20
    note(f"RSS for {n:,} accounts with {n:,} open holds (compiled): {rss_mb:,.0f} MB (goal <= 400 MB)")
    assert rss_mb <= 400
