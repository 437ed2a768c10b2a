"""Bounded coverage-guided fuzz runs (atheris) of the parsers of outside bytes: tests/fuzz/parser_targets.py.

Each target runs in its own process (libFuzzer ends the process when it is done) from seeds made
of valid fixtures, for FUELSWITCH_FUZZ_RUNS inputs (default 5,000) with a fixed libFuzzer seed.
An exception other than the documented ones (PinBlockError; ChannelError and its subclasses) stops
the run: the failure shows the traceback and the crash file holding the input, which
`parser_targets.py TARGET crash-file` replays.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("parser_targets.py")
RUNS = int(os.environ.get("FUELSWITCH_FUZZ_RUNS", "5000"))
TARGETS = ("pinblock", "wechat_v2", "wechat_v3", "alipay", "unionpay", "ecny", "wechat_bill", "alipay_statement",
           "unionpay_zm", "ecny_statement")
RUN_TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                reason="atheris is not installed (make install: it is in the test extras)")


def _harness(*args: str, timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HARNESS), *args], capture_output=True, text=True, timeout=timeout_s,
                          check=False)


def test_every_target_is_run():
    listed = _harness("--list", timeout_s=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert tuple(listed.stdout.split()) == TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_parser_survives_fuzzing(target, tmp_path):
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    artifacts.mkdir()
    seeded = _harness("--seeds", target, str(corpus), timeout_s=120)
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    run = _harness(target, f"-runs={RUNS}", "-seed=1", f"-artifact_prefix={artifacts}/", "-timeout=30",
                   "-rss_limit_mb=2048", "-print_final_stats=1", str(corpus))
    output = run.stdout + run.stderr
    failure = output[output.find("=== Uncaught Python exception"):] if "Uncaught" in output else output[-3000:]
    assert run.returncode == 0, f"{target}: {failure[:4000]}\ncrash files: {sorted(p.name for p in artifacts.iterdir())}"
    done = re.search(r"Done (\d+) runs in (\d+) second", output)
    edges = re.search(r"cov: (\d+)", output[output.rfind("DONE"):] if "DONE" in output else output)
    assert done is not None and int(done.group(1)) >= RUNS, output[-2000:]
    print(f"\n{target}: {done.group(1)} inputs in {done.group(2)} s, {seeded.stdout.strip()} seeds, "
          f"{edges.group(1) if edges else '?'} coverage edges, corpus grew to {len(list(corpus.iterdir()))}")
