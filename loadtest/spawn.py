"""Servers for `fuelswitch loadtest --spawn`: one durable embedded PostgreSQL, the switch, the baseline.

Each server is a subprocess started from this checkout's interpreter. Its output goes to a log file
in the work directory, read by a thread until the 'listening on HOST:PORT' line and after it, so a
long run never blocks a server on a full pipe, and a failed start shows the log's tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from loadtest import baseline
from loadtest.compare import READY_TIMEOUT_S, _create_database
from switch.pgembedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL_LINES = 30
STOP_TIMEOUT_S = 30.0
# A load test measures the authorization path, not the per-terminal rate limiter (500/s by default).
UNLIMITED_RATE = "1000000"


def server_env() -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "proto")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


@contextlib.contextmanager
def server_process(command: list[str], ready_prefix: str, log_path: Path) -> Iterator[str]:
    """Start `command`, wait (bounded) for its ready line, yield HOST:PORT; terminate it after."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=server_env(),
        cwd=ROOT,
    )
    address: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if not address and line.startswith(ready_prefix):
                    address.append(line.rsplit(" ", 1)[-1].strip())
                    ready.set()
        ready.set()  # the process ended (before or after it was ready)

    reader = threading.Thread(target=drain, name=f"log-{log_path.stem}", daemon=True)
    reader.start()
    try:
        if not ready.wait(READY_TIMEOUT_S) or not address:
            raise RuntimeError(
                f"{' '.join(command[:4])} … did not start (log {log_path}):\n{log_tail(log_path)}"
            )
        yield address[0]
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5.0)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


@contextlib.asynccontextmanager
async def embedded_postgres(directory: Path) -> AsyncIterator[str]:
    """A durable private PostgreSQL (the switch pays for fsync; so does the baseline)."""
    server = EmbeddedPostgres(directory)
    dsn = await asyncio.to_thread(server.start)
    try:
        yield dsn
    finally:
        await asyncio.to_thread(server.stop)


def switch_command(dsn: str, data_dir: Path, token: str) -> list[str]:
    return [
        sys.executable, "-m", "switch.cli", "serve",
        "--listen", "127.0.0.1:0",
        "--data-dir", str(data_dir),
        "--operator-token", token,
        "--dsn", dsn,
        "--log-level", "WARNING",
        "--terminal-requests-per-s", UNLIMITED_RATE,
        "--terminal-burst", UNLIMITED_RATE,
    ]  # fmt: skip


def baseline_command(dsn: str) -> list[str]:
    return [sys.executable, "-m", "loadtest.baseline", "--listen", "127.0.0.1:0", "--dsn", dsn]


async def database(server_dsn: str, name: str) -> str:
    """A fresh database `name` on the server (dropped first if it exists)."""
    return await _create_database(server_dsn, name)


async def prepare_baseline(
    dsn: str, terminals: list[tuple[str, str]], cards: list[tuple[str, str, int]]
) -> None:
    await baseline.create_schema(dsn)
    await baseline.provision(dsn, terminals=terminals, cards=cards)
