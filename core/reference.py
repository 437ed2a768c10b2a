"""The pure-Python twin of the compiled ledger: the executable specification.

Same API, same statuses, same journal as `core._ledger.Ledger`. Plain dicts and one
lock: easy to read, slow. Every rule of the engine is written here first, and
the tests drive both engines with the same operations and compare every answer.

Checks run in `Status` order, so the first failing check is the status with
the highest precedence.
"""

from __future__ import annotations

import heapq
import operator
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import SupportsIndex

from core.types import (
    INT64_MAX,
    INT64_MIN,
    LEGS_MAX,
    HoldInfo,
    HoldState,
    JournalEntry,
    Kind,
    Leg,
    Status,
)

__all__ = ["Ledger"]


def _int64(value: SupportsIndex, name: str) -> int:
    number = operator.index(value)  # TypeError for floats, strings, None
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError(f"{name} {number} is outside the int64 range")
    return number


def _parse_legs(legs: Sequence[Sequence[int]]) -> tuple[Leg, ...] | Status:
    try:
        count = len(legs)
    except TypeError:
        raise TypeError("legs must be a sequence of (account_id, amount) pairs") from None
    if count == 0:
        return Status.LEGS_EMPTY
    if count > LEGS_MAX:
        return Status.LEGS_TOO_MANY
    parsed = []
    for leg in legs:
        try:
            account_id, amount = leg
        except (TypeError, ValueError):
            raise TypeError("each leg must be an (account_id, amount) pair") from None
        parsed.append((_int64(account_id, "account_id"), _int64(amount, "amount")))
    return tuple(parsed)


@dataclass
class _Account:
    balance: int
    held: int
    overdraft: int
    opening_balance: int


@dataclass
class _Hold:
    state: HoldState
    expires_at: int
    legs: tuple[Leg, ...]
    posted: tuple[int, ...]
    status: Status


@dataclass(frozen=True)
class _Txn:
    kind: Kind  # CREDIT or DEBIT
    account_id: int
    amount: int
    forced: bool
    status: Status


