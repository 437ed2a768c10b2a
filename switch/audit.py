"""Conservation of money, checked in PostgreSQL: every balance equals what the journal says it must be.

balance = opening + credits - debits - settled amounts, per account, from the journal rows; and the
pending holds are exactly the holds whose HOLD entry has no SETTLE, VOID or EXPIRE after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from core import Kind

_JOURNAL_BALANCES = f"""
WITH legs AS (
    SELECT j.kind, u.account_id, u.amount
    FROM journal j, unnest(j.account_ids, j.amounts) AS u(account_id, amount)
    WHERE j.kind IN ({int(Kind.OPEN)}, {int(Kind.CREDIT)}, {int(Kind.DEBIT)}, {int(Kind.SETTLE)})
)
SELECT account_id,
       sum(CASE WHEN kind IN ({int(Kind.OPEN)}, {int(Kind.CREDIT)}) THEN amount ELSE -amount END)::bigint AS expected
FROM legs GROUP BY account_id
"""

_PENDING_MISMATCH = f"""
SELECT count(*) FROM holds h
WHERE (h.state = 1) <> NOT EXISTS (
    SELECT 1 FROM journal j WHERE j.ref = h.hold_id
      AND j.kind IN ({int(Kind.SETTLE)}, {int(Kind.VOID)}, {int(Kind.EXPIRE)}))
  AND h.status = 0
"""


@dataclass(frozen=True)
class ConservationReport:
    accounts: int
    total_balance: int
    total_held: int
    mismatched_accounts: list[int]
    mismatched_holds: int

    @property
    def ok(self) -> bool:
        return not self.mismatched_accounts and self.mismatched_holds == 0


async def check_conservation(conn: asyncpg.Connection) -> ConservationReport:
    expected = {r["account_id"]: r["expected"] for r in await conn.fetch(_JOURNAL_BALANCES)}
    accounts = await conn.fetch("SELECT account_id, balance FROM accounts")
    wrong = [r["account_id"] for r in accounts if r["balance"] != expected.get(r["account_id"], 0)]
    held = await conn.fetchval(
        "SELECT coalesce(sum(a), 0)::bigint FROM holds, unnest(amounts) AS a WHERE state = 1"
    )
    return ConservationReport(
        accounts=len(accounts),
        total_balance=sum(r["balance"] for r in accounts),
        total_held=held,
        mismatched_accounts=wrong,
        mismatched_holds=await conn.fetchval(_PENDING_MISMATCH),
    )
