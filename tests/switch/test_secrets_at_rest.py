"""No card number or PIN in clear: not in a dump of the database, not in the logs, not in what the
operator tools print (the one exception by design: the IssueCard response, shown once)."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys

import grpc
from fuelswitch.v1 import admin_pb2

from loadtest.provision import Operator
from loadtest.terminal import Terminal
from loadtest.workload import TerminalSpec
from switch import sm2
from switch.pgembedded import install_dir
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database

PINS = ("731946", "580273", "914682")  # distinctive: they cannot be mistaken for amounts or ids


def _leaks(text: str, pans: list[str]) -> list[str]:
    tokens = set(re.findall(r"[0-9A-Za-z]+", text))
    return [pan for pan in pans if pan in text] + [pin for pin in PINS if pin in tokens]


async def test_no_pan_or_pin_in_clear_in_database_logs_or_operator_output(switch_config, pg_server, caplog):
    caplog.set_level(logging.DEBUG)
    running = await start_switch(switch_config)
    target = f"127.0.0.1:{running.port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            operator = Operator(channel, OPERATOR_TOKEN)
            station = await operator.call("RegisterStation", admin_pb2.RegisterStationRequest(
                station_id="S-LEAK", name="leak check"))
            private, public = sm2.generate_keypair()
            await operator.call("RegisterTerminal", admin_pb2.RegisterTerminalRequest(
                terminal_id="T-LEAK", station_id=station.station_id, public_key=public))
            account = await operator.call("CreateAccount", admin_pb2.CreateAccountRequest(
                kind="personal", holder_name="Leak Test"))
            await operator.call("TopUp", admin_pb2.TopUpRequest(
                account_id=account.account_id, amount=500_000, reference="leak-1"))
            cards = [await operator.call("IssueCard", admin_pb2.IssueCardRequest(
                account_id=account.account_id, pin=pin)) for pin in PINS[:2]]
            pans = [card.pan for card in cards]
            terminal = Terminal(channel, *TerminalSpec("T-LEAK", private, public))
            await terminal.sign_on()
            hold = (await terminal.authorize(pans[0], PINS[0], 20_000, "92")).response
            await terminal.complete(hold.hold_id, 18_000, 0, "92", 0)
            assert (await terminal.authorize(pans[1], PINS[0], 1_000, "92")).response.response_code == "55"
            await terminal.purchase(pans[1], PINS[1], 3_000, "95", 0)
            await operator.call("ResetPin", admin_pb2.ResetPinRequest(card_id=cards[1].card_id, pin=PINS[2]))
            assert (await terminal.balance_inquiry(pans[1], PINS[2])).response.response_code == "00"

        cli = [sys.executable, "-m", "switch.cli", "admin", "--target", target, "--token", OPERATOR_TOKEN]
        printed = ""
        for args in (["get-card", cards[0].card_id], ["--json", "get-card", cards[1].card_id],
                     ["list-transactions", "--account", account.account_id], ["get-account", account.account_id]):
            # In a thread: the switch answering it runs on this event loop.
            done = await asyncio.to_thread(subprocess.run, [*cli, *args], capture_output=True, text=True,
                                           timeout=60, check=True)
            printed += done.stdout
        assert cards[0].masked_pan in printed
        await assert_memory_equals_database(running)
    finally:
        await running.stop(1.0)

    database = switch_config.dsn.rsplit("/", 1)[1]
    dump = subprocess.run([str(install_dir() / "bin" / "pg_dump"), "--data-only", "-d", pg_server.dsn_for(database)],
                          capture_output=True, text=True, timeout=120, check=True).stdout
    assert "COPY public.cards" in dump and "COPY public.journal" in dump
    logs = "\n".join(r.getMessage() for r in caplog.records)
    server_log = pg_server.log_path.read_text(errors="replace")
    for where, text in (("database dump", dump), ("switch logs", logs), ("PostgreSQL log", server_log),
                        ("operator CLI output", printed)):
        assert _leaks(text, pans) == [], f"found in the {where}"


def test_the_search_finds_what_it_looks_for():
    pan = "9000010000000012345"
    assert _leaks(f"card {pan} pin={PINS[0]}", [pan]) == [pan, PINS[0]]
    assert _leaks("amount 1731946 and \\x731946ab", [pan]) == []  # digits inside other tokens are not PINs
