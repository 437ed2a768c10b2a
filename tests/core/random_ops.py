"""A seeded random workload that drives two ledgers in lock-step and compares every answer.

Used by the equivalence tests and by the ≥1M-operation run in `make bench`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from core import LEGS_MAX, Kind

OPEN_KINDS = (Kind.OPEN, Kind.CREDIT)


class MoneyModel:
    """Balances and holds as the journal says they must be, built entry by entry.

    Conservation: each balance = opening balance + credits - posted debits and
    settlements; each held = the sum of that account's pending holds.
    """

    def __init__(self) -> None:
        self.balance: dict[int, int] = {}
        self.pending: dict[int, tuple[tuple[int, int], ...]] = {}

    def consume(self, journal: list[Any]) -> None:
        for e in journal:
            if e.kind in OPEN_KINDS:
                for account, amount in e.legs:
                    self.balance[account] = self.balance.get(account, 0) + amount
            elif e.kind is Kind.DEBIT or e.kind is Kind.SETTLE:
                for account, amount in e.legs:
                    self.balance[account] = self.balance.get(account, 0) - amount
            if e.kind is Kind.HOLD:
                self.pending[e.ref] = e.legs
            elif e.kind in (Kind.SETTLE, Kind.VOID, Kind.EXPIRE):
                self.pending.pop(e.ref, None)

    def check(self, ledger: Any, accounts: list[int]) -> None:
        held: dict[int, int] = {}
        for legs in self.pending.values():
            for account, amount in legs:
                held[account] = held.get(account, 0) + amount
        for account in accounts:
            want = (self.balance.get(account, 0), held.get(account, 0))
            assert ledger.balance(account) == want, f"account {account}: {ledger.balance(account)} != {want}"
        ledger.check_invariants()


def conservation(ledger: Any, accounts: list[int], journal: list[Any]) -> None:
    """Check `ledger` against the whole `journal` (see MoneyModel)."""
    model = MoneyModel()
    model.consume(journal)
    model.check(ledger, accounts)


class RandomOps:
    """Generates operations over a small id space so that collisions, repeats and declines happen."""

    def __init__(self, seed: int, accounts: int = 40, holds: int = 4_000) -> None:
        self.rng = random.Random(seed)
        self.accounts = accounts
        self.holds = holds
        self.now = 1_000
        self.next_id = 1

    def _amount(self) -> int:
        r = self.rng.random()
        if r < 0.02:
            return self.rng.choice([0, -1, 2**62, 2**63 - 1])
        return self.rng.randint(1, 5_000)

    def _legs(self) -> list[tuple[int, int]]:
        n = self.rng.choice([1, 1, 1, 2, 3, LEGS_MAX]) if self.rng.random() > 0.01 else LEGS_MAX + 1
        ids = [self.rng.randint(1, self.accounts + 2) for _ in range(n)]  # +2: sometimes unknown
        return [(a, self._amount()) for a in ids]

    def op(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        rng = self.rng
        kind = rng.random()
        self.now += rng.randint(0, 50)
        hold_id = rng.randint(1, self.holds)
        if kind < 0.03:
            return "open_account", (rng.randint(-1, self.accounts), rng.randint(0, 50_000), rng.choice([0, 0, 1_000])), {}
        if kind < 0.35:
            return "hold", (hold_id, self._legs(), self.now + rng.randint(1, 2_000)), {}
        if kind < 0.60:
            amount: Any = rng.randint(0, 5_000) if rng.random() < 0.8 else [rng.randint(0, 5_000) for _ in range(rng.randint(1, 3))]
            return "settle", (hold_id, amount, self.now), {}
        if kind < 0.70:
            return "void", (hold_id,), {}
        if kind < 0.75:
            return "expire", (self.now, rng.choice([0, 0, 1, 3])), {}
        txn = rng.randint(1, self.holds)
        account = rng.randint(1, self.accounts + 1)
        if kind < 0.87:
            return "credit", (txn, account, self._amount()), {}
        return "debit", (txn, account, self._amount()), {"force": rng.random() < 0.3}


def apply(ledger: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return getattr(ledger, name)(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        return type(exc)


def run_lockstep(
    seed: int,
    n_ops: int,
    a: Any,
    b: Any,
    check_every: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Apply the same `n_ops` random operations to `a` and `b`; assert identical results. Returns ops run."""
    gen = RandomOps(seed)
    accounts = list(range(1, gen.accounts + 1))
    for account in accounts[: gen.accounts // 2]:
        for ledger in (a, b):
            ledger.open_account(account, 20_000)
    model = MoneyModel()
    for i in range(n_ops):
        name, args, kwargs = gen.op()
        ra, rb = apply(a, name, args, kwargs), apply(b, name, args, kwargs)
        assert ra == rb, f"seed={seed} op#{i} {name}{args}{kwargs}: {ra!r} != {rb!r}"
        if (i + 1) % check_every == 0 or i + 1 == n_ops:
            ja, jb = a.drain_journal(), b.drain_journal()
            assert ja == jb, f"seed={seed} journals differ before op#{i}"
            model.consume(ja)
            known = [acc for acc in accounts if _exists(a, acc)]
            for acc in known:
                assert a.balance(acc) == b.balance(acc), f"seed={seed} account {acc} after op#{i}"
            model.check(a, known)
            if progress:
                progress(i + 1)
    return n_ops


def _exists(ledger: Any, account: int) -> bool:
    try:
        ledger.balance(account)
    except ValueError:
        return False
    return True
