"""The journal writer: group commit of many requests' decisions in one PostgreSQL transaction.

A request applies its decision to the core, then `submit`s its business records (the response it
will give, card updates, ...) and awaits the returned future. The writer loop takes every queued
submission, drains the core's journal (which already holds the entries of all of them, since each
core call happened before its submit), writes both in one transaction, commits, and only then
resolves the futures. A lone request is written at once; under load, requests that arrive during a
commit form the next batch, so batches grow with load without any timer.

If a commit fails, every waiting request gets `JournalUnavailable` (the caller answers 91), and
`on_failure` rebuilds memory from the database, so nothing uncommitted survives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from core import HoldState, JournalEntry, Kind, Ledger
from switch import journal_chain
from switch.histogram import Histogram, batch_histogram, latency_histogram
from switch.keyring import Keyring

log = logging.getLogger("fuelswitch.journal")

BATCH_SUBMISSIONS_MAX = 2_048  # submissions per transaction; the rest wait for the next one
COMMIT_TIMEOUT_S = 5.0  # a commit slower than this counts as failed: terminals get 91, not a hang
# The server ends a transaction of ours cut off by a network partition (it cannot tell: no reset comes)
# after this, instead of holding its row locks for ever and making every later commit wait on them.
ORPHAN_TIMEOUT_MS = int(2 * COMMIT_TIMEOUT_S * 1000)
ORPHAN_LIMITS_SQL = (f"SET statement_timeout = {ORPHAN_TIMEOUT_MS}; "
                     f"SET idle_in_transaction_session_timeout = {ORPHAN_TIMEOUT_MS}")

# Business records, by statement. Written in this order (parents before children), after the core's rows.
STATEMENTS: dict[str, str] = {
    "station": """INSERT INTO stations (station_id, name, region, latitude, longitude, station_class,
        offline_floor_limit, offline_max_count, offline_max_total, offline_max_per_card_per_day)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (station_id) DO UPDATE SET name = $2, region = $3, latitude = $4, longitude = $5,
        station_class = $6, offline_floor_limit = $7, offline_max_count = $8, offline_max_total = $9,
        offline_max_per_card_per_day = $10""",
    "terminal": """INSERT INTO terminals (terminal_id, station_id, public_key, state, state_reason)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (terminal_id) DO UPDATE SET station_id = $2, public_key = $3, state = $4, state_reason = $5""",
    "price": """INSERT INTO station_prices (station_id, product_code, effective_ms, unit_price) VALUES ($1, $2, $3, $4)
        ON CONFLICT (station_id, product_code, effective_ms) DO UPDATE SET unit_price = $4""",
    "account": """INSERT INTO accounts (account_id, kind, holder_name, balance, overdraft, opening, created_ms)
        VALUES ($1, $2, $3, $4, $5, $4, $6)""",
    "card": """INSERT INTO cards (card_id, account_id, pan_index, pan_enc, masked_pan, pvv, pvk_version, pin_tries,
        state, per_txn_limit, partial_allowed, expiry, parent_card_id, created_ms, offline_floor_limit)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        ON CONFLICT (card_id) DO UPDATE SET pan_enc = $4, pvv = $6, pvk_version = $7, pin_tries = $8, state = $9,
        per_txn_limit = $10, partial_allowed = $11, expiry = $12, offline_floor_limit = $15""",
    "transaction": """INSERT INTO transactions (transaction_id, kind, account_id, card_id, terminal_id, station_id,
        stan, amount, volume_ml, product_code, unit_price, original_id, reference, response_code, recorded_ms)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
    # An offline sale: a transaction row with the time the terminal made the sale (switch/offline.py).
    "offline_sale": """INSERT INTO transactions (transaction_id, kind, account_id, card_id, terminal_id, station_id,
        stan, amount, volume_ml, product_code, unit_price, original_id, reference, response_code, recorded_ms,
        sale_time_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)""",
    "review": "UPDATE transactions SET review = $2 WHERE transaction_id = $1",
    "hotlist": """INSERT INTO hotlist (version, card_id, pan_sm3, masked_pan, response_code, removed, recorded_ms,
        floor_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
    # Clearing (docs/clearing.md): a channel payment/refund and the operator decisions on reconciliation.
    "channel_txn": """INSERT INTO channel_transactions (channel, channel_txn_id, kind, account_id, amount, fee,
        time_ms, business_date, original_txn_id, merchant_order_id, station_id, transaction_id, recorded_ms, source)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
    "channel_reversal": """UPDATE channel_transactions SET reversal_id = $3, reversed_amount = $4
        WHERE channel = $1 AND channel_txn_id = $2""",
    "resolution": """INSERT INTO reconciliation_resolutions (run_id, channel_txn_id, decision, operator, note,
        account_id, transaction_id, result, resolved_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
    "message": """INSERT INTO pos_messages (terminal_id, stan, method, request_digest, response, effect_kind,
        effect_ref, reversed, recorded_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (terminal_id, stan) DO UPDATE SET method = $3, request_digest = $4, response = $5,
        effect_kind = $6, effect_ref = $7, reversed = $8, recorded_ms = $9""",
}

Record = tuple[str, tuple[Any, ...]]  # (statement name, arguments)


class JournalUnavailable(Exception):
    """The decision could not be made durable; nothing of it survives. Retryable (91)."""


@dataclass
class _Submission:
    records: Sequence[Record]
    future: asyncio.Future[None]


@dataclass
class WriterStats:
    commits: int = 0
    submissions: int = 0
    entries: int = 0
    failures: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # recent submissions per commit (bounded)
    # For operators (switch/metrics.py, GetStatus): submissions per commit and commit latency (ns).
    batch_histogram: Histogram = field(default_factory=batch_histogram)
    commit_histogram: Histogram = field(default_factory=latency_histogram)
    last_commit_ns: int = 0


class JournalWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        ledger: Callable[[], Ledger],
        on_failure: Callable[[BaseException], Awaitable[None]],
        keyring: Callable[[], Keyring],
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._pool = pool
        self._ledger = ledger
        self._on_failure = on_failure
        self._clock_ms = clock_ms
        self._queue: list[_Submission] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._conn: asyncpg.Connection | None = None  # the writer's own: no pool reset per batch
        self._keyring = keyring
        self._head = journal_chain.GENESIS  # chain of the last committed journal row (read with _conn)
        self.stats = WriterStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="journal-writer")

    def submit(self, records: Sequence[Record] = ()) -> asyncio.Future[None]:
        """Queue records (possibly none: the core's entries alone); resolves once committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_exception(JournalUnavailable("the switch is shutting down"))
            return future
        self._queue.append(_Submission(records, future))
        self._idle.clear()
        self._wakeup.set()
        return future

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        while self._queue or not self._idle.is_set():
            await self._idle.wait()

    async def close(self) -> None:
        await self.flush()
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._drop_connection()

    async def forget_idle_connection(self) -> None:
        """Drop the writer's connection if no batch is using it (the database was seen unreachable).

        A connection that died while idle, silently in a partition, would otherwise be found dead only
        by the next commit, which then times out and answers 91 although the database is back.
        """
        if self._idle.is_set() and not self._queue:
            await self._drop_connection()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and _open(conn):
            conn.terminate()  # its state is unknown after a failure; never hand it back to the pool
            await self._pool.release(conn)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[:BATCH_SUBMISSIONS_MAX]
                del self._queue[:BATCH_SUBMISSIONS_MAX]
                entries = self._ledger().drain_journal()
                started_ns = time.perf_counter_ns()
                try:
                    await self._write_in_time(entries, batch)
                except Exception as exc:  # any failure: nothing of this batch is known to be durable
                    await self._fail(batch, exc)
                    continue
                elapsed_ns = time.perf_counter_ns() - started_ns
                for submission in batch:
                    if not submission.future.done():
                        submission.future.set_result(None)
                self.stats.commits += 1
                self.stats.submissions += len(batch)
                self.stats.entries += len(entries)
                self.stats.batch_sizes.append(len(batch))
                del self.stats.batch_sizes[:-1000]
                self.stats.batch_histogram.observe(len(batch))
                self.stats.commit_histogram.observe(elapsed_ns)
                self.stats.last_commit_ns = elapsed_ns
            self._idle.set()

    async def _write_in_time(self, entries: list[JournalEntry], batch: list[_Submission]) -> None:
        """`_write`, failed after COMMIT_TIMEOUT_S.

        Cancelling is not enough: asyncpg's cancellation waits for the server to acknowledge it,
        which a peer lost in a network partition never does. Terminating the connection ends
        every wait on it at once (and a terminated connection can commit nothing later).
        """
        write = asyncio.ensure_future(self._write(entries, batch))
        done, _ = await asyncio.wait({write}, timeout=COMMIT_TIMEOUT_S)
        if done:
            return write.result()
        if self._conn is not None and _open(self._conn):
            self._conn.terminate()
        write.cancel()
        await asyncio.wait({write}, timeout=COMMIT_TIMEOUT_S)  # the socket is gone: this returns at once
        write.add_done_callback(_retrieve)
        raise TimeoutError(f"the commit took longer than {COMMIT_TIMEOUT_S:g} s")

    async def _fail(self, batch: list[_Submission], exc: BaseException) -> None:
        """Fail this batch and everything queued behind it, then let the owner rebuild memory."""
        log.error("journal commit failed; rebuilding state from the database: %s", exc)
        self.stats.failures += 1
        await self._drop_connection()
        failed = batch + self._queue
        self._queue = []
        for submission in failed:
            if not submission.future.done():
                submission.future.set_exception(JournalUnavailable("the decision could not be made durable"))
        await self._on_failure(exc)

    async def _write(self, entries: list[JournalEntry], batch: list[_Submission]) -> None:
        now_ms = self._clock_ms()
        by_statement: dict[str, list[tuple[Any, ...]]] = {name: [] for name in STATEMENTS}
        for submission in batch:
            for name, args in submission.records:
                by_statement[name].append(args)
        core_rows = _core_rows(entries, now_ms)
        if self._conn is not None and not _open(self._conn):
            self._conn = None  # closed while idle (the server went away): nothing of this batch was sent yet
        if self._conn is None:
            self._conn = await self._pool.acquire()
            await self._conn.execute(ORPHAN_LIMITS_SQL)
            self._head = await _chain_head(self._conn)
        conn = self._conn
        version, key = self._keyring().current("journal")
        head = _chain(core_rows.journal, version, key, self._head)
        async with conn.transaction():
            for name in ("station", "terminal", "price", "account", "card"):
                if by_statement[name]:
                    await conn.executemany(STATEMENTS[name], by_statement[name])
            await _write_core(conn, core_rows)
            await _write_transactions(conn, by_statement["transaction"])
            await _write_transactions(conn, by_statement["offline_sale"], "offline_sale")
            await _write_channel_txns(conn, by_statement["channel_txn"])
            for name in ("channel_reversal", "resolution", "review", "hotlist"):
                if by_statement[name]:
                    await conn.executemany(STATEMENTS[name], by_statement[name])
            await _write_messages(conn, by_statement["message"])
        self._head = head  # committed; after a failure the head is read again with a new connection


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a timed-out write's own error: the batch already failed for the timeout


def _open(conn: asyncpg.Connection) -> bool:
    """False once the connection is closed, also when the pool already took a closed one back."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # "connection has been released back to the pool"
        return False


# Above this many rows a statement's rows go by COPY (one round trip) instead of one execute each.
BULK_ROWS = 64
_TRANSACTION_COLUMNS = ["transaction_id", "kind", "account_id", "card_id", "terminal_id", "station_id", "stan",
                        "amount", "volume_ml", "product_code", "unit_price", "original_id", "reference",
                        "response_code", "recorded_ms"]
_MESSAGE_COLUMNS = ["terminal_id", "stan", "method", "request_digest", "response", "effect_kind", "effect_ref",
                    "reversed", "recorded_ms"]


async def _write_transactions(conn: asyncpg.Connection, rows: list[tuple[Any, ...]],
                              statement: str = "transaction") -> None:
    if len(rows) > BULK_ROWS:  # transaction ids are never reused: plain inserts
        columns = _TRANSACTION_COLUMNS if statement == "transaction" else [*_TRANSACTION_COLUMNS, "sale_time_ms"]
        await conn.copy_records_to_table("transactions", records=rows, columns=columns)
    elif rows:
        await conn.executemany(STATEMENTS[statement], rows)


_CHANNEL_TXN_COLUMNS = ["channel", "channel_txn_id", "kind", "account_id", "amount", "fee", "time_ms",
                        "business_date", "original_txn_id", "merchant_order_id", "station_id", "transaction_id",
                        "recorded_ms", "source"]


async def _write_channel_txns(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    if len(rows) > BULK_ROWS:  # a key is inserted once (the clearing service's map guarantees it): plain inserts
        await conn.copy_records_to_table("channel_transactions", records=rows, columns=_CHANNEL_TXN_COLUMNS)
    elif rows:
        await conn.executemany(STATEMENTS["channel_txn"], rows)


async def _write_messages(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Upserts (a reversal updates its original's row): many at once through a staging table."""
    if len(rows) <= BULK_ROWS:
        if rows:
            await conn.executemany(STATEMENTS["message"], rows)
        return
    last = {(row[0], row[1]): row for row in rows}  # one row per key: the latest wins, as in order
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS pos_messages_stage (LIKE pos_messages) "
                       "ON COMMIT DELETE ROWS")
    await conn.copy_records_to_table("pos_messages_stage", records=list(last.values()), columns=_MESSAGE_COLUMNS)
    await conn.execute(
        f"""INSERT INTO pos_messages ({", ".join(_MESSAGE_COLUMNS)})
            SELECT {", ".join(_MESSAGE_COLUMNS)} FROM pos_messages_stage
            ON CONFLICT (terminal_id, stan) DO UPDATE SET method = EXCLUDED.method,
                request_digest = EXCLUDED.request_digest, response = EXCLUDED.response,
                effect_kind = EXCLUDED.effect_kind, effect_ref = EXCLUDED.effect_ref,
                reversed = EXCLUDED.reversed, recorded_ms = EXCLUDED.recorded_ms""")


async def _chain_head(conn: asyncpg.Connection) -> bytes:
    head = await conn.fetchval("SELECT chain FROM journal ORDER BY seq DESC LIMIT 1")
    return bytes(head) if head is not None else journal_chain.GENESIS


def _chain(rows: list[tuple[Any, ...]], version: int, key: bytes, head: bytes) -> bytes:
    """Append (key_version, prev_chain, chain) to each journal row, in order; return the new head."""
    for i, row in enumerate(rows):
        _, kind, ref, accounts, amounts, value, status, recorded_ms = row
        link = journal_chain.link(key, head, journal_chain.content(kind, ref, accounts, amounts, value, status,
                                                                    recorded_ms))
        rows[i] = (*row, version, head, link)
        head = link
    return head


@dataclass
class _CoreRows:
    journal: list[tuple[Any, ...]] = field(default_factory=list)
    new_holds: dict[int, list[Any]] = field(default_factory=dict)  # hold_id -> row, updated in place
    hold_updates: dict[int, tuple[int, list[int]]] = field(default_factory=dict)  # hold_id -> (state, posted)
    movements: list[tuple[Any, ...]] = field(default_factory=list)
    balance_deltas: dict[int, int] = field(default_factory=dict)


_HOLD_END = {Kind.VOID: HoldState.VOIDED, Kind.EXPIRE: HoldState.EXPIRED}
_MOVES = {
    Kind.CREDIT: (Kind.CREDIT, 1),
    Kind.DEBIT: (Kind.DEBIT, -1),
    Kind.CREDIT_REJECTED: (Kind.CREDIT, 0),
    Kind.DEBIT_REJECTED: (Kind.DEBIT, 0),
}


def _core_rows(entries: list[JournalEntry], now_ms: int) -> _CoreRows:
    """Fold the core's entries, in order, into row inserts and set-based updates."""
    rows = _CoreRows()
    for e in entries:
        accounts = [a for a, _ in e.legs]
        amounts = [m for _, m in e.legs]
        rows.journal.append((e.seq, int(e.kind), e.ref, accounts, amounts, e.value, int(e.status), now_ms))
        if e.kind in (Kind.HOLD, Kind.HOLD_REJECTED):
            state = HoldState.PENDING if e.kind is Kind.HOLD else HoldState.REJECTED
            rows.new_holds[e.ref] = [e.ref, accounts, amounts, [0] * len(amounts), e.value, int(state), int(e.status)]
        elif e.kind is Kind.SETTLE:
            _end_hold(rows, e.ref, HoldState.SETTLED, amounts)
            for account, amount in e.legs:
                rows.balance_deltas[account] = rows.balance_deltas.get(account, 0) - amount
        elif e.kind in _HOLD_END:
            _end_hold(rows, e.ref, _HOLD_END[e.kind], None)
        elif e.kind in _MOVES:
            kind, sign = _MOVES[e.kind]
            (account, amount), = e.legs
            rows.movements.append((e.ref, int(kind), account, amount, bool(e.value), int(e.status)))
            if sign:
                rows.balance_deltas[account] = rows.balance_deltas.get(account, 0) + sign * amount
    return rows


def _end_hold(rows: _CoreRows, hold_id: int, state: HoldState, posted: list[int] | None) -> None:
    new = rows.new_holds.get(hold_id)
    if new is not None:
        new[5] = int(state)
        if posted is not None:
            new[3] = posted
        return
    previous = rows.hold_updates.get(hold_id)
    keep = posted if posted is not None else (previous[1] if previous else [])
    rows.hold_updates[hold_id] = (int(state), keep)


async def _write_core(conn: asyncpg.Connection, rows: _CoreRows) -> None:
    if rows.journal:
        await conn.copy_records_to_table(
            "journal",
            records=rows.journal,
            columns=["seq", "kind", "ref", "account_ids", "amounts", "value", "status", "recorded_ms",
                     "key_version", "prev_chain", "chain"],
        )
    if rows.new_holds:
        await conn.copy_records_to_table(
            "holds",
            records=[tuple(r) for r in rows.new_holds.values()],
            columns=["hold_id", "account_ids", "amounts", "posted", "expires_at", "state", "status"],
        )
    if rows.hold_updates:
        ids = list(rows.hold_updates)
        states = [rows.hold_updates[h][0] for h in ids]
        # Posted amounts as text arrays: unnest cannot carry ragged bigint[] values.
        posted = ["{" + ",".join(map(str, rows.hold_updates[h][1])) + "}" for h in ids]
        await conn.execute(
            """UPDATE holds SET state = u.state,
                   posted = CASE WHEN u.posted = '{}' THEN holds.posted ELSE u.posted::bigint[] END
               FROM unnest($1::bigint[], $2::smallint[], $3::text[]) AS u(hold_id, state, posted)
               WHERE holds.hold_id = u.hold_id""",
            ids, states, posted,
        )
    if rows.movements:
        await conn.copy_records_to_table(
            "movements", records=rows.movements,
            columns=["txn_id", "kind", "account_id", "amount", "forced", "status"],
        )
    if rows.balance_deltas:
        await conn.execute(
            """UPDATE accounts SET balance = accounts.balance + d.delta
               FROM unnest($1::bigint[], $2::bigint[]) AS d(account_id, delta)
               WHERE accounts.account_id = d.account_id""",
            list(rows.balance_deltas), list(rows.balance_deltas.values()),
        )
