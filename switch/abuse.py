"""Overload and abuse controls: per-terminal rate limits and suspension after repeated MAC failures.

Both are kept in memory: after a restart every terminal starts with a full bucket and a clean
count, which errs on the side of serving. A suspension itself is persisted (the terminal's state).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class AbuseConfig:
    # A pump needs a few requests a minute; a forecourt controller multiplexing many pumps over one
    # terminal id needs more. The default lets no single terminal take more than a fraction of the host.
    requests_per_s: float = 500.0
    burst: int = 1_000  # requests a terminal may send at once after being idle
    mac_failures_max: int = 5  # this many failed MACs within the window suspend the terminal
    mac_failure_window_ms: int = 10 * 60 * 1000


class TokenBuckets:
    """One token bucket per key, refilled continuously at `rate_per_ms` up to `burst`."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate_per_ms = rate_per_s / 1000
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, int]] = {}  # key -> (tokens, at ms)

    def take(self, key: str, now_ms: int) -> bool:
        tokens, at = self._buckets.get(key, (self._burst, now_ms))
        tokens = min(self._burst, tokens + max(0, now_ms - at) * self._rate_per_ms)
        if tokens < 1:
            self._buckets[key] = (tokens, now_ms)
            return False
        self._buckets[key] = (tokens - 1, now_ms)
        return True


class FailureCounter:
    """Failures per key within a sliding window; `record` says when the limit is reached."""

    def __init__(self, limit: int, window_ms: int) -> None:
        self._limit = limit
        self._window_ms = window_ms
        self._times: dict[str, deque[int]] = {}

    def record(self, key: str, now_ms: int) -> bool:
        times = self._times.setdefault(key, deque())
        times.append(now_ms)
        while times and times[0] <= now_ms - self._window_ms:
            times.popleft()
        return len(times) >= self._limit

    def clear(self, key: str) -> None:
        self._times.pop(key, None)
