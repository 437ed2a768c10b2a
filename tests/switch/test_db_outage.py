"""The database fails under load: terminals get 91 (or UNAVAILABLE) in time, no money moves, service resumes.

The switch runs as a process (`python -m switch.cli serve`) whose DSN points at a fault-injecting
TCP proxy (loadtest/faultproxy.py) in front of PostgreSQL. The self-checking lanes of
tests/switch/fault_lanes.py drive it (every request retransmitted with its identical bytes until
answered, each call with the 10 s deadline of docs/pos-protocol.md §2) while one fault is injected:

- PostgreSQL itself stopped (fast shutdown) and started again (its own embedded server);
- a network partition (proxy blackhole): connections hang, with the bytes either held and delivered
  when it heals, or lost for good (connections silently dead: only a timeout can reveal them);
- connections reset (RST) mid-load, three times;
- a slow database: 100 ms added each way (200 ms per round trip).

After each: every call ended within its deadline (no DEADLINE_EXCEEDED: a failed or hung commit is
answered 91 after at most COMMIT_TIMEOUT_S), service resumed by itself, memory (GetAccount) equals
PostgreSQL, every approval is in PostgreSQL and every POS row was answered, balances equal the
lanes' model and conservation holds, and `fuelswitch verify` exits 0. The measured times are
printed and recorded in docs/architecture.md ("Crashes and outages").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from loadtest.faultproxy import FaultProxy
from loadtest.provision import provision
from loadtest.terminal import CALL_TIMEOUT_S, Terminal
from switch.journal import COMMIT_TIMEOUT_S
from switch.pgembedded import EmbeddedPostgres
from tests.switch.fault_lanes import (
    CardModel,
    Host,
    Lanes,
    LaneTerminal,
    SwitchProcess,
    check_database,
    free_port,
    memory_equals_database,
    run_verify,
)

SEED = 20251123
TERMINALS = 3
LANES = 9
CARDS = 18
BALANCE_FEN = 5_000_000
BEFORE_S = 1.5  # load before the fault
AFTER_S = 1.5  # load after service resumed
RESUME_S_MAX = 15.0  # after the database is back, the first approval comes within this
CALL_SLACK_S = 1.0  # scheduling on a shared 2-core machine
TOKEN = "outage-test-operator-token"
FAILED = ("91", "UNAVAILABLE")


@dataclass
class Rig:
    proxy: FaultProxy
    pg: EmbeddedPostgres | None = None  # an own server, for the test that stops it


@dataclass
class Timing:
    first_failure_s: float | None  # from the fault to the first 91 / UNAVAILABLE a terminal got
    resume_s: float  # from the heal to the first answer that is not a failure
    max_call_s: float
    failures: int  # attempts answered 91 or UNAVAILABLE
    deadline_misses: int

    def text(self) -> str:
        first = "none" if self.first_failure_s is None else f"{self.first_failure_s:.2f} s"
        return (f"first 91/UNAVAILABLE after {first}, resumed {self.resume_s:.2f} s after the heal, "
                f"slowest call {self.max_call_s:.2f} s, {self.failures} failed attempts, "
                f"{self.deadline_misses} deadline misses")


async def _outage(dsn: str, tmp_path: Path, rig: Rig, inject: Callable[[Rig], Awaitable[None]],
                  heal: Callable[[Rig], Awaitable[None]], fault_s: float) -> tuple[Timing, Lanes]:
    proxy = rig.proxy
    await proxy.start()
    switch = SwitchProcess(dsn=proxy.dsn(dsn), data_dir=tmp_path / "data", token=TOKEN, port=free_port(),
                           log_dir=tmp_path)
    await switch.start()
    host = Host()
    host.up.set()
    try:
        async with grpc.aio.insecure_channel(switch.target) as channel:
            network = await provision(channel, TOKEN, terminals=TERMINALS, cards=CARDS, balance_fen=BALANCE_FEN)
            terminals = [LaneTerminal(Terminal(channel, t.terminal_id, t.private_key_hex, t.public_key_hex,
                                               require_response_mac=True)) for t in network.terminals]
            cards = [CardModel(c.pan, c.pin, c.account_id, c.balance_fen) for c in network.cards]
            lanes = Lanes(host, terminals, cards, lanes=LANES, seed=SEED, db_dsn=dsn)
            runner = asyncio.create_task(lanes.run())
            await asyncio.sleep(BEFORE_S)
            fault_at = time.monotonic()
            await inject(rig)
            await asyncio.sleep(fault_s)
            healed_at = time.monotonic()
            await heal(rig)
            while _resumed_at(lanes, healed_at) is None and time.monotonic() - healed_at < RESUME_S_MAX:
                assert not runner.done(), lanes.fig.problems or runner.exception()
                await asyncio.sleep(0.05)  # waiting for the first approval after the heal
            await asyncio.sleep(AFTER_S)
            lanes.stop()
            await asyncio.wait_for(runner, 60)
            assert not lanes.fig.problems, "\n".join(lanes.fig.problems)
            await memory_equals_database(channel, TOKEN, dsn, cards)
    finally:
        assert await switch.stop() == 0, switch.log_tail()
        await proxy.close()
    verify = run_verify(dsn, tmp_path / "data")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    await check_database(dsn, lanes.fig, cards, topped_up=CARDS * BALANCE_FEN)
    return _timing(lanes, fault_at, healed_at), lanes


def _resumed_at(lanes: Lanes, healed_at: float) -> float | None:
    ends = [a.started + a.seconds for a in lanes.fig.attempts_log
            if a.started >= healed_at and a.outcome not in FAILED]
    return min(ends) if ends else None


def _timing(lanes: Lanes, fault_at: float, healed_at: float) -> Timing:
    log = lanes.fig.attempts_log
    failures = [a.started + a.seconds for a in log if a.outcome in FAILED and a.started + a.seconds >= fault_at]
    resumed = _resumed_at(lanes, healed_at)
    assert resumed is not None, f"no approval within {RESUME_S_MAX} s of the heal: {lanes.fig.outcomes}"
    return Timing(
        first_failure_s=min(failures) - fault_at if failures else None,
        resume_s=resumed - healed_at,
        max_call_s=max(a.seconds for a in log),
        failures=sum(1 for a in log if a.outcome in FAILED),
        deadline_misses=sum(1 for a in log if a.outcome == "DEADLINE_EXCEEDED"),
    )


def _assert_answered_in_time(timing: Timing) -> None:
    assert timing.deadline_misses == 0, timing.text()
    assert timing.max_call_s <= CALL_TIMEOUT_S + CALL_SLACK_S, timing.text()


def _report(name: str, timing: Timing, lanes: Lanes) -> None:
    fig = lanes.fig
    print(f"\n{name}: {timing.text()}; {fig.requests} requests, {fig.attempts} sends, "
          f"{len(fig.approvals)} approvals checked, outcomes {dict(fig.outcomes)}")


# ------------------------------------------------------------------------------ the scenarios


@pytest.fixture
def own_pg(tmp_path):
    """A PostgreSQL of this test's own, since it is stopped mid-test (the session's is shared)."""
    server = EmbeddedPostgres(tmp_path / "pg", durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_postgres_stopped_mid_load(own_pg, tmp_path):
    own_pg.psql("CREATE DATABASE outage")
    dsn = own_pg.dsn_for("outage")

    async def stop(rig: Rig) -> None:
        assert rig.pg is not None
        await asyncio.to_thread(rig.pg.stop)

    async def start(rig: Rig) -> None:
        assert rig.pg is not None
        await asyncio.to_thread(rig.pg.start)
        rig.proxy.upstream = ("127.0.0.1", rig.pg.port)  # the port is reused when free; follow it if not

    assert own_pg.port is not None
    rig = Rig(FaultProxy("127.0.0.1", own_pg.port), own_pg)
    timing, lanes = asyncio.run(_outage(dsn, tmp_path, rig, stop, start, fault_s=4.0))
    _report("PostgreSQL stopped for 4 s", timing, lanes)
    _assert_answered_in_time(timing)
    assert timing.first_failure_s is not None and timing.first_failure_s <= COMMIT_TIMEOUT_S + CALL_SLACK_S


@pytest.mark.parametrize("discard", [False, True], ids=["bytes-held", "connections-dead"])
def test_network_partition_mid_load(pg_server, fresh_db, tmp_path, discard):
    async def cut(rig: Rig) -> None:
        rig.proxy.blackhole(discard=discard)

    async def restore(rig: Rig) -> None:
        rig.proxy.pass_through()

    assert pg_server.port is not None
    rig = Rig(FaultProxy("127.0.0.1", pg_server.port))
    timing, lanes = asyncio.run(_outage(fresh_db, tmp_path, rig, cut, restore, fault_s=COMMIT_TIMEOUT_S + 2))
    _report(f"partition of {COMMIT_TIMEOUT_S + 2:.0f} s ({'connections dead' if discard else 'bytes held'})",
            timing, lanes)
    _assert_answered_in_time(timing)
    # The commit in flight hangs until COMMIT_TIMEOUT_S; from then on every answer is an immediate 91.
    assert timing.first_failure_s is not None and timing.first_failure_s <= COMMIT_TIMEOUT_S + CALL_SLACK_S


def test_connections_reset_mid_load(pg_server, fresh_db, tmp_path):
    rng = random.Random(SEED)

    async def resets(rig: Rig) -> None:
        for _ in range(3):
            rig.proxy.reset_connections()
            await asyncio.sleep(rng.uniform(0.3, 1.0))  # load between the resets

    async def nothing(rig: Rig) -> None:
        pass

    assert pg_server.port is not None
    rig = Rig(FaultProxy("127.0.0.1", pg_server.port))
    timing, lanes = asyncio.run(_outage(fresh_db, tmp_path, rig, resets, nothing, fault_s=0.0))
    _report("3 connection resets", timing, lanes)
    _assert_answered_in_time(timing)
    assert rig.proxy.stats.resets >= 3


def test_slow_database(pg_server, fresh_db, tmp_path):
    async def slow(rig: Rig) -> None:
        rig.proxy.latency(100)

    async def fast(rig: Rig) -> None:
        rig.proxy.latency(0)

    assert pg_server.port is not None
    rig = Rig(FaultProxy("127.0.0.1", pg_server.port))
    timing, lanes = asyncio.run(_outage(fresh_db, tmp_path, rig, slow, fast, fault_s=4.0))
    _report("200 ms per database round trip for 4 s", timing, lanes)
    _assert_answered_in_time(timing)
    slow_calls = [a.seconds for a in lanes.fig.attempts_log if a.seconds >= 0.2]
    assert slow_calls, "the latency did not reach the terminals"
    assert timing.failures == 0, timing.text()  # slow, not failing: commits stay under COMMIT_TIMEOUT_S

