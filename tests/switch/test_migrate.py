"""switch.migrate against a real database (one fresh database per test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from switch.migrate import (
    LOCK_KEY,
    ChecksumMismatchError,
    MigrationError,
    SchemaTooNewError,
    load_migrations,
    migrate,
)

FIRST = "CREATE TABLE account (id bigint PRIMARY KEY, balance bigint NOT NULL);\n"
SECOND = "INSERT INTO account VALUES (1, 100);\nINSERT INTO account VALUES (2, 200);\n"
THIRD = "ALTER TABLE account ADD COLUMN held bigint NOT NULL DEFAULT 0;\n"


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


@pytest.fixture
def three(tmp_path: Path) -> Path:
    return write(
        tmp_path / "migrations",
        {"0001_accounts.sql": FIRST, "0002_seed.sql": SECOND, "0003_held.sql": THIRD},
    )


@pytest.mark.asyncio
async def test_applies_in_order_records_and_is_idempotent(fresh_db: str, three: Path) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await migrate(conn, three) == [1, 2, 3]
        rows = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["name"]) for r in rows] == [
            (1, "accounts"),
            (2, "seed"),
            (3, "held"),
        ]
        assert [r["checksum"] for r in rows] == [m.checksum for m in load_migrations(three)]
        assert all(r["applied_at"] is not None for r in rows)
        assert await conn.fetchval("SELECT sum(balance + held) FROM account") == 300
        assert await migrate(conn, three) == []  # nothing left to do
        assert await conn.fetchval("SELECT count(*) FROM account") == 2
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_applies_only_new_files_and_accepts_a_dsn(fresh_db: str, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", {"0001_accounts.sql": FIRST})
    assert await migrate(fresh_db, directory) == [1]
    write(directory, {"0002_seed.sql": SECOND, "0003_held.sql": THIRD})
    assert await migrate(fresh_db, directory) == [2, 3]


@pytest.mark.asyncio
async def test_concurrent_migrators_apply_each_migration_once(
    fresh_db: str, tmp_path: Path
) -> None:
    # The sleep keeps the first migrator inside the lock while the second arrives.
    directory = write(
        tmp_path / "m",
        {
            "0001_slow.sql": "CREATE TABLE runs (n int); SELECT pg_sleep(0.3);"
            " INSERT INTO runs VALUES (1);",
            "0002_more.sql": "INSERT INTO runs VALUES (2);",
        },
    )
    a, b = await asyncpg.connect(fresh_db), await asyncpg.connect(fresh_db)
    try:
        results = await asyncio.gather(migrate(a, directory), migrate(b, directory))
        assert sorted(results) == [[], [1, 2]]
        assert await a.fetchval("SELECT count(*) FROM runs") == 2
        assert await a.fetchval("SELECT count(*) FROM schema_migrations") == 2
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_refuses_a_database_newer_than_the_code(fresh_db: str, three: Path) -> None:
    assert await migrate(fresh_db, three) == [1, 2, 3]
    (three / "0003_held.sql").unlink()
    with pytest.raises(SchemaTooNewError, match="version 3.*up to 2"):
        await migrate(fresh_db, three)


@pytest.mark.asyncio
async def test_refuses_an_edited_applied_migration(fresh_db: str, three: Path) -> None:
    assert await migrate(fresh_db, three) == [1, 2, 3]
    # Line endings alone do not count as an edit (Windows checkouts).
    (three / "0002_seed.sql").write_bytes(SECOND.replace("\n", "\r\n").encode())
    assert await migrate(fresh_db, three) == []
    (three / "0002_seed.sql").write_text(SECOND + "INSERT INTO account VALUES (3, 300);\n")
    with pytest.raises(ChecksumMismatchError, match="0002_seed.sql"):
        await migrate(fresh_db, three)


@pytest.mark.asyncio
async def test_failed_migration_rolls_back_alone(fresh_db: str, tmp_path: Path) -> None:
    directory = write(
        tmp_path / "m",
        {
            "0001_accounts.sql": FIRST,
            "0002_broken.sql": "CREATE TABLE half (x int); SELECT no_such_column FROM account;",
        },
    )
    with pytest.raises(MigrationError, match="0002_broken.sql"):
        await migrate(fresh_db, directory)
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [1]
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        # The advisory lock was released: another session can take it at once.
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_refuses_a_new_file_numbered_below_an_applied_one(
    fresh_db: str, tmp_path: Path
) -> None:
    directory = write(tmp_path / "m", {"0001_accounts.sql": FIRST, "0003_held.sql": THIRD})
    assert await migrate(fresh_db, directory) == [1, 3]
    write(directory, {"0002_seed.sql": SECOND})
    with pytest.raises(MigrationError, match="0002_seed.sql is numbered below"):
        await migrate(fresh_db, directory)


@pytest.mark.asyncio
async def test_refuses_an_applied_migration_whose_file_is_gone(fresh_db: str, three: Path) -> None:
    assert await migrate(fresh_db, three) == [1, 2, 3]
    (three / "0002_seed.sql").unlink()
    with pytest.raises(MigrationError, match="0002_seed has no file"):
        await migrate(fresh_db, three)


@pytest.mark.asyncio
async def test_lock_wait_is_bounded(fresh_db: str, three: Path) -> None:
    holder, conn = await asyncpg.connect(fresh_db), await asyncpg.connect(fresh_db)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await conn.execute("SET lock_timeout = '7s'")
        with pytest.raises(MigrationError, match="another process"):
            await migrate(conn, three, lock_timeout_s=0.2)
        assert await conn.fetchval("SHOW lock_timeout") == "7s"  # caller's setting restored
        await holder.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        assert await migrate(conn, three) == [1, 2, 3]
    finally:
        await holder.close()
        await conn.close()


@pytest.mark.asyncio
async def test_refuses_a_connection_inside_a_transaction(fresh_db: str, three: Path) -> None:
    conn = await asyncpg.connect(fresh_db)
    try:
        async with conn.transaction():
            with pytest.raises(MigrationError, match="outside any transaction"):
                await migrate(conn, three)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_short.sql": ""}, "NNNN_lower_snake"),
        ({"0001_Upper.sql": ""}, "NNNN_lower_snake"),
        ({"0000_zero.sql": ""}, "start at 0001"),
        ({"0001_a.sql": "", "0001_b.sql": ""}, "also in"),
    ],
)
def test_load_refuses_bad_file_names(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(MigrationError, match=message):
        load_migrations(write(tmp_path / "m", files))


def test_load_ignores_other_files_and_sorts_numerically(tmp_path: Path) -> None:
    directory = write(
        tmp_path / "m", {"0010_ten.sql": "", "0002_two.sql": "", "README.md": "notes"}
    )
    assert [(m.version, m.name) for m in load_migrations(directory)] == [(2, "two"), (10, "ten")]


def test_load_refuses_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        load_migrations(tmp_path / "nowhere")
