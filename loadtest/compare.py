"""Side by side in one run: the switch and the naive baseline, on one embedded PostgreSQL, same client.

Each server runs in its own process (`fuelswitch serve`, `python -m loadtest.baseline`) on its own
database of one durable embedded PostgreSQL; the same self-checking Authorize+Complete workload runs
against one, then the other, with the same terminals, cards, in-flight count and duration. Figures are
reported as the switch's ratio to the baseline, because this machine is too noisy for absolute numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from loadtest import baseline
from loadtest.provision import provision
from loadtest.workload import CardSpec, LoadResult, run_pos_load
from switch.pgembedded import EmbeddedPostgres

READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CompareOptions:
    duration_s: float = 10.0
    in_flight: int = 64
    terminals: int = 64
    processes: int = 1
    seed: int = 1
    balance_fen: int = 10_000_000  # ¥100,000 per card: declines stay rare, the model still checks them


@contextlib.contextmanager
def _server(command: list[str], ready_prefix: str, env: dict[str, str]) -> Iterator[str]:
    """Start a server process, wait (bounded) for its 'listening on HOST:PORT' line, stop it after."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        assert proc.stdout is not None
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{command[0]} exited before it was ready:\n{''.join(seen)}")
            seen.append(line)
            if line.startswith(ready_prefix):
                yield line.rsplit(" ", 1)[-1].strip()
                return
        raise RuntimeError(f"{command} not ready within {READY_TIMEOUT_S:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _create_database(dsn: str, name: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + "/" + name


async def compare(options: CompareOptions, work_dir: Path | None = None) -> dict[str, Any]:
    """Run the workload against the switch and against the baseline; return both and the ratios."""
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="fuelswitch-compare-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(Path.cwd() / "proto")])}
    pg = EmbeddedPostgres(work_dir / "postgres")  # durable: the baseline pays for fsync, so do we
    dsn = await asyncio.to_thread(pg.start)
    try:
        switch_dsn = await _create_database(dsn, "fuelswitch")
        naive_dsn = await _create_database(dsn, "naive")
        token = secrets.token_hex(16)
        serve = [sys.executable, "-m", "switch.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir",
                 str(work_dir / "switch"), "--operator-token", token, "--dsn", switch_dsn, "--log-level", "WARNING"]
        naive = [sys.executable, "-m", "loadtest.baseline", "--listen", "127.0.0.1:0", "--dsn", naive_dsn]
        with _server(serve, "fuelswitch listening on", env) as switch_addr:
            async with grpc.aio.insecure_channel(switch_addr) as channel:
                network = await provision(channel, token, terminals=options.terminals,
                                          cards=2 * options.in_flight, balance_fen=options.balance_fen)
            cards = [CardSpec(c.pan, c.pin, c.balance_fen) for c in network.cards]
            switch_result = await _load(switch_addr, network.terminals, cards, options)
        await baseline.create_schema(naive_dsn)
        await baseline.provision(naive_dsn, terminals=[(t.terminal_id, t.public_key_hex) for t in network.terminals],
                                 cards=[(c.pan, c.pin, c.balance_fen) for c in cards])
        with _server(naive, "naive baseline listening on", env) as naive_addr:
            naive_result = await _load(naive_addr, network.terminals, cards, options)
    finally:
        await asyncio.to_thread(pg.stop)
    return {
        "options": options.__dict__,
        "switch": switch_result.to_dict(),
        "baseline": {**naive_result.to_dict(),
                     "ratio": round(switch_result.rpc_per_s / max(naive_result.rpc_per_s, 1e-9), 2)},
    }


async def _load(target: str, terminals: list[Any], cards: list[CardSpec], options: CompareOptions) -> LoadResult:
    return await run_pos_load(target, terminals, cards, options.duration_s, options.in_flight, options.seed,
                              processes=options.processes)
