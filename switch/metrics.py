"""Prometheus exposition at `--metrics-listen HOST:PORT` (`GET /metrics`), off unless configured.

The request path only increments plain ints (switch/observe.py, switch/journal.py); `SwitchCollector`
turns them into metric families when Prometheus scrapes. prometheus-client serves HTTP from a thread
of its own, so a scrape never waits for the event loop, and the loop never waits for a scrape beyond
the GIL it shares. The metric list with meanings is in docs/operations.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from switch.app import App
from switch.health import HealthMonitor
from switch.histogram import Histogram
from switch.observe import RpcStats

log = logging.getLogger("fuelswitch.metrics")

COPY_ATTEMPTS = 3  # a dict copied from this thread while the loop adds a key may need another try


def _buckets(histogram: Histogram) -> tuple[list[tuple[str, float]], float, int]:
    """Cumulative (le, count) pairs, the sum in exported units, the count; from one snapshot."""
    counts, total = histogram.snapshot()
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(histogram.upper_bounds, counts, strict=False):
        running += count
        buckets.append((repr(float(bound)), float(running)))
    running += counts[-1]
    buckets.append(("+Inf", float(running)))
    return buckets, total / histogram.scale, running


def _copy(mapping: dict[Any, Any]) -> dict[Any, Any]:
    for _ in range(COPY_ATTEMPTS - 1):
        try:
            return dict(mapping)
        except RuntimeError:  # changed size during the copy
            continue
    return dict(mapping)


class SwitchCollector(Collector):
    def __init__(self, app: App, rpc: RpcStats, monitor: HealthMonitor, version: str) -> None:
        self.app = app
        self.rpc = rpc
        self.monitor = monitor
        self.version = version

    def collect(self) -> Iterator[Metric]:
        yield from self._process()
        yield from self._requests()
        yield from self._journal()
        yield from self._state()

    def _process(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("fuelswitch_build_info", "Always 1; the version of the running switch",
                                 labels=["version"])
        info.add_metric([self.version], 1)
        yield info
        yield GaugeMetricFamily("fuelswitch_uptime_seconds", "Seconds since this switch process started serving",
                                value=self.monitor.uptime_s)
        yield GaugeMetricFamily("fuelswitch_serving", "1 while the gRPC health status is SERVING, else 0",
                                value=int(self.monitor.serving))
        yield GaugeMetricFamily("fuelswitch_database_up", "1 if the last database probe (SELECT 1) answered, else 0",
                                value=int(self.monitor.database_up))
        yield GaugeMetricFamily("fuelswitch_recovering",
                                "1 while memory is rebuilt from PostgreSQL after a failed commit (POS answers 91)",
                                value=int(not self.app.available))
        yield CounterMetricFamily("fuelswitch_health_transitions", "Changes between SERVING and NOT_SERVING",
                                  value=self.monitor.transitions)

    def _requests(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("fuelswitch_requests", "RPCs answered, by service, method and response "
                                       "code (ISO 8583 code for POS answers, OK or the gRPC status name otherwise)",
                                       labels=["service", "method", "code"])
        for (service, method, code), count in sorted(_copy(self.rpc.requests).items()):
            requests.add_metric([service, method, code], count)
        yield requests
        latency = HistogramMetricFamily("fuelswitch_request_duration_seconds",
                                        "Time from the call reaching the handler to its answer, by method",
                                        labels=["service", "method"])
        for (service, method), histogram in sorted(_copy(self.rpc.latency).items()):
            buckets, total, _ = _buckets(histogram)
            latency.add_metric([service, method], buckets, total)
        yield latency
        offline = CounterMetricFamily("fuelswitch_offline_records", "Offline records of completed uploads, by result",
                                      labels=["result"])
        for result, count in _copy(self.rpc.offline).items():
            offline.add_metric([result], count)
        yield offline

    def _journal(self) -> Iterator[Metric]:
        writer = self.app.writer
        stats = writer.stats
        yield CounterMetricFamily("fuelswitch_journal_commits", "Journal transactions committed", value=stats.commits)
        yield CounterMetricFamily("fuelswitch_journal_commit_failures",
                                  "Journal commits that failed or timed out (each fails its batch with 91)",
                                  value=stats.failures)
        yield CounterMetricFamily("fuelswitch_journal_entries", "Core journal entries committed", value=stats.entries)
        yield GaugeMetricFamily("fuelswitch_journal_queue_depth", "Decisions waiting for the next commit",
                                value=writer.queue_depth)
        buckets, total, _ = _buckets(stats.batch_histogram)
        yield HistogramMetricFamily("fuelswitch_journal_batch_submissions", "Submissions (requests) per commit",
                                    buckets=buckets, sum_value=total)
        buckets, total, _ = _buckets(stats.commit_histogram)
        yield HistogramMetricFamily("fuelswitch_journal_commit_duration_seconds",
                                    "Time of one journal transaction, from the first statement to COMMIT",
                                    buckets=buckets, sum_value=total)

    def _state(self) -> Iterator[Metric]:
        app = self.app
        core = app.state.ledger.stats()  # walks the holds with the GIL released, shard by shard
        yield GaugeMetricFamily("fuelswitch_open_holds", "Pending holds (pre-authorizations not yet completed, "
                                "cancelled or expired)", value=core["holds_pending"])
        yield GaugeMetricFamily("fuelswitch_accounts", "Accounts in memory (including card counter accounts)",
                                value=core["accounts"])
        yield GaugeMetricFamily("fuelswitch_terminal_sessions", "Terminal sessions in memory",
                                value=len(app.sessions))
        keys = GaugeMetricFamily("fuelswitch_data_key_version", "Current data-key version, by purpose",
                                 labels=["purpose"])
        for purpose, version in sorted(app.keyring.versions().items()):
            keys.add_metric([purpose], version)
        yield keys


class MetricsServer:
    """`GET /metrics` on HOST:PORT (port 0: any free port, see `.port`), from a thread of its own."""

    def __init__(self, listen: str, collector: Collector) -> None:
        host, _, port = listen.rpartition(":")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds
        self._server, self._thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        self.host = host
        self.port: int = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
