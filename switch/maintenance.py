"""Maintenance commands that work on the database directly: db migrate, verify, keys rotate/list.

Each works beside a running switch (on its embedded PostgreSQL too) or on a stopped one.
"""

from __future__ import annotations

import argparse
import sys

import asyncpg

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
