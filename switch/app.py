"""The running switch: state, sessions, journal writer, expiry sweep, and recovery after a failed commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncpg

from switch import keyring as K
from switch import sm2
from switch.abuse import AbuseConfig, FailureCounter, TokenBuckets
from switch.cardnumbers import seal_clear_pans
from switch.journal import JournalWriter
from switch.offline import OfflineConfig
from switch.recovery import load_state
from switch.sessions import SessionTable
from switch.state import SwitchState

log = logging.getLogger("fuelswitch.app")

RECOVERY_RETRY_S_MAX = 5.0  # back-off cap while the database is unreachable
RECOVERY_CONNECT_S = 5.0  # a fresh connection for the rebuild, or the attempt fails and is retried
RECOVERY_LOAD_S_MAX = 300.0  # the rebuild's queries; past it the connection is cut and the rebuild retried
KEY_REFRESH_S_MAX = 10.0  # the periodic key-version check must not hang on a dead connection
EXPIRY_BATCH = 2_000  # holds released per sweep step: a few ms of core time, then the loop's writer runs


@dataclass(frozen=True)
class AppConfig:
    hold_ttl_ms: int = 15 * 60 * 1000  # a pre-authorization lasts 15 minutes unless completed
    expiry_sweep_interval_ms: int = 1_000
    session_ttl_ms: int = 24 * 3600 * 1000
    key_refresh_interval_ms: int = 5_000  # how soon a rotation made elsewhere is used for new writes
    abuse: AbuseConfig = AbuseConfig()
    journal_queue_max: int = 20_000  # decisions waiting for a commit; beyond it, RESOURCE_EXHAUSTED
    offline: OfflineConfig = OfflineConfig()
    terminal_certificates: bool = False  # TLS client certificates required: a terminal's CN is its id
    settlement_cutoff_hour: int = 0  # a business day ends at this hour, UTC+8 (docs/clearing.md)
    settlement_fee_bps: int = 0  # network fee charged to stations, basis points of sales
    reconcile_fee_tolerance_fen: int = 0  # fee differences up to this are not reported
    channel_fee_bps: dict[str, int] = field(default_factory=dict)  # contracted channel fee rates
    # Hold lifetime by station class (Station.station_class); other classes get hold_ttl_ms.
    hold_ttl_ms_by_class: dict[str, int] = field(default_factory=dict)

    def hold_ttl_ms_for(self, station_class: str) -> int:
        """How long a pre-authorization at a station of this class lasts."""
        return self.hold_ttl_ms_by_class.get(station_class, self.hold_ttl_ms)


@contextlib.asynccontextmanager
async def bounded_connection(pool: asyncpg.Pool, connect_s: float, use_s: float) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection that is terminated if the block takes longer than `use_s`.

    A peer lost in a network partition answers nothing and sends no reset: neither cancelling the
    task nor a query timeout ends asyncpg's wait for it (both wait for the server's acknowledgement).
    Terminating the connection does: the pending query fails at once and the pool drops it.
    """
    conn = await pool.acquire(timeout=connect_s)
    watchdog = asyncio.get_running_loop().call_later(use_s, _terminate, conn)
    try:
        yield conn
    finally:
        watchdog.cancel()
        await pool.release(conn, timeout=connect_s)


