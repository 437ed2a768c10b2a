"""The naive baseline over real gRPC and a real PostgreSQL, and the load runner against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import grpc
import grpc.aio
import pytest
from fuelswitch.v1 import common_pb2, pos_pb2

from loadtest.baseline import create_schema, provision, serve
from loadtest.terminal import Terminal
from loadtest.workload import (
    CardSpec,
    LoadOptions,
    TerminalSpec,
    make_cards,
    make_terminals,
    run_pos_load,
)
from switch import sm3
from switch.protocol import MD_MAC, MD_SESSION_ID, MD_TERMINAL_ID

BALANCE_FEN = 1_000_000  # ¥10 000 per card


@dataclass
class Setup:
    target: str
    channel: grpc.aio.Channel
    dsn: str
    terminals: list[TerminalSpec]
    cards: list[CardSpec]

    def terminal(self, index: int = 0, **options: object) -> Terminal:
        spec = self.terminals[index]
        return Terminal(self.channel, *spec, require_response_mac=True, **options)  # type: ignore[arg-type]

    async def account(self, pan: str) -> tuple[int, int]:
        con = await asyncpg.connect(self.dsn)
        try:
            row = await con.fetchrow(
                "SELECT a.balance, a.held FROM naive_cards c JOIN naive_accounts a "
                "USING (account_id) WHERE c.pan = $1",
                pan,
            )
        finally:
            await con.close()
        return row["balance"], row["held"]

    async def count(self, table: str) -> int:
        con = await asyncpg.connect(self.dsn)
        try:
            return int(await con.fetchval(f"SELECT count(*) FROM {table}"))
        finally:
            await con.close()


@asynccontextmanager
async def baseline(dsn: str, terminals: int = 4, cards: int = 8) -> AsyncIterator[Setup]:
    terminal_specs = make_terminals(terminals)
    card_specs = make_cards(cards, BALANCE_FEN, seed=7)
    await create_schema(dsn)
    await provision(
        dsn,
        [(t.terminal_id, t.public_key_hex) for t in terminal_specs],
        [tuple(c) for c in card_specs],  # type: ignore[misc]
    )
    server = await serve("127.0.0.1:0", dsn, pool_size=4, create=False)
    target = f"127.0.0.1:{server.port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            yield Setup(target, channel, dsn, terminal_specs, card_specs)
    finally:
        await server.stop(0)


async def test_authorize_then_complete_moves_money(fresh_db: str) -> None:
    async with baseline(fresh_db) as setup:
        card = setup.cards[0]
        terminal = setup.terminal()
        signon = await terminal.sign_on()
        assert signon.response_code == "00" and signon.station_id

        auth = (await terminal.authorize(card.pan, card.pin, 30_000, "92", pump=3)).response
        assert auth.response_code == "00", auth.message
        assert auth.approved_amount == 30_000 and auth.available_balance == BALANCE_FEN - 30_000
        assert len(auth.approval_code) == 6 and auth.hold_id
        assert await setup.account(card.pan) == (BALANCE_FEN, 30_000)

        done = (await terminal.complete(auth.hold_id, 25_830, 35_000, "92", 738)).response
        assert done.response_code == "00", done.message
        assert done.settled_amount == 25_830 and done.transaction_id
        assert done.balance == done.available == BALANCE_FEN - 25_830
        assert await setup.account(card.pan) == (BALANCE_FEN - 25_830, 0)
        assert await setup.count("naive_transactions") == 1

        again = (await terminal.complete(auth.hold_id, 25_830, 35_000, "92", 738)).response
        assert again == done  # a hold completes once; the same completion repeats its result
        other = (await terminal.complete(auth.hold_id, 100, 136, "92", 738)).response
        assert other.response_code == "94"
        assert await setup.account(card.pan) == (BALANCE_FEN - 25_830, 0)


async def test_declines(fresh_db: str) -> None:
    async with baseline(fresh_db) as setup:
        card, other_card = setup.cards[0], setup.cards[1]
        terminal = setup.terminal()
        await terminal.sign_on()
        wrong_pin = "000000" if card.pin != "000000" else "111111"

        async def code(**kwargs: object) -> tuple[str, int]:
            args = {"pan": card.pan, "pin": card.pin, "amount": 1_000} | kwargs
            response = (await terminal.authorize(**args)).response  # type: ignore[arg-type]
            return response.response_code, response.available_balance

        assert await code(amount=BALANCE_FEN + 1) == ("51", BALANCE_FEN)
        assert await code(pin=wrong_pin) == ("55", 0)
        assert await code(pin=None) == ("55", 0)  # every baseline card requires a PIN
        bad_check = other_card.pan[:-1] + str((int(other_card.pan[-1]) + 1) % 10)
        assert await code(pan=bad_check, pin=other_card.pin) == ("14", 0)
        never_issued = make_cards(1, 0, first_serial=999_999)[0]
        assert await code(pan=never_issued.pan, pin=never_issued.pin) == ("14", 0)
        assert await code(amount=0) == ("13", 0)
        assert await code(amount=10_000_001) == ("13", 0)
        assert await code(product_code="97") == ("12", 0)

        assert (
            await terminal.complete("NH-nope", 100, 136, "92", 738)
        ).response.response_code == "25"
        auth = (await terminal.authorize(card.pan, card.pin, 5_000)).response
        above = await terminal.complete(auth.hold_id, 5_001, 6_777, "92", 738)
        assert above.response.response_code == "13"
        inconsistent = await terminal.complete(auth.hold_id, 4_000, 1_000, "92", 738)
        assert inconsistent.response.response_code == "13"
        stranger = setup.terminal(1)
        await stranger.sign_on()
        foreign = await stranger.complete(auth.hold_id, 738, 1_000, "92", 738)
        assert foreign.response.response_code == "12"
        released = (await terminal.complete(auth.hold_id, 0, 0, "92", 738)).response
        assert released.response_code == "00" and released.transaction_id == ""
        assert await setup.account(card.pan) == (BALANCE_FEN, 0)
        assert await setup.count("naive_transactions") == 0

        with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
            await terminal.cancel(auth.hold_id)
        assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_refusals_before_business_logic(fresh_db: str) -> None:
    async with baseline(fresh_db) as setup:
        card = setup.cards[0]
        terminal = setup.terminal()
        await terminal.sign_on()
        request = pos_pb2.AuthorizeRequest(
            pan=card.pan, pin_block=terminal.pin_block(card.pin, card.pan), amount=1_000,
            product_code="92", pump=1,
        )  # fmt: skip
        stan, body = terminal.prepare(request)
        session = terminal.session

        async def refusal(data: bytes = body, **kwargs: object) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await terminal.send_bytes("Authorize", data, **kwargs)  # type: ignore[arg-type]
            return refused.value.code(), refused.value.details() or ""

        unauthenticated = grpc.StatusCode.UNAUTHENTICATED
        code, details = await refusal(mac_hex="0" * 64)
        assert (code, details.split(":")[0]) == (unauthenticated, "bad-mac")
        tampered = body[:-1] + bytes([body[-1] ^ 1])  # altered after the MAC was computed
        code, details = await refusal(tampered, mac_hex=sm3.mac_hex(session.mac_key, body))
        assert (code, details.split(":")[0]) == (unauthenticated, "bad-mac")
        code, details = await refusal(metadata=((MD_TERMINAL_ID, terminal.terminal_id),))
        assert (code, details.split(":")[0]) == (unauthenticated, "missing-metadata")
        forged = (
            (MD_TERMINAL_ID, terminal.terminal_id),
            (MD_SESSION_ID, "nope"),
            (MD_MAC, "0" * 64),
        )
        code, details = await refusal(metadata=forged)
        assert (code, details.split(":")[0]) == (unauthenticated, "unknown-session")

        skewed = pos_pb2.AuthorizeRequest()
        skewed.CopyFrom(request)
        skewed.header.terminal_time_ms -= 10 * 60 * 1000
        code, details = await refusal(skewed.SerializeToString())
        assert (code, details.split(":")[0]) == (unauthenticated, "clock-skew")
        missing_header = pos_pb2.AuthorizeRequest(pan=card.pan, amount=1_000).SerializeToString()
        code, _ = await refusal(missing_header)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        short_pan = pos_pb2.AuthorizeRequest(
            header=common_pb2.TerminalHeader(terminal_id=terminal.terminal_id, stan=9,
                                             terminal_time_ms=terminal.now_ms()),
            pan="12345", amount=1_000,
        ).SerializeToString()  # fmt: skip
        code, _ = await refusal(short_pan)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert await setup.count("naive_stans") == 0  # refused calls do not use their STAN

        response = await terminal.send_bytes("Authorize", body)
        assert response.response_code == "00"  # the STAN was still free
        assert pos_pb2.AuthorizeRequest.FromString(body).header.stan == stan


async def test_sign_on_refusals(fresh_db: str) -> None:
    async with baseline(fresh_db) as setup:
        terminal = setup.terminal(3)
        nonce = bytes(range(16))
        await terminal.sign_on(nonce=nonce)
        other_key = setup.terminals[1][1:]
        refusals = [
            (lambda: terminal.sign_on(nonce=nonce), "UNAUTHENTICATED", "nonce-reused"),
            (lambda: terminal.sign_on(nonce=b"short"), "INVALID_ARGUMENT", "nonce must be 16"),
            (lambda: Terminal(setup.channel, "NOPE", *other_key).sign_on(), "UNAUTHENTICATED",
             "unknown-terminal"),
            (lambda: Terminal(setup.channel, setup.terminals[0][0], *other_key).sign_on(),
             "UNAUTHENTICATED", "bad-signature"),
        ]  # fmt: skip
        for call, status, prefix in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call()
            assert refused.value.code().name == status
            assert (refused.value.details() or "").startswith(prefix)


async def test_identical_retransmission_returns_the_original(fresh_db: str) -> None:
    async with baseline(fresh_db) as setup:
        card = setup.cards[2]
        terminal = setup.terminal(2)
        await terminal.sign_on()
        sent = await terminal.authorize(card.pan, card.pin, 7_000)
        assert sent.response.response_code == "00"

        assert await terminal.send_bytes("Authorize", sent.request_bytes) == sent.response
        await terminal.sign_on()  # a new session: same bytes, new MAC, same answer (§6.1)
        assert await terminal.send_bytes("Authorize", sent.request_bytes) == sent.response
        assert await setup.account(card.pan) == (BALANCE_FEN, 7_000)  # held once
        assert await setup.count("naive_holds") == 1

        different = await terminal.authorize(card.pan, card.pin, 8_000, stan=sent.stan)
        assert different.response.response_code == "94"
        assert await terminal.send_bytes("Authorize", sent.request_bytes) == sent.response
        assert await setup.account(card.pan) == (BALANCE_FEN, 7_000)

        declined = await terminal.authorize(card.pan, card.pin, BALANCE_FEN * 2)
        assert declined.response.response_code == "51"
        assert await terminal.send_bytes("Authorize", declined.request_bytes) == declined.response


@pytest.mark.parametrize("processes", [1, 2])
async def test_load_runs_clean(fresh_db: str, processes: int) -> None:
    async with baseline(fresh_db) as setup:
        result = await run_pos_load(
            setup.target,
            setup.terminals,
            setup.cards,
            duration_s=2.0,
            in_flight=8,
            seed=20250101,
            processes=processes,
            options=LoadOptions(require_response_mac=True),
        )
        assert result.errors == 0 and result.mismatches == 0, (result.seed, result.problems)
        assert result.rpc_per_s > 0 and result.pairs > 0
        assert result.rpcs == 2 * result.pairs + result.declines
        assert result.processes == processes and result.terminals == 4
        assert result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
        assert result.histogram.get_total_count() == result.rpcs
        assert set(result.to_dict()) >= {"rpc_per_s", "pairs_per_s", "latency_ms", "errors", "seed"}
        for card in setup.cards:  # the database agrees with the runner's model, card by card
            assert await setup.account(card.pan) == (result.final_balances[card.pan], 0)
        assert await setup.count("naive_transactions") == result.pairs