class Ledger:
    """Two-phase, multi-leg reservation engine (reference implementation)."""

    def __init__(self, shards: int = 64, *, next_seq: int = 1) -> None:
        if operator.index(shards) <= 0:
            raise ValueError("shards must be positive")
        self._lock = threading.Lock()
        self._accounts: dict[int, _Account] = {}
        self._holds: dict[int, _Hold] = {}
        self._txns: dict[int, _Txn] = {}
        self._expiry: list[tuple[int, int]] = []  # heap of (expires_at, hold_id); lazy deletion
        self._journal: list[JournalEntry] = []
        self._next_seq = _int64(next_seq, "next_seq")

    # -- journal -------------------------------------------------------------

    def _log(self, kind: Kind, ref: int, legs: tuple[Leg, ...], value: int, status: Status) -> None:
        self._journal.append(JournalEntry(self._next_seq, kind, ref, legs, value, status))
        self._next_seq += 1

    def drain_journal(self, max_entries: int = 0) -> list[JournalEntry]:
        """Remove and return journal entries in order (all of them when max_entries is 0)."""
        with self._lock:
            count = len(self._journal) if max_entries <= 0 else min(max_entries, len(self._journal))
            taken, self._journal = self._journal[:count], self._journal[count:]
            return taken

    # -- accounts ------------------------------------------------------------

    def open_account(self, account_id: int, balance: int = 0, overdraft: int = 0) -> Status:
        account_id = _int64(account_id, "account_id")
        balance = _int64(balance, "balance")
        overdraft = _int64(overdraft, "overdraft")
        with self._lock:
            if account_id <= 0:
                return Status.ID_INVALID
            if balance < 0 or overdraft < 0:
                return Status.AMOUNT_INVALID
            existing = self._accounts.get(account_id)
            if existing is not None:
                same = (existing.opening_balance, existing.overdraft) == (balance, overdraft)
                return Status.OK if same else Status.ACCOUNT_EXISTS
            self._accounts[account_id] = _Account(balance, 0, overdraft, balance)
            self._log(Kind.OPEN, account_id, ((account_id, balance),), overdraft, Status.OK)
            return Status.OK

    def balance(self, account_id: int) -> tuple[int, int]:
        account_id = _int64(account_id, "account_id")
        with self._lock:
            account = self._accounts.get(account_id)
            if account is None:
                raise ValueError(f"account {account_id} does not exist")
            return account.balance, account.held

    # -- holds ---------------------------------------------------------------

    def hold(self, hold_id: int, legs: Sequence[Sequence[int]], expires_at: int) -> Status:
        hold_id = _int64(hold_id, "hold_id")
        expires_at = _int64(expires_at, "expires_at")
        parsed = _parse_legs(legs)
        with self._lock:
            return self._hold(hold_id, parsed, expires_at)

    def _hold(self, hold_id: int, parsed: tuple[Leg, ...] | Status, expires_at: int) -> Status:
        if hold_id <= 0:
            return Status.ID_INVALID
        if isinstance(parsed, Status):
            return parsed
        if any(amount <= 0 for _, amount in parsed):
            return Status.AMOUNT_INVALID
        if len({account_id for account_id, _ in parsed}) != len(parsed):
            return Status.LEGS_DUPLICATE_ACCOUNT
        existing = self._holds.get(hold_id)
        if existing is not None:
            if (existing.legs, existing.expires_at) == (parsed, expires_at):
                return existing.status
            return Status.EXISTS_WITH_DIFFERENT_CONTENT
        status = self._hold_check(parsed)
        if status is not Status.OK:
            self._holds[hold_id] = _Hold(HoldState.REJECTED, expires_at, parsed, (0,) * len(parsed), status)
            self._log(Kind.HOLD_REJECTED, hold_id, parsed, expires_at, status)
            return status
        for account_id, amount in parsed:
            self._accounts[account_id].held += amount
        self._holds[hold_id] = _Hold(HoldState.PENDING, expires_at, parsed, (0,) * len(parsed), Status.OK)
        heapq.heappush(self._expiry, (expires_at, hold_id))
        self._log(Kind.HOLD, hold_id, parsed, expires_at, Status.OK)
        return Status.OK

    def _hold_check(self, legs: tuple[Leg, ...]) -> Status:
        accounts = [self._accounts.get(account_id) for account_id, _ in legs]
        if any(account is None for account in accounts):
            return Status.ACCOUNT_NOT_FOUND
        pairs = [(a, amount) for a, (_, amount) in zip(accounts, legs, strict=True) if a is not None]
        if any(account.held + amount > INT64_MAX for account, amount in pairs):
            return Status.OVERFLOW
        if any(a.balance - a.held - amount < -a.overdraft for a, amount in pairs):
            return Status.INSUFFICIENT_FUNDS
        return Status.OK

    def settle(self, hold_id: int, amount: int | Sequence[int], now: int) -> Status:
        hold_id = _int64(hold_id, "hold_id")
        now = _int64(now, "now")
        amounts = self._parse_settle_amounts(amount)
        with self._lock:
            return self._settle(hold_id, amounts, now)

    @staticmethod
    def _parse_settle_amounts(amount: int | Sequence[int]) -> int | tuple[int, ...]:
        if hasattr(amount, "__index__"):
            return _int64(amount, "amount")
        if not isinstance(amount, Sequence):
            raise TypeError("amount must be an int or a sequence of ints, one per leg")
        if len(amount) > LEGS_MAX:
            raise ValueError(f"settle takes at most {LEGS_MAX} amounts")
        return tuple(_int64(a, "amount") for a in amount)

    def _settle(self, hold_id: int, amounts: int | tuple[int, ...], now: int) -> Status:
        if hold_id <= 0:
            return Status.ID_INVALID
        if any(a < 0 for a in (amounts if isinstance(amounts, tuple) else (amounts,))):
            return Status.AMOUNT_INVALID
        hold = self._holds.get(hold_id)
        if hold is None or hold.state is HoldState.REJECTED:
            return Status.HOLD_NOT_FOUND
        if isinstance(amounts, int):
            amounts = (amounts,) * len(hold.legs)
        if len(amounts) != len(hold.legs):
            return Status.LEGS_MISMATCH
        if hold.state is HoldState.SETTLED:
            return Status.OK if hold.posted == amounts else Status.HOLD_SETTLED
        if hold.state is HoldState.VOIDED:
            return Status.HOLD_VOIDED
        if hold.state is HoldState.EXPIRED:
            return Status.HOLD_EXPIRED
        if now >= hold.expires_at:
            self._release(hold_id, hold, HoldState.EXPIRED, Kind.EXPIRE, now)
            return Status.HOLD_EXPIRED
        if any(posted > held for posted, (_, held) in zip(amounts, hold.legs, strict=True)):
            return Status.SETTLE_EXCEEDS_HOLD
        for (account_id, held), posted in zip(hold.legs, amounts, strict=True):
            account = self._accounts[account_id]
            account.held -= held
            account.balance -= posted
        hold.state = HoldState.SETTLED
        hold.posted = amounts
        legs = tuple((account_id, posted) for (account_id, _), posted in zip(hold.legs, amounts, strict=True))
        self._log(Kind.SETTLE, hold_id, legs, now, Status.OK)
        return Status.OK

    def void(self, hold_id: int) -> Status:
        hold_id = _int64(hold_id, "hold_id")
        with self._lock:
            return self._void(hold_id)

    def _void(self, hold_id: int) -> Status:
        if hold_id <= 0:
            return Status.ID_INVALID
        hold = self._holds.get(hold_id)
        if hold is None or hold.state is HoldState.REJECTED:
            return Status.HOLD_NOT_FOUND
        if hold.state is HoldState.SETTLED:
            return Status.HOLD_SETTLED
        if hold.state is HoldState.VOIDED:
            return Status.OK
        if hold.state is HoldState.EXPIRED:
            return Status.HOLD_EXPIRED
        self._release(hold_id, hold, HoldState.VOIDED, Kind.VOID, 0)
        return Status.OK

    def _release(self, hold_id: int, hold: _Hold, state: HoldState, kind: Kind, value: int) -> None:
        for account_id, amount in hold.legs:
            self._accounts[account_id].held -= amount
        hold.state = state
        self._log(kind, hold_id, hold.legs, value, Status.OK)

    def expire(self, now: int, limit: int = 0) -> int:
        """Release pending holds whose deadline is at or before `now`, earliest first, at most `limit` (0: all)."""
        now = _int64(now, "now")
        limit = _int64(limit, "limit")
        if limit < 0:
            raise ValueError("limit must be >= 0")
        released = 0
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now and (limit == 0 or released < limit):
                _, hold_id = heapq.heappop(self._expiry)
                hold = self._holds[hold_id]
                if hold.state is HoldState.PENDING:
                    self._release(hold_id, hold, HoldState.EXPIRED, Kind.EXPIRE, now)
                    released += 1
        return released

    def get_hold(self, hold_id: int) -> HoldInfo | None:
        hold_id = _int64(hold_id, "hold_id")
        with self._lock:
            hold = self._holds.get(hold_id)
            if hold is None:
                return None
            return HoldInfo(hold.state, hold.expires_at, hold.legs, hold.posted, hold.status)

    # -- direct movements ----------------------------------------------------

    def credit(self, txn_id: int, account_id: int, amount: int) -> Status:
        txn = (_int64(txn_id, "txn_id"), _int64(account_id, "account_id"), _int64(amount, "amount"))
        with self._lock:
            return self._move(Kind.CREDIT, *txn, False)

    def debit(self, txn_id: int, account_id: int, amount: int, force: bool = False) -> Status:
        txn = (_int64(txn_id, "txn_id"), _int64(account_id, "account_id"), _int64(amount, "amount"))
        with self._lock:
            return self._move(Kind.DEBIT, *txn, bool(force))

    def _move(self, kind: Kind, txn_id: int, account_id: int, amount: int, forced: bool) -> Status:
        if txn_id <= 0:
            return Status.ID_INVALID
        if amount <= 0:
            return Status.AMOUNT_INVALID
        existing = self._txns.get(txn_id)
        if existing is not None:
            if (existing.kind, existing.account_id, existing.amount, existing.forced) == (
                kind,
                account_id,
                amount,
                forced,
            ):
                return existing.status
            return Status.EXISTS_WITH_DIFFERENT_CONTENT
        status = self._move_check(kind, account_id, amount, forced)
        value = int(forced)
        legs = ((account_id, amount),)
        self._txns[txn_id] = _Txn(kind, account_id, amount, forced, status)
        if not status.applied:
            rejected = Kind.CREDIT_REJECTED if kind is Kind.CREDIT else Kind.DEBIT_REJECTED
            self._log(rejected, txn_id, legs, value, status)
            return status
        account = self._accounts[account_id]
        account.balance += amount if kind is Kind.CREDIT else -amount
        self._log(kind, txn_id, legs, value, status)
        return status

    def _move_check(self, kind: Kind, account_id: int, amount: int, forced: bool) -> Status:
        account = self._accounts.get(account_id)
        if account is None:
            return Status.ACCOUNT_NOT_FOUND
        if kind is Kind.CREDIT:
            return Status.OVERFLOW if account.balance + amount > INT64_MAX else Status.OK
        if account.balance - amount < INT64_MIN:
            return Status.OVERFLOW
        below_floor = account.balance - account.held - amount < -account.overdraft
        if below_floor:
            return Status.OK_NEGATIVE if forced else Status.INSUFFICIENT_FUNDS
        return Status.OK

    # -- batches (the compiled engine releases the GIL here) ------------------

    # Like the compiled engine, a batch parses every item before applying any, so a
    # malformed item raises and leaves the ledger unchanged.

    def hold_batch(self, holds: Iterable[tuple[int, Sequence[Sequence[int]], int]]) -> list[Status]:
        parsed = [
            (_int64(h, "hold_id"), _parse_legs(legs), _int64(e, "expires_at")) for h, legs, e in holds
        ]
        with self._lock:
            return [self._hold(h, legs, e) for h, legs, e in parsed]

    def settle_batch(self, settles: Iterable[tuple[int, int | Sequence[int], int]]) -> list[Status]:
        parsed = [
            (_int64(h, "hold_id"), self._parse_settle_amounts(a), _int64(now, "now")) for h, a, now in settles
        ]
        with self._lock:
            return [self._settle(h, a, now) for h, a, now in parsed]

    def void_batch(self, hold_ids: Iterable[int]) -> list[Status]:
        parsed = [_int64(h, "hold_id") for h in hold_ids]
        with self._lock:
            return [self._void(h) for h in parsed]

    def credit_batch(self, credits: Iterable[tuple[int, int, int]]) -> list[Status]:
        return self._move_batch(Kind.CREDIT, credits, False)

    def debit_batch(self, debits: Iterable[tuple[int, int, int]], force: bool = False) -> list[Status]:
        return self._move_batch(Kind.DEBIT, debits, bool(force))

    def _move_batch(self, kind: Kind, items: Iterable[tuple[int, int, int]], forced: bool) -> list[Status]:
        parsed = [
            (_int64(t, "txn_id"), _int64(a, "account_id"), _int64(m, "amount")) for t, a, m in items
        ]
        with self._lock:
            return [self._move(kind, t, a, m, forced) for t, a, m in parsed]

    # -- recovery: rebuild from the database without writing the journal -------

    def restore_account(
        self, account_id: int, balance: int, overdraft: int = 0, opening_balance: int = 0
    ) -> None:
        account_id = _int64(account_id, "account_id")
        values = (_int64(balance, "balance"), _int64(overdraft, "overdraft"))
        opening = _int64(opening_balance, "opening_balance")
        with self._lock:
            if account_id <= 0 or account_id in self._accounts:
                raise ValueError(f"cannot restore account {account_id}: invalid or already present")
            self._accounts[account_id] = _Account(values[0], 0, values[1], opening)

    def restore_hold(
        self,
        hold_id: int,
        legs: Sequence[Sequence[int]],
        expires_at: int,
        state: HoldState = HoldState.PENDING,
        posted: Sequence[int] | None = None,
        status: Status = Status.OK,
    ) -> None:
        hold_id = _int64(hold_id, "hold_id")
        expires_at = _int64(expires_at, "expires_at")
        parsed = _parse_legs(legs)
        state = HoldState(state)
        if isinstance(parsed, Status):
            raise ValueError(f"cannot restore hold {hold_id}: {parsed.name}")
        posted_t = tuple(_int64(p, "posted") for p in posted) if posted else (0,) * len(parsed)
        if len(posted_t) != len(parsed):
            raise ValueError(f"cannot restore hold {hold_id}: posted amounts do not match its legs")
        with self._lock:
            if hold_id <= 0 or hold_id in self._holds:
                raise ValueError(f"cannot restore hold {hold_id}: invalid or already present")
            if state is HoldState.PENDING:
                if any(account_id not in self._accounts for account_id, _ in parsed):
                    raise ValueError(f"cannot restore hold {hold_id}: an account is missing")
                for account_id, amount in parsed:
                    self._accounts[account_id].held += amount
                heapq.heappush(self._expiry, (expires_at, hold_id))
            self._holds[hold_id] = _Hold(state, expires_at, parsed, posted_t, Status(status))

    def restore_txn(
        self,
        txn_id: int,
        kind: Kind,
        account_id: int,
        amount: int,
        force: bool = False,
        status: Status = Status.OK,
    ) -> None:
        txn_id = _int64(txn_id, "txn_id")
        kind = Kind(kind)
        if kind not in (Kind.CREDIT, Kind.DEBIT):
            raise ValueError("restore_txn takes Kind.CREDIT or Kind.DEBIT")
        txn = _Txn(kind, _int64(account_id, "account_id"), _int64(amount, "amount"), bool(force), Status(status))
        with self._lock:
            if txn_id <= 0 or txn_id in self._txns:
                raise ValueError(f"cannot restore txn {txn_id}: invalid or already present")
            self._txns[txn_id] = txn

    def check_invariants(self) -> None:
        """Each account's held equals the sum of its pending holds' legs."""
        with self._lock:
            pending: dict[int, int] = {}
            for hold in self._holds.values():
                if hold.state is HoldState.PENDING:
                    for account_id, amount in hold.legs:
                        pending[account_id] = pending.get(account_id, 0) + amount
            for account_id, account in self._accounts.items():
                if account.held != pending.get(account_id, 0):
                    raise AssertionError(f"account {account_id}: held differs from the sum of its pending holds")

    def stats(self) -> dict[str, int]:
        with self._lock:
            pending = sum(1 for h in self._holds.values() if h.state is HoldState.PENDING)
            return {
                "accounts": len(self._accounts),
                "holds": len(self._holds),
                "holds_pending": pending,
                "txns": len(self._txns),
                "journal_pending": len(self._journal),
                "next_seq": self._next_seq,
            }
