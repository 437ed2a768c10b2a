"""Quality checks as tests (asyncpg's tests/test__sourcecode.py): ruff and mypy stay clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff():
    result = run("ruff", "check", "core", "switch", "ext", "loadtest", "tests", "setup.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy():
    result = run("mypy", "core", "switch", "ext", "loadtest")
    assert result.returncode == 0, result.stdout + result.stderr
