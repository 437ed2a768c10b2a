"""`fuelswitch reconcile` / `fuelswitch settlement` against an in-process switch: reports, exit codes,
a statement that fails its own checks (no run stored), resolutions and the settlement export."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from loadtest.channel_sim import Line, Txn, WechatV3
from switch import clearing_cli
from switch.clearing_client import ClearingClient
from switch.cli import build_parser
from switch.config import load_config
from tests.switch.conftest import OPERATOR_TOKEN
from tests.switch.test_clearing import DAY, PAID_AT, pay


async def cli(switch, *argv: str, token: str = OPERATOR_TOKEN) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = [*argv, "--target", f"127.0.0.1:{switch.port}", *(["--token", token] if token else [])]
    code = await asyncio.to_thread(clearing_cli.main, args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def bill(tmp_path, *lines: tuple[str, int], name: str = "bill.csv") -> str:
    """A WeChat trade bill of DAY with these (id, amount) payment lines."""
    path = tmp_path / name
    path.write_bytes(WechatV3().statement([Line(Txn("payment", tid, amount, PAID_AT, order=f"MO-{tid}"), amount)
                                           for tid, amount in lines], DAY))
    return str(path)


@pytest.fixture
async def paid(switch, channel, network):
    client = ClearingClient(channel, OPERATOR_TOKEN)
    for tid, amount in (("P1", 1_000), ("P2", 2_000)):
        assert (await client.submit_payment(pay(tid, network.cards[0].account_id, amount))).result == "applied"
    return network.cards[0].account_id


async def test_a_matching_statement_exits_0_and_discrepancies_exit_1(switch, paid, tmp_path):
    code, out, err = await cli(switch, "reconcile", "--channel", "wechat", "--day", DAY, "--statement",
                               bill(tmp_path, ("P1", 1_000), ("P2", 2_000)))
    assert code == 0, err
    assert "2 statement lines, 2 matched" in out and "total" in out
    code, out, err = await cli(switch, "reconcile", "--channel", "wechat", "--day", DAY, "--statement",
                               bill(tmp_path, ("P1", 1_001), ("X1", 500)), "--json")
    assert code == 1, err
    report = json.loads(out)
    assert sorted((d["type"], d["channel_txn_id"]) for d in report["discrepancies"]) == [
        ("amount_mismatch", "P1"), ("missing_here", "X1"), ("missing_there", "P2")]
    assert (report["counts"]["missing_here"], report["statement_net"], report["journal_net"]) == (1, 1_501, 3_000)


async def test_a_statement_failing_its_own_totals_is_refused_and_stores_no_run(switch, paid, tmp_path):
    # More lines than one chunk: the first chunks are on their way when the summary check fails.
    lines = [(f"T{i}", 100 + i) for i in range(6_000)]
    path = tmp_path / "bad.csv"
    path.write_bytes(open(bill(tmp_path, *lines), "rb").read().replace(b"`6000,", b"`5999,"))
    code, out, err = await cli(switch, "reconcile", "--channel", "wechat", "--day", DAY, "--statement", str(path))
    assert code == 2 and "总交易单数 5999 but 6000 lines" in err and "no run stored" in err
    await asyncio.sleep(0.3)
    async with switch.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reconciliation_runs") == 0


async def test_list_resolve_and_settlement(switch, paid, tmp_path):
    code, out, _ = await cli(switch, "reconcile", "--channel", "wechat", "--day", DAY, "--statement",
                             bill(tmp_path, ("P1", 1_000), ("P2", 2_000), ("X1", 500)), "--json")
    run = json.loads(out)["run_id"]
    code, out, err = await cli(switch, "reconcile", "resolve", "--run", run, "--txn", "X1", "--decision", "credit",
                               "--account", paid, "--operator", "finance-li", "--note", "ticket 7")
    assert code == 0 and "X1 of run" in out and "applied" in out, err
    code, out, _ = await cli(switch, "reconcile", "resolve", "--run", run, "--txn", "X1", "--decision", "accept")
    assert code == 2  # decided once
    code, out, _ = await cli(switch, "reconcile", "list-discrepancies", "--run", run, "--json")
    assert [(d["channel_txn_id"], d["resolution"]) for d in json.loads(out)["discrepancies"]] == [("X1", "credit")]
    code, out, _ = await cli(switch, "reconcile", "list-discrepancies", "--run", run)
    assert code == 0 and "X1" in out and "credit" in out
    code, out, err = await cli(switch, "settlement", "--day", DAY, "--export", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / f"settlement-{DAY}.csv").read_text().startswith("batch_id,station_id,business_date")
    code, out, _ = await cli(switch, "settlement", "--day", DAY, "--json")
    assert (code, json.loads(out)["final"]) == (0, True)


async def test_errors_exit_2(switch, tmp_path):
    path = bill(tmp_path, ("P1", 1_000))
    assert (await cli(switch, "reconcile", "--channel", "wechat", "--day", DAY, "--statement", path,
                      token=""))[0] == 2
    code, _, err = await cli(switch, "reconcile", "--channel", "unionpay", "--day", DAY, "--statement", path)
    assert code == 2 and "--merchant" in err
    code, _, err = await cli(switch, "reconcile", "--channel", "wechat", "--day", DAY, "--statement", path,
                             token="wrong")
    assert code == 2 and "UNAUTHENTICATED" in err
    code, _, err = await cli(switch, "reconcile", "--channel", "wechat", "--day", DAY, "--statement",
                             str(tmp_path / "nowhere.csv"))
    assert code == 2 and "nowhere.csv" in err


def test_serve_flags_set_the_clearing_settings():
    args = build_parser().parse_args(["serve", "--operator-token", "t", "--settlement-cutoff-hour", "6",
                                      "--settlement-fee-bps", "150", "--reconcile-fee-tolerance-fen", "2"])
    flags = {k: v for k, v in vars(args).items() if k != "command"}
    config = load_config(flags, {})
    assert (config.settlement_cutoff_hour, config.settlement_fee_bps, config.reconcile_fee_tolerance_fen) == (6, 150, 2)
    with pytest.raises(ValueError, match="settlement_cutoff_hour"):
        load_config({**flags, "settlement_cutoff_hour": 24}, {})
