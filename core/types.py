"""Values shared by the compiled ledger and its pure-Python twin.

Both engines return the same `Status` members and yield the same
`JournalEntry` tuples, so tests can compare them item by item.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

# Limits (TigerBeetle style: every limit named, unit last).
LEGS_MAX = 8  # a hold reserves against at most this many accounts (funds + card limits)
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


class Status(IntEnum):
    """Result of one ledger operation, ordered by precedence.

    When several reasons apply, the lowest-numbered one is returned. Codes
    below `ID_INVALID` mean the operation was applied.
    """

    OK = 0
    OK_NEGATIVE = 1  # forced debit applied and took available below the account's floor
    # Validation: decided from the arguments alone; nothing is recorded.
    ID_INVALID = 2  # id <= 0
    LEGS_EMPTY = 3
    LEGS_TOO_MANY = 4  # more than LEGS_MAX legs
    AMOUNT_INVALID = 5  # amount <= 0 (settle: < 0); negative opening balance or overdraft
    LEGS_DUPLICATE_ACCOUNT = 6  # the same account twice in one hold
    # Idempotency.
    EXISTS_WITH_DIFFERENT_CONTENT = 7  # id already used with other content
    ACCOUNT_EXISTS = 8  # open_account: id used with another opening balance or overdraft
    # State: decided against the ledger; a failed hold/credit/debit id stays failed.
    ACCOUNT_NOT_FOUND = 9
    HOLD_NOT_FOUND = 10
    LEGS_MISMATCH = 11  # settle: a sequence of amounts whose length differs from the hold's legs
    HOLD_SETTLED = 12  # already settled (with other amounts), or a void after settle
    HOLD_VOIDED = 13
    HOLD_EXPIRED = 14
    SETTLE_EXCEEDS_HOLD = 15
    OVERFLOW = 16  # a balance or held sum would pass int64
    INSUFFICIENT_FUNDS = 17

    @property
    def applied(self) -> bool:
        return self < Status.ID_INVALID


class Kind(IntEnum):
    """What a journal entry records."""

    OPEN = 1  # ref=account; legs=((account, opening balance),); value=overdraft
    HOLD = 2  # ref=hold; legs=reserved amounts; value=expires_at
    SETTLE = 3  # ref=hold; legs=posted amounts (the rest of each leg released); value=now
    VOID = 4  # ref=hold; legs=released amounts
    EXPIRE = 5  # ref=hold; legs=released amounts; value=the expiry time observed
    CREDIT = 6  # ref=txn; legs=((account, amount),)
    DEBIT = 7  # ref=txn; legs=((account, amount),); value=1 when forced
    HOLD_REJECTED = 8  # ref=hold; legs=requested; value=expires_at; status=why
    CREDIT_REJECTED = 9  # ref=txn; legs=requested; status=why
    DEBIT_REJECTED = 10  # ref=txn; legs=requested; value=1 when forced; status=why


class HoldState(IntEnum):
    PENDING = 1
    SETTLED = 2
    VOIDED = 3
    EXPIRED = 4
    REJECTED = 5  # the hold id failed; it stays failed


Leg = tuple[int, int]


class JournalEntry(NamedTuple):
    """One state change, in the order the ledger applied it."""

    seq: int
    kind: Kind
    ref: int
    legs: tuple[Leg, ...]
    value: int
    status: Status


class HoldInfo(NamedTuple):
    state: HoldState
    expires_at: int
    legs: tuple[Leg, ...]  # the reserved amounts
    posted: tuple[int, ...]  # per leg, once settled; zeros otherwise
    status: Status  # the result the hold id was given


STATUS_BY_CODE: tuple[Status, ...] = tuple(Status)
KIND_BY_CODE: dict[int, Kind] = {k.value: k for k in Kind}
