"""What `fuelswitch loadtest` shows: a live line per leg while it runs, a summary table at the end.

On a terminal the live figures are a rich panel redrawn about once a second; when stdout is not a
TTY (CI logs, pipes) they are plain lines, one per second.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from loadtest.workload import LoadResult, Progress

RENDER_EVERY_S = 0.9  # client processes report separately: draw at most about once a second


class LiveFigures:
    """Receives `Progress` snapshots (workload's `progress=`) and shows RPC/s, p99, problems."""

    def __init__(self, console: Console, label: str, duration_s: float) -> None:
        self.console = console
        self.label = label
        self.duration_s = duration_s
        self._live: Live | None = None
        self._last_elapsed_s = 0.0
        self._last_rpcs = 0
        self._rendered_at = 0.0

    def __enter__(self) -> LiveFigures:
        if self.console.is_terminal:
            self._live = Live(
                Text(f"{self.label}: signing on…"),
                console=self.console,
                refresh_per_second=2,
                transient=False,
            )
            self._live.__enter__()
        else:
            self.console.print(f"{self.label}: signing on…", highlight=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._rendered_at < RENDER_EVERY_S:
            return
        # The snapshot's own clock starts at the start signal: sign-on time is not in the rate.
        rate = (progress.rpcs - self._last_rpcs) / max(progress.elapsed_s - self._last_elapsed_s, 1e-9)
        self._last_elapsed_s, self._last_rpcs = progress.elapsed_s, progress.rpcs
        self._rendered_at = now
        p99_ms = progress.histogram.get_value_at_percentile(99.0) / 1000
        line = (
            f"{self.label}: {min(progress.elapsed_s, self.duration_s):.1f}/{self.duration_s:g} s"
            f"  {rate:,.0f} RPC/s  p99 {p99_ms:.2f} ms  {progress.rpcs:,} RPCs"
            f"  errors {progress.errors}  mismatches {progress.mismatches}"
        )
        if self._live is not None:
            style = "bold red" if progress.errors or progress.mismatches else ""
            self._live.update(Text(line, style=style, overflow="fold"))
        else:
            self.console.print(line, highlight=False)


def summary_table(legs: dict[str, LoadResult], ratio: float | None) -> Table:
    """Figures side by side: one column per leg (switch, baseline)."""
    table = Table(title="fuelswitch loadtest", title_justify="left")
    table.add_column("")
    for name in legs:
        table.add_column(name, justify="right")
    results = list(legs.values())

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("RPC/s", [f"{r.rpc_per_s:,.0f}" for r in results])
    row("pairs/s", [f"{r.pairs_per_s:,.0f}" for r in results])
    for name in ("p50", "p99", "p999", "max"):
        row(f"latency {name} ms", [f"{r.latency_ms[name]:.2f}" for r in results])
    row("RPCs", [f"{r.rpcs:,}" for r in results])
    row("duration s", [f"{r.duration_s:.1f}" for r in results])
    names = sorted({name for r in results for name in r.operations})
    for name in names:
        row(
            f"  {name}",
            [
                f"{r.operations[name]['count']:,} ({r.operations[name]['declined']:,} declined)"
                if name in r.operations
                else "—"
                for r in results
            ],
        )
    row("cards audited", [f"{r.audited:,}" for r in results])
    row("errors", [_flag(r.errors) for r in results])
    row("mismatches", [_flag(r.mismatches) for r in results])
    if ratio is not None:
        row("switch / baseline", [f"{ratio:.2f}×", ""])
    return table


def _flag(count: int) -> str:
    return f"[bold red]{count}[/]" if count else "0"
