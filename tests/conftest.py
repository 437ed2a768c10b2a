"""Shared fixtures: one embedded PostgreSQL per test session, a fresh database
per test, and every async test run on both the stock asyncio loop and uvloop.

Fixtures are sync (they hand out DSNs, not connections), so sync and async
tests use them alike and nothing here is bound to one event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator, Mapping

import pytest
import uvloop

from switch.pgembedded import EmbeddedPostgres

# pytest-asyncio 1.5 deprecates overriding `event_loop_policy` in favour of
# this hook: every async test is parametrized with one id per factory, so a
# test shows up as test_x[asyncio] and test_x[uvloop].
LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return LOOP_FACTORIES


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """One private PostgreSQL for the whole session (fsync off: tests only)."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_dsn(pg_server: EmbeddedPostgres) -> str:
    """DSN of the session server's `postgres` database (shared: prefer fresh_db)."""
    return pg_server.dsn


_db_numbers = itertools.count(1)


@pytest.fixture
def fresh_db(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """DSN of a new, empty database, dropped after the test."""
    name = f"test_{next(_db_numbers)}"
    pg_server.psql(f"CREATE DATABASE {name}")
    try:
        yield pg_server.dsn_for(name)
    finally:
        # FORCE: a test that leaked a connection must not fail the next one.
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
