"""Versioned SQL migrations: `switch/migrations/NNNN_name.sql`, applied in order.

Rules the code enforces:
- each file runs in its own transaction together with its row in
  `schema_migrations`, so a migration is applied completely or not at all
  (which also means no `CREATE INDEX CONCURRENTLY` and the like in a file);
- a session advisory lock serialises concurrent migrators: the second waits,
  then finds nothing left to do;
- the applied versions must be exactly the first N known files, unchanged
  (sha256 of the file with LF line endings): a database from newer code, an
  edited applied file, a missing file or a new file numbered below an applied
  one is refused before anything runs.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

DEFAULT_DIRECTORY = Path(__file__).with_name("migrations")

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")
# One fixed key for "migrating this database"; derived, not a magic number.
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"fuelswitch.schema_migrations").digest()[:8], "big", signed=True
)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The database schema cannot be brought to the code's version."""


class SchemaTooNewError(MigrationError):
    """The database was migrated by newer code than this."""


class ChecksumMismatchError(MigrationError):
    """An applied migration's file has been edited since."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str
    checksum: str  # sha256 hex


def load_migrations(directory: str | os.PathLike[str] = DEFAULT_DIRECTORY) -> list[Migration]:
    """Read and validate `NNNN_name.sql` files, sorted by version."""
    root = Path(directory)
    if not root.is_dir():
        raise MigrationError(f"migrations directory {root} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(root.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            # A misnamed file would otherwise be silently skipped.
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        version = int(match["version"])
        if version == 0:
            raise MigrationError(f"{path.name}: versions start at 0001")
        if version in found:
            raise MigrationError(
                f"{path.name}: version {version} also in {found[version].path.name}"
            )
        raw = path.read_bytes()
        # CRLF from a Windows checkout is the same migration.
        checksum = hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()
        found[version] = Migration(version, match["name"], path, raw.decode("utf-8"), checksum)
    return [found[v] for v in sorted(found)]


async def migrate(
    conn_or_dsn: asyncpg.Connection | str,
    directory: str | os.PathLike[str] = DEFAULT_DIRECTORY,
    *,
    lock_timeout_s: float = 60.0,
) -> list[int]:
    """Apply pending migrations; return the versions this call applied (in order)."""
    migrations = load_migrations(directory)
    if isinstance(conn_or_dsn, str):
        conn = await asyncpg.connect(conn_or_dsn)
        try:
            return await _migrate(conn, migrations, lock_timeout_s)
        finally:
            await conn.close()
    return await _migrate(conn_or_dsn, migrations, lock_timeout_s)


async def _migrate(
    conn: asyncpg.Connection, migrations: list[Migration], lock_timeout_s: float
) -> list[int]:
    if conn.is_in_transaction():
        # Our per-migration transactions would silently become savepoints.
        raise MigrationError("migrate() needs a connection outside any transaction")
    await _lock(conn, lock_timeout_s)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        pending = _plan(migrations, {r["version"]: (r["name"], r["checksum"]) for r in rows})
        applied = []
        for m in pending:
            try:
                async with conn.transaction():
                    await conn.execute(m.sql)  # simple protocol: many statements allowed
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {m.path.name} failed: {exc}") from exc
            applied.append(m.version)
        return applied
    finally:
        await _unlock(conn)


async def _unlock(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        # Connection broken or cancelled mid-query: the session lock goes away
        # with the session, and the error that got us here is the one to report.
        if not conn.is_closed():
            conn.terminate()


async def _lock(conn: asyncpg.Connection, lock_timeout_s: float) -> None:
    # lock_timeout bounds the wait for the advisory lock; the caller's own
    # setting is put back afterwards so the migrations themselves are unaffected.
    previous = await conn.fetchval("SELECT current_setting('lock_timeout')")
    await conn.execute(
        "SELECT set_config('lock_timeout', $1, false)", f"{max(1, int(lock_timeout_s * 1000))}ms"
    )
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    except asyncpg.LockNotAvailableError:
        raise MigrationError(
            f"another process has been migrating this database for over {lock_timeout_s}s"
        ) from None
    finally:
        await conn.execute("SELECT set_config('lock_timeout', $1, false)", previous)


def _plan(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    """Check the applied history against the files; return what is left to run."""
    known = {m.version: m for m in migrations}
    newest_known = max(known, default=0)
    newest_applied = max(applied, default=0)
    if newest_applied > newest_known:
        raise SchemaTooNewError(
            f"database schema is at version {newest_applied}, this code knows up to "
            f"{newest_known}: run the newer fuelswitch or restore a matching backup"
        )
    for version, (name, checksum) in sorted(applied.items()):
        m = known.get(version)
        if m is None:
            raise MigrationError(f"applied migration {version:04d}_{name} has no file")
        if m.checksum != checksum:
            raise ChecksumMismatchError(
                f"{m.path.name} was changed after it was applied "
                f"(recorded sha256 {checksum[:12]}…, file {m.checksum[:12]}…); "
                "add a new migration instead of editing an applied one"
            )
    pending = [m for m in migrations if m.version not in applied]
    if pending and pending[0].version < newest_applied:
        raise MigrationError(
            f"{pending[0].path.name} is numbered below the applied version "
            f"{newest_applied}; renumber it after {newest_applied:04d}"
        )
    return pending
