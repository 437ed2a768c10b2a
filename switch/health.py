"""Serving state for load balancers and operators: the gRPC health service follows the database.

Every `interval_s` the monitor runs `SELECT 1` on a connection of its own (not the pool's: a busy pool
must not look like a dead database) and sets every service's health status:

- SERVING when the database answered and the switch is taking decisions (`App.serving`);
- NOT_SERVING while the database does not answer within `probe_timeout_s`, or while the switch rebuilds
  its memory after a failed commit (`App._recover`), and from the start of a shutdown.

It also samples the request counter, so that `GetStatus` can report requests per second recently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

import asyncpg
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from switch.app import App

log = logging.getLogger("fuelswitch.health")

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
RATE_WINDOW_S = 60.0  # GetStatus' requests/s: over the last minute
SAMPLES_MAX = 600  # bounds the rate samples whatever the interval

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthMonitor:
    def __init__(self, app: App, dsn: str, health: health_aio.HealthServicer, services: Sequence[str], *,
                 requests_total: Callable[[], int], interval_s: float = PROBE_INTERVAL_S,
                 probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.app = app
        self._dsn = dsn
        self._health = health
        self._services = ("", *services)  # "" is the whole server
        self._requests_total = requests_total
        self.interval_s = interval_s
        self.probe_timeout_s = probe_timeout_s
        self.started_ms = time.time_ns() // 1_000_000
        self._started = time.monotonic()
        self._serving: bool | None = None  # None until the first check sets every service
        self.database_up = False
        self.database_checked_ms = 0
        self.transitions = 0  # SERVING <-> NOT_SERVING changes since start
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        window = max(2, min(SAMPLES_MAX, int(RATE_WINDOW_S / interval_s) + 1))
        self._samples: deque[tuple[float, int]] = deque(maxlen=window)

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        """From here on NOT_SERVING, whatever the database says (the server is draining)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._set(False)
        await self._close()

    async def check(self) -> None:
        """One probe, then the health status it implies."""
        self.database_up = await self._probe()
        self.database_checked_ms = time.time_ns() // 1_000_000
        self._samples.append((time.monotonic(), self._requests_total()))
        await self._set(self.database_up and self.app.available and not self._stopping)

    def requests_per_s(self) -> tuple[float, float]:
        """(requests per second, over how many seconds) from the oldest sample in the window to now."""
        if not self._samples:
            return 0.0, 0.0
        then, count_then = self._samples[0]
        span = time.monotonic() - then
        if span <= 0:
            return 0.0, 0.0
        return max(0, self._requests_total() - count_then) / span, span

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)  # a periodic probe, not synchronisation
            try:
                await self.check()
            except Exception:  # never let the monitor die: the health status would freeze
                log.exception("health check failed")

    async def _probe(self) -> bool:
        try:
            conn = self._conn
            if conn is None or conn.is_closed():
                conn = self._conn = await asyncpg.connect(self._dsn, timeout=self.probe_timeout_s)
            # Not a query timeout: against a peer lost in a partition, asyncpg's cancel would wait for an
            # acknowledgement that never comes. Terminating the connection ends the wait at once.
            watchdog = asyncio.get_running_loop().call_later(self.probe_timeout_s, conn.terminate)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                watchdog.cancel()
        except Exception as exc:  # refused, timed out, terminated, database gone: all mean unreachable
            if self.database_up:
                log.warning("database unreachable: %s", exc)
                # Connections opened before may be dead without knowing it: the first commit after the
                # database is back must not be the one that finds out (and answers 91).
                await self.app.writer.forget_idle_connection()
                await self.app.pool.expire_connections()
            await self._close()
            return False
        if not self.database_up and self.database_checked_ms:
            log.info("database reachable again")
        return True

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _set(self, serving: bool) -> None:
        if serving == self._serving:
            return
        if self._serving is not None:
            self.transitions += 1
        self._serving = serving
        for service in self._services:
            await self._health.set(service, SERVING if serving else NOT_SERVING)
        if self.database_checked_ms:
            activity = "stopping" if self._stopping else "taking decisions" if self.app.available else "recovering"
            (log.info if serving or self._stopping else log.warning)(
                "health: %s (database %s, %s)", "SERVING" if serving else "NOT_SERVING",
                "reachable" if self.database_up else "unreachable", activity)
