"""Maintenance commands that work on the database directly: db migrate/backup/restore, verify, keys.

Each works beside a running switch (on its embedded PostgreSQL too) or on a stopped one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import asyncpg

from switch import backup
from switch import keyring as K
from switch.config import ServeConfig
from switch.database import database
from switch.migrate import migrate
from switch.verify import render, verify


async def migrate_command(config: ServeConfig, _: argparse.Namespace) -> int:
    async with database(config) as dsn:
        applied = await migrate(dsn)
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


async def db_command(config: ServeConfig, args: argparse.Namespace) -> int:
    if args.db_command == "migrate":
        return await migrate_command(config, args)
    try:
        async with database(config) as dsn:
            if args.db_command == "backup":
                await asyncio.to_thread(backup.dump, dsn, Path(args.file))
                print(f"backed up to {args.file} (pg_dump custom format); the master key is not in it: "
                      "back it up apart")
            else:
                await backup.ensure_empty(dsn)
                await asyncio.to_thread(backup.restore, dsn, Path(args.file))
                print(f"restored {args.file}; check it with `fuelswitch verify` (needs the master key)")
    except backup.BackupError as exc:
        print(f"fuelswitch db {args.db_command}: {exc}", file=sys.stderr)
        return 1
    return 0


async def verify_command(config: ServeConfig, _: argparse.Namespace) -> int:
    """Exit 0 when the chain is intact and balances equal the journal's sums, 1 otherwise."""
    try:
        master = K.load_master_key(config.data_dir, config.master_key_file, create=False)
        async with database(config) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                keys = await K.read_keyring(conn, master)
                report = await verify(conn, keys, progress=lambda rows: print(f"  … {rows:,} rows", file=sys.stderr))
            finally:
                await conn.close()
    except K.KeyringError as exc:
        print(f"fuelswitch verify: {exc}", file=sys.stderr)
        return 2
    print(render(report))
    return 0 if report.ok else 1


async def keys_command(config: ServeConfig, args: argparse.Namespace) -> int:
    try:
        master = K.load_master_key(config.data_dir, config.master_key_file, create=False)
        async with database(config) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                if args.keys_command == "rotate":
                    new = await K.rotate(conn, master, tuple(args.purpose or K.ROTATABLE))
                    print("new versions: " + ", ".join(f"{p} v{v}" for p, v in new.items()))
                    print("a running switch uses them for new writes within seconds; old versions stay readable")
                keys = await K.read_keyring(conn, master)  # also proves the master key opens every version
            finally:
                await conn.close()
    except K.KeyringError as exc:
        print(f"fuelswitch keys: {exc}", file=sys.stderr)
        return 2
    for purpose in sorted(keys.keys):
        versions = sorted(keys.keys[purpose])
        print(f"{purpose:<10} current v{versions[-1]}  (versions {', '.join(map(str, versions))})")
    return 0
