"""End to end, as deployed: `fuelswitch serve` and `fuelswitch channels serve` as real processes, a
simulated WeChat Pay (v3) and Alipay notifying over HTTP while terminals spend, then each channel's
statement reconciled with the `fuelswitch reconcile` command line, which must report exactly the
discrepancies the simulation injected. Money is checked account by account and with `fuelswitch verify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
from fuelswitch.v1 import admin_pb2

from loadtest import channel_sim as sim_
from loadtest.channel_sim import CST, Alipay, SimResult, Txn, WechatV3
from loadtest.provision import Operator, provision
from loadtest.workload import CardSpec, run_pos_load

SIM_S = 4.0
READY_TIMEOUT_S = 60.0


@contextlib.contextmanager
def running(command: list[str], ready_prefix: str,
            env: dict[str, str]) -> Iterator[tuple[str, list[str], subprocess.Popen[str]]]:
    """A server process: its address once it printed `ready_prefix ... HOST:PORT`, its output, the process.

    Its output is drained all along (a full pipe would stall it) and kept for the assertions.
    """
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    ready: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.startswith(ready_prefix):
                ready.put(line.rsplit(" ", 1)[-1].strip())
        ready.put(None)

    threading.Thread(target=drain, daemon=True).start()
    try:
        address = ready.get(timeout=READY_TIMEOUT_S)
        if address is None:
            raise RuntimeError(f"{command[3]} exited before it was ready:\n{''.join(output)}")
        yield address, output, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def fuelswitch(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "switch.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, done.stdout, done.stderr


def reconcile(env: dict[str, str], target: str, channel: str, day: str, path: Path) -> dict:
    code, out, err = fuelswitch(env, "reconcile", "--channel", channel, "--day", day, "--statement", str(path),
                                "--target", target, "--json")
    report = json.loads(out) if out else {}
    assert code == (1 if report.get("discrepancies") else 0), (code, out, err)
    return report


def test_channels_end_to_end(fresh_db, tmp_path):
    asyncio.run(scenario(fresh_db, tmp_path))


async def scenario(dsn: str, work: Path) -> None:
    token = secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(Path.cwd() / "proto")]),
           "FUELSWITCH_OPERATOR_TOKEN": token}
    # Yesterday in Beijing: the statement of a closed day, and no traffic lands across midnight.
    day = (dt.datetime.now(CST).date() - dt.timedelta(days=1)).isoformat()
    serve = [sys.executable, "-m", "switch.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(work / "switch"),
             "--dsn", dsn, "--log-level", "WARNING"]
    wechat, alipay = WechatV3(), Alipay()
    config = sim_.channels_toml([wechat, alipay], work)
    with running(serve, "fuelswitch listening on", env) as (target, _, switch):
        async with grpc.aio.insecure_channel(target) as channel:
            network = await provision(channel, token, terminals=2, cards=8, balance_fen=1_000_000)
            operator = Operator(channel, token)
            accounts = [(await operator.call("CreateAccount", admin_pb2.CreateAccountRequest(
                kind="personal", holder_name=f"充值{n}"))).account_id for n in range(6)]
            gateway = [sys.executable, "-m", "switch.cli", "channels", "serve", "--config", str(config), "--listen",
                       "127.0.0.1:0", "--target", target]
            with running(gateway, "fuelswitch channels listening on", env) as (address, gateway_log, _):
                url = f"http://{address}"
                cards = [CardSpec(c.pan, c.pin, c.balance_fen) for c in network.cards]
                wx, ali, pos = await asyncio.gather(
                    sim_.run_channel(wechat, url, accounts, day, SIM_S, seed=1),
                    sim_.run_channel(alipay, url, accounts, day, SIM_S, seed=2),
                    run_pos_load(target, network.terminals, cards, SIM_S, in_flight=4, seed=3))
                for sim in (wx, ali):
                    assert sim.problems == [], sim.problems
                    assert all(n > 0 for n in sim.counts.values()), sim.counts
                assert (pos.errors, pos.mismatches, pos.pairs > 0) == (0, 0, True), pos.problems

                # Alipay prints no failed lines: its status_mismatch is a payment finance reversed here
                # (after an early run on an empty statement) that the final statement shows as paid.
                empty = work / "alipay-empty.csv"
                empty.write_bytes(alipay.statement([], day))
                early = reconcile(env, target, "alipay", day, empty)
                assert {d["type"] for d in early["discrepancies"]} == {"missing_there"}
                refunded = {t.original for t in ali.txns if t.kind == "refund"}
                victim = [t for t in ali.txns if t.kind == "payment" and t.txn_id not in refunded][-1]
                code, out, err = fuelswitch(env, "reconcile", "resolve", "--run", early["run_id"], "--txn",
                                            victim.txn_id, "--decision", "reverse", "--operator", "e2e",
                                            "--note", "not on the early statement", "--target", target, "--json")
                assert (code, json.loads(out)["result"]) == (0, "applied"), (out, err)

                # Each channel's statement, reconciled by the command line: exactly what was injected.
                for channel_sim, sim, reversed_here in ((wechat, wx, ()), (alipay, ali, (victim.txn_id,))):
                    path = work / f"{sim.channel}-{day}.csv"
                    injected = sim_.write_statement(channel_sim, sim, path, reversed_here=reversed_here)
                    assert {t for t, _ in injected} == {"missing_here", "missing_there", "amount_mismatch",
                                                        "status_mismatch", "duplicate", "fee_mismatch",
                                                        "date_mismatch"}
                    report = reconcile(env, target, sim.channel, day, path)
                    found = sorted((d["type"], d["channel_txn_id"]) for d in report["discrepancies"])
                    assert found == injected, (sim.channel, found, injected)
                    assert sum(report["counts"].values()) == len(injected)

                # Money: every account holds exactly what the channels moved, forged notifications nothing.
                await check_balances(operator, [wx, ali], {victim.account_id: victim.amount})
                refusals = [line for line in gateway_log if "WARNING" in line and "notification refused" in line]
                assert len(refusals) == wx.counts["forged"] + ali.counts["forged"], refusals

                code, out, err = fuelswitch(env, "verify", "--dsn", dsn, "--data-dir", str(work / "switch"))
                assert code == 0, out + err

                # The switch is gone: a notification is refused with a 5xx so that the channel sends it again.
                switch.terminate()
                switch.wait(30)
                late = Txn("payment", wechat.new_id("payment"), 100, wx.txns[0].time_ms, account_id=accounts[0])
                headers, body = wechat.notification(late)
                async with aiohttp.ClientSession() as session:
                    async with session.post(f"{url}/notify/wechat", data=body, headers=headers) as reply:
                        assert (reply.status, json.loads(await reply.read())["code"]) == (503, "FAIL")


async def check_balances(operator: Operator, sims: list[SimResult], reversed_: dict[str, int]) -> None:
    expected: dict[str, int] = {}
    for sim in sims:
        for account, moved in sim.balances().items():
            expected[account] = expected.get(account, 0) + moved
    for account, amount in reversed_.items():
        expected[account] -= amount
    for account, balance in expected.items():
        got = await operator.call("GetAccount", admin_pb2.GetAccountRequest(account_id=account))
        assert got.balance == balance, (account, got.balance, balance)
