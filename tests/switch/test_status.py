"""`fuelswitch status` against a running in-process switch (CardAdmin.GetStatus, operator token)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, admin_pb2_grpc

from tests.switch.conftest import OPERATOR_TOKEN


def _status_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switch.cli", "status", *args], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ".:proto"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_status_reports_the_running_switch(switch, channel, network, terminal):
    card = network.cards[0]
    for _ in range(3):
        assert (await terminal.authorize(card.pan, card.pin, 1_000, "92")).response.response_code == "00"
    target = f"127.0.0.1:{switch.port}"
    # In a thread: the switch answering it runs on this event loop.
    done = await asyncio.to_thread(_status_cli, "--target", target, "--token", OPERATOR_TOKEN, "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["serving"] == "SERVING" and status["database_reachable"] is True
    assert status["recovering"] is False
    assert status["version"] == "0.1.0"
    assert status["open_holds"] == "3"  # uint64: a string in the proto3 JSON mapping
    assert status["sessions"] == 1
    assert status["journal_queue_depth"] == 0
    assert int(status["journal_commits"]) == switch.app.writer.stats.commits
    assert status["last_commit_ms"] > 0
    assert status["requests_per_s"] > 0 and status["uptime_s"] > 0
    assert {k["purpose"]: k["version"] for k in status["key_versions"]} == {
        "pan": 1, "pan-index": 1, "pvk": 1, "journal": 1}

    done = await asyncio.to_thread(_status_cli, "--target", target, "--token", OPERATOR_TOKEN)
    assert done.returncode == 0, done.stderr
    for words in ("serving      SERVING", "database     reachable", "open holds   3", "sessions     1",
                  "requests/s", "last commit", "data keys    journal v1, pan v1, pan-index v1, pvk v1", "uptime"):
        assert words in done.stdout, done.stdout


async def test_status_needs_the_operator_token(switch, channel):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin_pb2_grpc.CardAdminStub(channel).GetStatus(admin_pb2.GetStatusRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    target = f"127.0.0.1:{switch.port}"
    done = await asyncio.to_thread(_status_cli, "--target", target, "--token", "wrong")
    assert done.returncode == 1 and "UNAUTHENTICATED" in done.stderr
    done = await asyncio.to_thread(_status_cli, "--target", target)
    assert done.returncode == 2 and "no operator token" in done.stderr


async def test_status_reports_not_serving_with_exit_1(switch):
    switch.app.serving.clear()  # as during recovery
    try:
        await switch.monitor.check()
        done = await asyncio.to_thread(_status_cli, "--target", f"127.0.0.1:{switch.port}", "--token",
                                       OPERATOR_TOKEN)
    finally:
        switch.app.serving.set()
    assert done.returncode == 1, done.stderr
    assert "NOT_SERVING (recovering" in done.stdout


def test_status_of_nothing_listening_exits_3():
    done = _status_cli("--target", f"127.0.0.1:{_free_port()}", "--token", "t", "--timeout", "2")
    assert done.returncode == 3 and "no answer from the switch" in done.stderr
