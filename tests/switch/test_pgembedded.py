"""EmbeddedPostgres against real servers: lifecycle, settings, crash and orphan recovery."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import psutil
import pytest
import uvloop

from switch.pgembedded import EmbeddedPostgres, EmbeddedPostgresError, wait_gone

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# An owner process for the orphan tests: starts a server, reports, then lives
# until the test SIGKILLs it.
OWNER_SCRIPT = """
import sys
from switch.pgembedded import EmbeddedPostgres
pg = EmbeddedPostgres(sys.argv[1], durable=False, stop_with_owner=sys.argv[2] == "1")
print(pg.start(), pg.pid, flush=True)
sys.stdin.read()
"""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from a sync test without touching the thread's current loop."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def fetchval(dsn: str, sql: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def gone(pid: int, timeout_s: float = 15.0) -> bool:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    if wait_gone([proc], timeout_s):
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was reparented to us (see `reaper`)
    return True


@pytest.fixture
def reaper() -> Iterator[None]:
    """Adopt the orphans of killed owners, so that gone() can reap them: this
    machine's PID 1 may never reap, leaving zombies behind every run."""
    if not sys.platform.startswith("linux"):
        yield
        return
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_child_subreaper = 36
    prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    try:
        yield
    finally:
        prctl(pr_set_child_subreaper, 0, 0, 0, 0)


def start_owner(data_dir: Path, *, stop_with_owner: bool) -> tuple[subprocess.Popen[str], str, int]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(data_dir), "1" if stop_with_owner else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])},
    )
    assert owner.stdout is not None
    ready, _, _ = select.select([owner.stdout], [], [], 60.0)
    assert ready, "owner process did not report a started server within 60 s"
    dsn, pid = owner.stdout.readline().split()
    return owner, dsn, int(pid)


def kill_owner(owner: subprocess.Popen[str]) -> None:
    owner.kill()  # SIGKILL: no atexit, no finally
    owner.wait(timeout=10)
    assert owner.stdin is not None and owner.stdout is not None
    owner.stdin.close()
    owner.stdout.close()


def test_start_stop_restart_keeps_data_and_is_durable_by_default(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    started = time.monotonic()
    with EmbeddedPostgres(data_dir) as pg:
        first_start_s = time.monotonic() - started
        dsn, pid = pg.dsn, pg.pid
        assert pid is not None and pg.is_running()
        assert pg.start() == dsn  # starting a running server is a no-op
        for name, value in [
            ("fsync", "on"),
            ("synchronous_commit", "on"),
            ("full_page_writes", "on"),
            ("shared_buffers", "128MB"),
            ("max_connections", "100"),
            ("listen_addresses", "127.0.0.1"),
        ]:
            assert run(fetchval(dsn, f"SHOW {name}")) == value, name
        run(execute(dsn, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"))
    assert not pg.is_running()
    assert gone(pid)
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
    with pytest.raises(EmbeddedPostgresError):
        _ = pg.dsn

    started = time.monotonic()
    again = EmbeddedPostgres(data_dir)
    dsn_again = again.start()
    restart_s = time.monotonic() - started
    try:
        assert dsn_again == dsn  # same password and, when free, the same port
        assert run(fetchval(dsn_again, "SELECT v FROM kept")) == 42
    finally:
        again.stop()
    # Generous bounds: they catch a sleep-based wait, not a slow CI machine.
    assert first_start_s < 30 and restart_s < 10, (first_start_s, restart_s)


def test_refuses_a_second_owner_of_the_same_data_dir(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", durable=False) as pg:
        with pytest.raises(EmbeddedPostgresError, match="in use"):
            EmbeddedPostgres(tmp_path / "pg", durable=False).start()
        assert pg.is_running()


def test_durability_settings_go_through_durable_flag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durable"):
        EmbeddedPostgres(tmp_path, settings={"fsync": "off"})


def test_recovers_after_postmaster_is_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    pg = EmbeddedPostgres(data_dir)
    dsn = pg.start()
    run(execute(dsn, "CREATE TABLE t (v int); INSERT INTO t VALUES (7)"))
    # An idle session whose backend outlives the postmaster for a moment.
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(dsn))
    try:
        assert pg.pid is not None
        os.kill(pg.pid, signal.SIGKILL)
        pg.stop()  # reaps the dead child, releases ownership
        assert (data_dir / "pgdata" / "postmaster.pid").exists()
        with EmbeddedPostgres(data_dir) as again:
            assert run(fetchval(again.dsn, "SELECT v FROM t")) == 7
    finally:
        conn.terminate()
        loop.close()


def test_stale_pid_file_naming_a_live_postgres_of_another_cluster(
    tmp_path: Path, pg_server: EmbeddedPostgres
) -> None:
    data_dir = tmp_path / "pg"
    with EmbeddedPostgres(data_dir, durable=False):  # initdb
        pass
    other = pg_server.pid
    assert other is not None
    # A reused pid: PostgreSQL alone would refuse ("lock file already exists").
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    pid_file.write_text(f"{other}\n{data_dir / 'pgdata'}\n0\n5432\n\n127.0.0.1\n0 0\nready\n")
    with EmbeddedPostgres(data_dir, durable=False) as pg:
        assert run(fetchval(pg.dsn, "SELECT 1")) == 1
    assert pg_server.pid == other and psutil.pid_exists(other)  # untouched


def test_orphan_of_a_killed_owner_is_stopped_by_the_next_start(
    tmp_path: Path, reaper: None
) -> None:
    data_dir = tmp_path / "pg"
    owner, dsn, orphan_pid = start_owner(data_dir, stop_with_owner=False)
    run(execute(dsn, "CREATE TABLE t (v int); INSERT INTO t VALUES (1)"))
    kill_owner(owner)
    assert not gone(orphan_pid, timeout_s=0.5), "server should outlive its owner here"
    with EmbeddedPostgres(data_dir, durable=False) as pg:
        assert gone(orphan_pid, timeout_s=0)  # stopped before the new server started
        assert pg.pid != orphan_pid
        assert run(fetchval(pg.dsn, "SELECT v FROM t")) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_stops_when_its_owner_is_killed(tmp_path: Path, reaper: None) -> None:
    data_dir = tmp_path / "pg"
    owner, _, pid = start_owner(data_dir, stop_with_owner=True)
    kill_owner(owner)
    assert gone(pid), "postmaster still running after its owner was SIGKILLed"
    # SIGINT means a fast, clean shutdown: PostgreSQL removed its own pid file.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs a separate server user")
def test_as_root_the_server_runs_as_an_unprivileged_user(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.pid is not None
    assert psutil.Process(pg_server.pid).uids().effective != 0
    assert pg_server.pgdata.stat().st_uid != 0


@pytest.mark.asyncio
async def test_session_server_runs_every_async_test_on_both_loops(
    request: pytest.FixtureRequest, fresh_db: str
) -> None:
    loop = asyncio.get_running_loop()
    expect_uvloop = request.node.name.endswith("[uvloop]")
    assert request.node.name.endswith(("[asyncio]", "[uvloop]"))
    assert isinstance(loop, uvloop.Loop) == expect_uvloop
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SHOW fsync") == "off"  # the session server is a test server
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
    finally:
        await conn.close()


def test_psql_reports_errors(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.psql("SELECT 6 * 7").strip() == "42"
    with pytest.raises(EmbeddedPostgresError, match="syntax error"):
        pg_server.psql("SELEC 1")
