"""The run's benchmark figures, collected for the comparison table printed at the end (see conftest)."""

from __future__ import annotations

RESULTS: dict[str, dict[str, float]] = {}
BASELINES: dict[str, str] = {}
NOTES: list[str] = []


def record(group: str, name: str, per_s: float, *, baseline: bool = False) -> None:
    RESULTS.setdefault(group, {})[name] = per_s
    if baseline:
        BASELINES[group] = name


def note(line: str) -> None:
    NOTES.append(line)
