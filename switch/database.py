"""The database a maintenance command works on: `--dsn`, a running switch's embedded PostgreSQL, or
the embedded PostgreSQL started for the duration of the command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from switch.config import ServeConfig
from switch.pgembedded import EmbeddedPostgres


@asynccontextmanager
async def database(config: ServeConfig) -> AsyncIterator[str]:
    if config.dsn:
        yield config.dsn
        return
    pg = EmbeddedPostgres(config.data_dir / "postgres")
    running = pg.running_dsn()
    if running is not None:  # a switch owns the server: use it, leave it running
        yield running
        return
    dsn = await asyncio.to_thread(pg.start)
    try:
        yield dsn
    finally:
        await asyncio.to_thread(pg.stop)
