"""`fuelswitch loadtest` as a user runs it: the real command in a subprocess, on a spawned switch."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

from loadtest import cli
from loadtest.mix import parse_mix
from loadtest.operations import HANDLERS

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 120
MIX = "auth_complete=55,purchase=10,cancel=10,inquiry=10,topup=10,offline=5"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def loadtest(tmp_path: Path, *flags: str) -> tuple[int, str, dict]:
    """Run `fuelswitch loadtest --spawn` small; return (exit code, output, JSON figures)."""
    figures = tmp_path / "figures.json"
    command = [
        sys.executable, "-m", "switch.cli", "loadtest", "--spawn",
        "--terminals", "2", "--in-flight", "4", "--json", str(figures),
        "--work-dir", str(tmp_path / "work"), *flags,
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    output = done.stdout + done.stderr
    return done.returncode, output, json.loads(figures.read_text()) if figures.exists() else {}


def check_figures(leg: dict) -> None:
    for key in ("rpc_per_s", "pairs_per_s", "errors", "mismatches", "operations", "timeline_rpc"):
        assert key in leg, key
    assert leg["rpc_per_s"] > 0 and leg["pairs_per_s"] > 0
    latency = leg["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p999"]
    assert sum(leg["timeline_rpc"]) == leg["rpcs"]  # every RPC is in one 1 s bucket


def test_a_mixed_run_on_a_spawned_switch_is_clean_and_reported(tmp_path):
    report = tmp_path / "report.png"
    code, output, figures = loadtest(
        tmp_path, "--duration", "3", "--mix", MIX, "--seed", "11", "--report", str(report)
    )
    assert code == 0, output
    check_figures(figures)
    assert (figures["errors"], figures["mismatches"], figures["seed"]) == (0, 0, 11)
    assert set(figures["operations"]) == set(parse_mix(MIX, HANDLERS).names)
    assert all(op["count"] > 0 for op in figures["operations"].values()), figures["operations"]
    assert figures["audited"] == figures["cards"] == 8  # every card read back at the end: no drift
    assert report.read_bytes().startswith(PNG_SIGNATURE) and report.stat().st_size > 5_000
    assert "baseline" not in figures


def test_baseline_leg_runs_the_same_workload_and_reports_the_ratio(tmp_path):
    code, output, figures = loadtest(
        tmp_path, "--duration", "2", "--processes", "2", "--baseline", "naive"
    )
    assert code == 0, output
    naive = figures["baseline"]
    check_figures(figures)
    check_figures(naive)
    assert naive["mismatches"] == naive["errors"] == 0
    assert set(naive["operations"]) == {"auth_complete"}
    assert naive["ratio"] == round(figures["rpc_per_s"] / naive["rpc_per_s"], 2)
    assert "switch / baseline" in output


def test_a_balance_changed_behind_the_models_back_fails_the_run_with_its_seed(tmp_path):
    # --tamper-fen: after provisioning, CardAdmin TopUp credits one card 1 fen the model never sees.
    code, output, figures = loadtest(
        tmp_path, "--duration", "1", "--seed", "777", "--tamper-fen", "1",
        "--mix", "auth_complete=50,inquiry=50",
    )  # fmt: skip
    assert code == 1, output
    assert figures["mismatches"] >= 1 and not figures["passed"]
    assert "seed 777" in output and "--seed 777" in output
    # Only the tampered card is wrong, and its figures are exactly the 1 fen above the model's.
    cards = {re.search(r"card …(\d{4})", problem).group(1) for problem in figures["problems"]}
    assert len(cards) == 1, figures["problems"]
    gaps = {int(got) - int(want) for got, want in re.findall(r"(\d+)/(\d+)", figures["problems"][0])}
    assert 1 in gaps and gaps <= {0, 1}, figures["problems"]


def test_bad_arguments_and_an_unreachable_target_exit_2(capsys):
    assert cli.main(["--spawn", "--mix", "auth_complete=1,warp=2"]) == 2
    assert cli.main(["--spawn", "--baseline", "naive", "--mix", "purchase=1"]) == 2
    assert cli.main(["--spawn", "--in-flight", "8", "--cards", "4"]) == 2
    assert cli.main(["--target", "127.0.0.1:50051"]) == 2  # no operator token
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert cli.main(["--target", f"127.0.0.1:{port}", "--operator-token", "t", "--duration", "1"]) == 2
    assert "setup failed" in capsys.readouterr().out


def test_a_seed_replays_the_same_operations():
    mix = parse_mix(MIX, HANDLERS)
    first, again = random.Random("5:3"), random.Random("5:3")
    assert [mix.pick(first) for _ in range(200)] == [mix.pick(again) for _ in range(200)]
