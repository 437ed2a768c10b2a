"""An in-process switch on a fresh database per test, with a provisioned network and terminals."""

from __future__ import annotations

import grpc
import pytest

from loadtest.provision import provision
from loadtest.terminal import Terminal
from switch.audit import check_conservation
from switch.config import ServeConfig
from switch.server import start_switch
from switch.verify import verify

OPERATOR_TOKEN = "test-operator-token"


@pytest.fixture
def switch_config(fresh_db, tmp_path):
    return ServeConfig(listen="127.0.0.1:0", data_dir=tmp_path, operator_token=OPERATOR_TOKEN, dsn=fresh_db)


async def assert_memory_equals_database(running) -> None:
    """Conservation holds in PostgreSQL, the journal's chain is intact, and memory equals what PostgreSQL committed."""
    await running.app.writer.flush()
    async with running.pool.acquire() as conn:
        report = await check_conservation(conn)
        assert report.ok, report
        chain = await verify(conn, running.app.keyring)
        assert chain.ok and chain.unchained == 0, chain.problems
        rows = await conn.fetch(
            "SELECT a.account_id, a.balance, coalesce((SELECT sum(x) FROM holds h, unnest(h.amounts) x"
            " WHERE h.state = 1 AND a.account_id = ANY(h.account_ids)), 0) AS held FROM accounts a"
        )
    for r in rows:
        assert running.app.state.ledger.balance(r["account_id"]) == (r["balance"], r["held"]), r["account_id"]


@pytest.fixture
async def switch(switch_config):
    running = await start_switch(switch_config)
    yield running
    await assert_memory_equals_database(running)
    await running.stop(0.5)


@pytest.fixture
async def channel(switch):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{switch.port}") as ch:
        yield ch


@pytest.fixture
async def network(channel):
    return await provision(channel, OPERATOR_TOKEN, terminals=2, cards=4, balance_fen=100_000)


@pytest.fixture
async def terminal(channel, network):
    spec = network.terminals[0]
    t = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex, require_response_mac=True)
    await t.sign_on()
    return t