def _terminate(conn: asyncpg.Connection) -> None:
    log.warning("a database connection did not answer in time; closing it")
    with contextlib.suppress(asyncpg.InterfaceError):  # already closed and taken back by the pool
        conn.terminate()


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class App:
    def __init__(self, pool: asyncpg.Pool, master_key: bytes, config: AppConfig = AppConfig(),
                 clock_ms: Callable[[], int] = wall_clock_ms, *, legacy_pvk: bytes | None = None) -> None:
        self.pool = pool
        self.config = config
        self.clock_ms = clock_ms
        self.sessions = SessionTable(config.session_ttl_ms)
        self.serving = asyncio.Event()  # set while decisions may be taken (cleared during recovery)
        self.state: SwitchState
        self.keyring: K.Keyring
        self.writer = JournalWriter(pool, lambda: self.state.ledger, self._recover, lambda: self.keyring,
                                    clock_ms=clock_ms)
        self._master_key = master_key
        self._legacy_pvk = legacy_pvk
        self._tasks: list[asyncio.Task[None]] = []
        abuse = config.abuse
        self.request_rate = TokenBuckets(abuse.requests_per_s, abuse.burst)
        self.mac_failures = FailureCounter(abuse.mac_failures_max, abuse.mac_failure_window_ms)

    @staticmethod
    def encrypt_keys(public_key: str, keys: bytes) -> bytes:
        return sm2.encrypt(public_key, keys)

    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            self.keyring = await K.load_keyring(conn, self._master_key, legacy_pvk=self._legacy_pvk)
            sealed = await seal_clear_pans(conn, self.keyring)
            if sealed:
                log.info("encrypted %d card numbers stored in clear before migration 0002", sealed)
            self.state = await load_state(conn, self.clock_ms())
        self.writer.start()
        self._tasks = [
            asyncio.create_task(self._sweep_expired(), name="expiry-sweep"),
            asyncio.create_task(self._refresh_keys_periodically(), name="key-refresh"),
        ]
        self.serving.set()

    def abuse_reset(self, terminal_id: str) -> None:
        """An operator changed the terminal's state: start its MAC-failure count afresh."""
        self.mac_failures.clear(terminal_id)

    async def suspend_terminal(self, terminal_id: str, reason: str) -> None:
        """Suspend now (memory and session), persist, and report it in the log for operators."""
        terminal = self.state.terminals.get(terminal_id)
        if terminal is None or terminal.state != "active":
            return
        terminal.state, terminal.state_reason = "suspended", reason
        self.sessions.end_terminal(terminal_id)
        log.warning("SECURITY terminal %s (station %s) suspended: %s", terminal_id, terminal.station_id, reason)
        await self.commit([("terminal", terminal.row())])

    async def refresh_keyring(self) -> bool:
        """Pick up data-key versions added by `fuelswitch keys rotate`; True if anything changed."""
        async with bounded_connection(self.pool, KEY_REFRESH_S_MAX, KEY_REFRESH_S_MAX) as conn:
            if await K.key_versions(conn) == self.keyring.versions():
                return False
            self.keyring = await K.read_keyring(conn, self._master_key)
        log.info("data keys now at %s", ", ".join(f"{p} v{v}" for p, v in sorted(self.keyring.versions().items())))
        return True

    async def rotate_keys(self, purposes: tuple[str, ...] = K.ROTATABLE) -> dict[str, int]:
        """Add new data-key versions and use them for new writes at once."""
        async with self.pool.acquire() as conn:
            new = await K.rotate(conn, self._master_key, purposes)
        await self.refresh_keyring()
        return new

    @property
    def available(self) -> bool:
        return self.serving.is_set()

    async def close(self) -> None:
        """Stop taking decisions, then commit everything already decided."""
        for task in self._tasks:
            task.cancel()
        await self.writer.close()
        self.serving.clear()

    async def commit(self, records: list[tuple[str, tuple[object, ...]]]) -> None:
        await self.writer.submit(records)

    async def _recover(self, exc: BaseException) -> None:
        """After a failed commit: answer 91 until memory is rebuilt from what PostgreSQL committed."""
        self.serving.clear()
        delay = 0.05
        while True:
            try:
                # Connections opened before the failure may be dead without knowing it (a partition
                # shows no error): rebuild on a new one, cut if it hangs.
                await self.pool.expire_connections()
                async with bounded_connection(self.pool, RECOVERY_CONNECT_S, RECOVERY_LOAD_S_MAX) as conn:
                    self.state = await load_state(conn, self.clock_ms())
                break
            except Exception as err:  # the database may still be down: keep trying, bounded back-off
                log.warning("recovery failed, retrying in %.2fs: %s", delay, err)
                await asyncio.sleep(delay)  # back-off between reconnect attempts, not synchronisation
                delay = min(delay * 2, RECOVERY_RETRY_S_MAX)
        self.serving.set()
        log.info("state rebuilt from the database; serving again")

    async def _refresh_keys_periodically(self) -> None:
        interval_s = self.config.key_refresh_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)  # a periodic timer, not synchronisation
            try:
                await self.refresh_keyring()
            except Exception as exc:  # the database may be down; the keys in use stay valid
                log.warning("key refresh failed: %s", exc)

    async def _sweep_expired(self) -> None:
        interval_s = self.config.expiry_sweep_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)  # a periodic timer, not synchronisation
            if self.available:
                await self.sweep_expired()

    async def sweep_expired(self) -> int:
        """Release the holds due now, EXPIRY_BATCH at a time in a worker thread (the core's batch call
        releases the GIL), each step's entries committed with the writer's next batch; returns how many."""
        now = self.clock_ms()
        ledger = self.state.ledger  # recovery may swap the state meanwhile: the next sweep sees the new one
        released = 0
        while True:
            step = await asyncio.to_thread(ledger.expire, now, EXPIRY_BATCH)
            if step:
                self.writer.submit([]).add_done_callback(_ignore_result)
            released += step
            if step < EXPIRY_BATCH:
                return released


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # a failed sweep commit is handled by recovery; nothing to report here
