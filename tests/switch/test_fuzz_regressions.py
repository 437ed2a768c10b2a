"""Inputs the fuzzers (tests/fuzz/) and outage tests showed to be mishandled, pinned one by one."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from fuelswitch.v1 import admin_pb2

from loadtest.provision import Operator
from loadtest.terminal import Terminal
from tests.switch.conftest import OPERATOR_TOKEN


async def test_nul_in_a_stored_string_is_refused_before_it_can_fail_a_group_commit(switch, channel, network,
                                                                                   terminal):
    """PostgreSQL text refuses U+0000: let through, it failed the whole batch (91 for everybody)."""
    spec = network.terminals[1]
    bystander = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
    await bystander.sign_on()
    card = network.cards[0]
    hold = (await terminal.authorize(card.pan, card.pin, 5_000)).response.hold_id
    bad, fine = await asyncio.gather(terminal.complete(hold, 3_000, 4_000, "9\x002", 738),
                                     bystander.balance_inquiry(network.cards[1].pan, network.cards[1].pin),
                                     return_exceptions=True)
    assert isinstance(bad, grpc.aio.AioRpcError) and bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL" in (bad.details() or "")
    assert fine.response.response_code == "00"
    assert switch.app.writer.stats.failures == 0
    done = (await terminal.complete(hold, 3_000, 4_000, "92", 738)).response  # the STAN was not used
    assert done.response_code == "00"


async def test_operator_strings_with_nul_are_invalid_argument(switch, channel):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await Operator(channel, OPERATOR_TOKEN).call(
            "CreateAccount", admin_pb2.CreateAccountRequest(kind="personal", holder_name="张\x00三"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert switch.app.writer.stats.failures == 0


@pytest.mark.parametrize("path", ["/fuelswitch.v1.CardAdmin/GetAccount", "/fuelswitch.v1.Clearing/SubmitPayment",
                                  "/fuelswitch.v1.CardAdmin/GetStatus"])
async def test_operator_requests_that_do_not_parse_are_invalid_argument(switch, channel, path):
    """gRPC's own deserializer answered UNKNOWN with the decoder's exception text."""
    call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(b"\x0a\xff\xff", metadata=(("authorization", f"Bearer {OPERATOR_TOKEN}"),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not parse" in (refused.value.details() or "")


async def test_statement_line_with_nul_is_refused_by_name_and_stores_no_run(switch, channel):
    """Streamed statement lines are not walked for NUL as they arrive; a discrepancy holding one failed
    the run's INSERT with INTERNAL. It is now INVALID_ARGUMENT naming the line, and no run is stored."""
    from switch.clearing_client import ClearingClient
    from tests.switch.test_clearing import line

    client = ClearingClient(channel, OPERATOR_TOKEN)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.reconcile([line("X\x001", 1_234)])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL" in (refused.value.details() or "")
    async with switch.app.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reconciliation_runs") == 0
    clean = await client.reconcile([line("X1", 1_234)])
    assert clean.missing_here == 1


async def test_get_account_during_a_rebuild_is_unavailable_not_pre_failure_memory(switch, channel, network, terminal,
                                                                                  monkeypatch):
    """While recovery rebuilds memory, memory still holds the failed batch's decisions: reads must wait."""
    import switch.app as app_module

    card = network.cards[0]
    operator = Operator(channel, OPERATOR_TOKEN)
    writer = switch.app.writer
    real_write, real_load = writer._write, app_module.load_state
    rebuild_may_finish, rebuilding = asyncio.Event(), asyncio.Event()

    async def failing_write(entries, batch):
        raise ConnectionResetError("simulated loss of the database connection")

    async def held_load(conn, now_ms):
        rebuilding.set()
        await rebuild_may_finish.wait()
        return await real_load(conn, now_ms)

    writer._write = failing_write
    monkeypatch.setattr(app_module, "load_state", held_load)
    assert (await terminal.authorize(card.pan, card.pin, 30_000, "92")).response.response_code == "91"
    await asyncio.wait_for(rebuilding.wait(), 10)
    get = admin_pb2.GetAccountRequest(account_id=card.account_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await operator.call("GetAccount", get)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    writer._write = real_write
    rebuild_may_finish.set()
    await asyncio.wait_for(switch.app.serving.wait(), 10)
    account = await operator.call("GetAccount", get)
    assert (account.balance, account.held) == (100_000, 0)
