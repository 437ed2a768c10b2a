"""`fuelswitch verify`: walk the journal's hash chain and check balances against the journal's sums.

Each problem names the row: an edited row (its own link does not verify), a deleted row (a seq gap,
or a `prev_chain` that no row carries), a moved row (its `prev_chain` is the chain of a row other than
the one before it). After a problem the walk carries on from the row's stored chain, so several
independent problems are all reported. Balances and pending holds are then checked against the
journal with `switch.audit.check_conservation`, which also catches rows cut off the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from switch import journal_chain
from switch.audit import ConservationReport, check_conservation
from switch.keyring import Keyring, KeyringError

FETCH_ROWS = 10_000
PROBLEMS_MAX = 100  # enough to see what happened; a wholesale rewrite would only repeat itself
PROGRESS_EVERY_ROWS = 100_000


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # edited | deleted | moved | unchained | unknown-key
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    rows: int = 0
    unchained: int = 0  # rows written before the chain existed (migration 0002), all before the first link
    key_versions: set[int] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
    conservation: ConservationReport | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.conservation is not None and self.conservation.ok


_ROWS = """SELECT seq, kind, ref, account_ids, amounts, value, status, recorded_ms, key_version, prev_chain, chain
           FROM journal ORDER BY seq"""


async def verify(conn: asyncpg.Connection, keyring: Keyring,
                 progress: Callable[[int], None] = lambda rows: None) -> VerifyReport:
    report = VerifyReport()
    walk = _Walk(conn, keyring, report)
    async with conn.transaction(isolation="repeatable_read", readonly=True):  # one consistent snapshot
        async for row in conn.cursor(_ROWS, prefetch=FETCH_ROWS):
            await walk.step(row)
            if report.rows % PROGRESS_EVERY_ROWS == 0:
                progress(report.rows)
        report.conservation = await check_conservation(conn)
    return report


class _Walk:
    def __init__(self, conn: asyncpg.Connection, keyring: Keyring, report: VerifyReport) -> None:
        self._conn = conn
        self._keyring = keyring
        self._report = report
        self._prev_seq: int | None = None
        self._prev_chain: bytes | None = None  # None until the first chained row

    def _problem(self, seq: int, kind: str, detail: str) -> None:
        if len(self._report.problems) < PROBLEMS_MAX:
            self._report.problems.append(Problem(seq, kind, detail))

    async def step(self, row: asyncpg.Record) -> None:
        report, seq = self._report, row["seq"]
        report.rows += 1
        gap = self._prev_seq is not None and seq != self._prev_seq + 1
        if gap:
            assert self._prev_seq is not None
            self._problem(seq, "deleted", f"rows {self._prev_seq + 1}..{seq - 1} are missing")
        self._prev_seq = seq
        if row["chain"] is None:
            if self._prev_chain is None:
                report.unchained += 1
            else:
                self._problem(seq, "edited", "its chain was removed")
            return
        chain, prev = bytes(row["chain"]), bytes(row["prev_chain"] or b"")
        try:
            key = self._keyring.get("journal", row["key_version"])
        except KeyringError as exc:
            self._problem(seq, "unknown-key", str(exc))
            self._prev_chain = chain
            return
        report.key_versions.add(row["key_version"])
        content = journal_chain.content(row["kind"], row["ref"], row["account_ids"], row["amounts"], row["value"],
                                        row["status"], row["recorded_ms"])
        if journal_chain.link(key, prev, content) != chain:
            self._problem(seq, "edited", "its content or chain does not match its own link")
        elif not gap:
            expected = self._prev_chain if self._prev_chain is not None else journal_chain.GENESIS
            if prev != expected:
                await self._misplaced(seq, prev)
        self._prev_chain = chain  # carry on from what is stored, to find independent problems too

    async def _misplaced(self, seq: int, prev: bytes) -> None:
        """The row is intact but does not follow the row before it: moved, or its predecessor is gone."""
        if prev == journal_chain.GENESIS:
            self._problem(seq, "moved", "it was written as the first chained row")
            return
        before = await self._conn.fetchval("SELECT seq FROM journal WHERE chain = $1 LIMIT 1", prev)
        if before is None:
            self._problem(seq, "deleted", "the row written before it is missing")
        else:
            self._problem(seq, "moved", f"it was written after the row now at seq {before}")


def render(report: VerifyReport) -> str:
    lines = [f"journal: {report.rows:,} rows checked"
             + (f" ({report.unchained:,} from before the chain)" if report.unchained else "")
             + (f", key versions {', '.join(map(str, sorted(report.key_versions)))}" if report.key_versions else "")]
    if report.problems:
        lines.append(f"chain: {len(report.problems)} problem(s)"
                     + (f" (first {PROBLEMS_MAX} shown)" if len(report.problems) >= PROBLEMS_MAX else ""))
        lines.extend(f"  {p}" for p in report.problems)
    else:
        lines.append("chain: intact")
    c = report.conservation
    if c is not None:
        if c.ok:
            lines.append(f"balances: {c.accounts:,} accounts equal the journal's sums "
                         f"(total {c.total_balance:,} fen, held {c.total_held:,} fen)")
        else:
            lines.append(f"balances: {len(c.mismatched_accounts)} account(s) differ from the journal's sums"
                         f" (first: {c.mismatched_accounts[:10]}); {c.mismatched_holds} hold(s) disagree")
    lines.append("OK" if report.ok else "FAILED")
    return "\n".join(lines)
