"""The running switch: state, sessions, journal writer, expiry sweep, and recovery after a failed commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from switch import sm2
from switch.journal import JournalWriter
from switch.recovery import load_state
from switch.sessions import SessionTable
from switch.state import SwitchState

log = logging.getLogger("fuelswitch.app")

RECOVERY_RETRY_S_MAX = 5.0  # back-off cap while the database is unreachable


@dataclass(frozen=True)
class AppConfig:
    hold_ttl_ms: int = 15 * 60 * 1000  # a pre-authorization lasts 15 minutes unless completed
    expiry_sweep_interval_ms: int = 1_000
    session_ttl_ms: int = 24 * 3600 * 1000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class App:
    def __init__(self, pool: asyncpg.Pool, pvk: bytes, config: AppConfig = AppConfig(),
                 clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.pool = pool
        self.pvk = pvk
        self.config = config
        self.clock_ms = clock_ms
        self.sessions = SessionTable(config.session_ttl_ms)
        self.serving = asyncio.Event()  # set while decisions may be taken (cleared during recovery)
        self.state: SwitchState
        self.writer = JournalWriter(pool, lambda: self.state.ledger, self._recover, clock_ms=clock_ms)
        self._sweeper: asyncio.Task[None] | None = None

    @staticmethod
    def encrypt_keys(public_key: str, keys: bytes) -> bytes:
        return sm2.encrypt(public_key, keys)

    async def start(self) -> None:
        async with self.pool.acquire() as conn:
            self.state = await load_state(conn, self.clock_ms())
        self.writer.start()
        self._sweeper = asyncio.create_task(self._sweep_expired(), name="expiry-sweep")
        self.serving.set()

    @property
    def available(self) -> bool:
        return self.serving.is_set()

    async def close(self) -> None:
        """Stop taking decisions, then commit everything already decided."""
        if self._sweeper is not None:
            self._sweeper.cancel()
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
                async with self.pool.acquire() as conn:
                    self.state = await load_state(conn, self.clock_ms())
                break
            except Exception as err:  # the database may still be down: keep trying, bounded back-off
                log.warning("recovery failed, retrying in %.2fs: %s", delay, err)
                await asyncio.sleep(delay)  # back-off between reconnect attempts, not synchronisation
                delay = min(delay * 2, RECOVERY_RETRY_S_MAX)
        self.serving.set()
        log.info("state rebuilt from the database; serving again")

    async def _sweep_expired(self) -> None:
        interval_s = self.config.expiry_sweep_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)  # a periodic timer, not synchronisation
            if self.available and self.state.ledger.expire(self.clock_ms()):
                self.writer.submit([]).add_done_callback(_ignore_result)


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # a failed sweep commit is handled by recovery; nothing to report here
