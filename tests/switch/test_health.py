"""gRPC health follows the database: NOT_SERVING while it is unreachable (and while the switch rebuilds
its memory after a failed commit), SERVING again once it is back.

The outage is made on a fresh database of the session's PostgreSQL: new connections to it are
refused (ALLOW_CONNECTIONS false) and every open one is terminated, then it is allowed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from loadtest.provision import provision
from loadtest.terminal import Terminal
from switch.health import HealthMonitor
from switch.server import SERVICES, start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WAIT_S = 20.0


async def _statuses(channel) -> set[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    return {(await stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=5)).status for s in ("", *SERVICES)}


async def _wait_for(channel, status: int) -> float:
    """Seconds until every service reports `status` (bounded)."""
    started = time.monotonic()
    while await _statuses(channel) != {status}:
        if time.monotonic() - started > WAIT_S:
            raise AssertionError(f"health did not become {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
        await asyncio.sleep(0.05)  # polling the health service, as a load balancer does
    return time.monotonic() - started


def _outage(pg_server, database: str) -> None:
    pg_server.psql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
    pg_server.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")


def _restore(pg_server, database: str) -> None:
    pg_server.psql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")


@pytest.fixture
async def probed(switch_config, pg_server):
    database = switch_config.dsn.rsplit("/", 1)[1]
    running = await start_switch(dataclasses.replace(switch_config, db_probe_interval_s=0.1))
    try:
        yield running, database
    finally:
        _restore(pg_server, database)
        await assert_memory_equals_database(running)
        await running.stop(0.5)


async def test_health_goes_not_serving_while_the_database_is_down_and_back(probed, pg_server):
    running, database = probed
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=2, balance_fen=100_000)
        spec = network.terminals[0]
        terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex,
                            require_response_mac=True)
        await terminal.sign_on()
        card = network.cards[0]
        assert await _statuses(channel) == {SERVING}

        _outage(pg_server, database)
        await _wait_for(channel, NOT_SERVING)  # no traffic needed: the probe notices
        status = await running.status_service.status()
        assert (status.serving, status.database_reachable) == ("NOT_SERVING", False)
        # A decision cannot be made durable now: 91, and the switch starts rebuilding its memory.
        assert (await terminal.authorize(card.pan, card.pin, 1_000, "92")).response.response_code == "91"
        assert not running.app.available
        assert (await running.status_service.status()).recovering

        _restore(pg_server, database)
        await _wait_for(channel, SERVING)
        assert running.app.available
        assert (await terminal.authorize(card.pan, card.pin, 1_000, "92")).response.response_code == "00"
        status = await running.status_service.status()
        assert (status.serving, status.database_reachable, status.recovering) == ("SERVING", True, False)
        assert status.journal_commit_failures == 1
        assert running.monitor.transitions == 2


async def test_health_is_not_serving_during_recovery_even_when_the_probe_answers(switch):
    """App.serving cleared (recovery) is enough for NOT_SERVING, whatever the database says."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{switch.port}") as channel:
        switch.app.serving.clear()
        try:
            await switch.monitor.check()
            assert await _statuses(channel) == {NOT_SERVING}
        finally:
            switch.app.serving.set()
        await switch.monitor.check()
        assert await _statuses(channel) == {SERVING}


async def test_shutdown_reports_not_serving(switch_config):
    running = await start_switch(switch_config)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        assert await _statuses(channel) == {SERVING}
        await running.monitor.stop()
        assert await _statuses(channel) == {NOT_SERVING}
        await running.monitor.check()  # a probe after the stop does not bring it back
        assert await _statuses(channel) == {NOT_SERVING}
    await running.stop(0.5)


async def test_a_database_that_never_answers_is_unreachable_within_the_probe_timeout():
    """A black hole (accepts, never speaks): the probe gives up after probe_timeout_s, not never."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader, writer):
        held.append(writer)

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    health = health_aio.HealthServicer()
    monitor = HealthMonitor(SimpleNamespace(available=True), f"postgresql://u:p@127.0.0.1:{port}/db", health,
                            SERVICES, requests_total=lambda: 0, probe_timeout_s=0.3)
    try:
        started = time.monotonic()
        await monitor.check()
        assert time.monotonic() - started < 3.0
        assert (monitor.database_up, monitor.serving) == (False, False)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), None)
        assert answer.status == NOT_SERVING
    finally:
        await monitor.stop()
        for writer in held:
            writer.close()
        hole.close()
        await hole.wait_closed()


async def test_first_request_after_an_idle_partition_is_approved_not_91(switch_config):
    """No traffic while the database was partitioned away (connections silently dead): the probe notices,
    the writer drops its idle connection, and the first decision after the heal commits on a fresh one."""
    from loadtest.faultproxy import FaultProxy

    host, port = switch_config.dsn.rsplit("@", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = FaultProxy(host, int(port))
    await proxy.start()
    running = await start_switch(dataclasses.replace(switch_config, dsn=proxy.dsn(switch_config.dsn),
                                                     db_probe_interval_s=0.1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=100_000)
            spec, card = network.terminals[0], network.cards[0]
            terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
            await terminal.sign_on()
            assert (await terminal.authorize(card.pan, card.pin, 1_000, "92")).response.response_code == "00"

            proxy.blackhole(discard=True)  # every open connection now silently dead
            await _wait_for(channel, NOT_SERVING)
            proxy.pass_through()
            await _wait_for(channel, SERVING)
            started = time.monotonic()
            answer = (await terminal.authorize(card.pan, card.pin, 1_000, "92")).response
            assert answer.response_code == "00", answer
            assert time.monotonic() - started < 2.0  # not a commit timeout on a dead connection
            assert running.app.writer.stats.failures == 0
    finally:
        await assert_memory_equals_database(running)
        await running.stop(0.5)
        await proxy.close()
