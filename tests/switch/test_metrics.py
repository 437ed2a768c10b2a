"""Prometheus metrics: /metrics on --metrics-listen reports requests by code, latencies, the journal,
open holds, sessions, offline records and the database, from a thread that never waits for the loop."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import urllib.request

import grpc
import pytest
from fuelswitch.v1 import pos_pb2
from prometheus_client.parser import text_string_to_metric_families

from loadtest.provision import provision
from loadtest.terminal import Terminal
from switch.histogram import Histogram, latency_histogram
from switch.observe import client_request_id, response_code
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one scrape, keyed by (sample name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _sale(pan: str, stan: int, amount: int, now_ms: int) -> pos_pb2.OfflineTransaction:
    record = pos_pb2.OfflineTransaction(pan=pan, amount=amount, volume_ml=amount * 1000 // 738, product_code="92",
                                        unit_price=738, transaction_time_ms=now_ms - 60_000, pump=1)
    record.header.stan = stan
    return record


@pytest.fixture
async def metered(switch_config):
    running = await start_switch(dataclasses.replace(switch_config, metrics_listen="127.0.0.1:0"))
    yield running
    await assert_memory_equals_database(running)
    await running.stop(0.5)


async def test_metrics_count_requests_by_code_and_report_the_switch(metered):
    assert metered.metrics is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
        network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=4, balance_fen=100_000)
        spec = network.terminals[0]
        terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex,
                            require_response_mac=True)
        await terminal.sign_on()
        cards = network.cards
        assert (await terminal.authorize(cards[0].pan, cards[0].pin, 20_000, "92")).response.response_code == "00"
        held = (await terminal.authorize(cards[1].pan, cards[1].pin, 10_000, "92")).response
        assert (await terminal.complete(held.hold_id, 9_000, 12_195, "92", 738)).response.response_code == "00"
        assert (await terminal.authorize(cards[2].pan, cards[2].pin, 500_000, "92")).response.response_code == "51"
        assert (await terminal.authorize(cards[3].pan, "000000", 1_000, "92")).response.response_code == "55"
        sale = _sale(cards[3].pan, 70_001, 1_500, terminal.now_ms())
        uploaded = await terminal.upload_offline([sale, sale])
        assert (uploaded.applied, uploaded.duplicate, uploaded.rejected) == (1, 1, 0)
        with pytest.raises(grpc.aio.AioRpcError):  # a wrong MAC: refused before any decision
            _, body = terminal.prepare(pos_pb2.BalanceInquiryRequest(pan=cards[0].pan))
            await terminal.send_bytes("BalanceInquiry", body, mac_hex="00" * 32)
    await metered.app.writer.flush()

    samples = await asyncio.to_thread(scrape, metered.metrics.port)
    requests = "fuelswitch_requests_total"
    assert value(samples, requests, service="PosGateway", method="SignOn", code="00") == 1
    assert value(samples, requests, service="PosGateway", method="Authorize", code="00") == 2
    assert value(samples, requests, service="PosGateway", method="Authorize", code="51") == 1
    assert value(samples, requests, service="PosGateway", method="Authorize", code="55") == 1
    assert value(samples, requests, service="PosGateway", method="Complete", code="00") == 1
    assert value(samples, requests, service="PosGateway", method="UploadOffline", code="00") == 1
    assert value(samples, requests, service="PosGateway", method="BalanceInquiry", code="UNAUTHENTICATED") == 1
    assert value(samples, requests, service="CardAdmin", method="IssueCard", code="OK") == 4
    assert value(samples, "fuelswitch_request_duration_seconds_count", service="PosGateway", method="Authorize") == 4
    assert value(samples, "fuelswitch_request_duration_seconds_bucket", service="PosGateway", method="Authorize",
                 le="+Inf") == 4
    assert value(samples, "fuelswitch_request_duration_seconds_sum", service="PosGateway", method="Authorize") > 0
    assert value(samples, "fuelswitch_offline_records_total", result="applied") == 1
    assert value(samples, "fuelswitch_offline_records_total", result="duplicate") == 1
    assert value(samples, "fuelswitch_offline_records_total", result="rejected") == 0
    assert value(samples, "fuelswitch_open_holds") == 1  # cards[0]'s pre-authorization
    assert value(samples, "fuelswitch_terminal_sessions") == 1
    assert value(samples, "fuelswitch_database_up") == 1
    assert value(samples, "fuelswitch_serving") == 1
    assert value(samples, "fuelswitch_recovering") == 0
    assert value(samples, "fuelswitch_journal_queue_depth") == 0
    commits = value(samples, "fuelswitch_journal_commits_total")
    assert commits == metered.app.writer.stats.commits > 0
    assert value(samples, "fuelswitch_journal_commit_failures_total") == 0
    assert value(samples, "fuelswitch_journal_batch_submissions_count") == commits
    assert value(samples, "fuelswitch_journal_commit_duration_seconds_count") == commits
    assert value(samples, "fuelswitch_journal_commit_duration_seconds_sum") > 0
    assert {value(samples, "fuelswitch_data_key_version", purpose=p) for p in ("pan", "pvk", "journal")} == {1}
    assert value(samples, "fuelswitch_build_info", version="0.1.0") == 1
    assert value(samples, "process_resident_memory_bytes") > 10_000_000


async def test_a_scrape_does_not_wait_for_the_event_loop(metered):
    done: dict[str, float] = {}

    def scrape_now() -> None:
        scrape(metered.metrics.port)
        done["at"] = time.monotonic()

    thread = threading.Thread(target=scrape_now)
    thread.start()
    time.sleep(1.0)  # deliberately blocks this (the switch's) event loop
    loop_free_at = time.monotonic()
    thread.join(10)
    assert done["at"] < loop_free_at


async def test_metrics_are_off_unless_configured(switch):
    assert switch.metrics is None


def test_histogram_buckets_are_upper_bounds_inclusive():
    histogram = Histogram((1.0, 2.0, 4.0))
    for observed in (0, 1, 2, 3, 4, 5, 100):
        histogram.observe(observed)
    assert histogram.snapshot() == ([2, 1, 2, 2], 115)
    latency = latency_histogram()
    latency.observe(500_000)  # 0.5 ms, in ns: the first bucket (le 0.0005 s)
    assert latency.snapshot()[0][0] == 1


def test_response_codes_and_request_ids():
    assert response_code(pos_pb2.AuthorizeResponse(response_code="51", message="x").SerializeToString()) == "51"
    assert response_code(pos_pb2.SignOnResponse(response_code="00").SerializeToString()) == "00"
    assert response_code(object()) == "OK"
    assert client_request_id("req-42/abc") == "req-42/abc"
    assert client_request_id("has space") is None
    assert client_request_id("x" * 65) is None
    assert client_request_id("line\nbreak") is None
    assert client_request_id("") is None


def test_operations_settings_are_validated_and_read_from_the_environment():
    from switch.config import ServeConfig, load_config

    base = {"operator_token": "t"}
    for bad in ({"metrics_listen": "9464"}, {"log_format": "xml"}, {"request_log": "some"},
                {"db_probe_interval_s": 0.0}):
        with pytest.raises(ValueError):
            ServeConfig(**base, **bad).validate()
    config = load_config({}, {"FUELSWITCH_OPERATOR_TOKEN": "t", "FUELSWITCH_METRICS_LISTEN": "0.0.0.0:9464",
                              "FUELSWITCH_LOG_FORMAT": "json", "FUELSWITCH_REQUEST_LOG": "all",
                              "FUELSWITCH_DB_PROBE_INTERVAL_S": "0.5"})
    assert (config.metrics_listen, config.log_format, config.request_log, config.db_probe_interval_s) == (
        "0.0.0.0:9464", "json", "all", 0.5)
    assert (ServeConfig().metrics_listen, ServeConfig().log_format, ServeConfig().request_log) == (
        "", "text", "problems")
