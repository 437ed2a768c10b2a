"""Structured logs: one JSON object per line with the request's fields, a masked PAN only, and a
request id per RPC that the client may choose (x-request-id) and always gets back in the trailers."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, admin_pb2_grpc, pos_pb2

from loadtest.terminal import method_path
from switch import sm3
from switch.cardnumbers import mask_pan
from switch.logs import JsonFormatter, TextFormatter, configure_logging
from switch.observe import MD_REQUEST_ID, Instrumented, RequestIds, RpcStats
from tests.switch.conftest import OPERATOR_TOKEN

GENERATED_ID = re.compile(r"^[0-9a-f]{12}-[0-9a-f]+$")
REQUEST_FIELDS = {"ts", "level", "logger", "message", "request_id", "service", "method", "terminal_id", "stan",
                  "response_code", "latency_ms", "masked_pan"}


def _identity(data: bytes) -> bytes:
    return data


@pytest.fixture
def switch_config(switch_config):
    """This module's switches log every call (the default logs only answers other than 00/10/OK)."""
    return dataclasses.replace(switch_config, request_log="all")


@pytest.fixture
def json_log():
    """Everything logged under `fuelswitch`, INFO and up, as JSON lines in a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fuelswitch")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _authorize_raw(channel, terminal, pan: str, pin: str, amount: int, metadata=(), mac_hex=None):
    """Authorize with extra metadata; returns (response, trailing metadata as a dict)."""
    stan, body = terminal.prepare(pos_pb2.AuthorizeRequest(pan=pan, pin_block=terminal.pin_block(pin, pan),
                                                           amount=amount, product_code="92", pump=1))
    mac = mac_hex or sm3.mac_hex(terminal.session.mac_key, body)
    call = channel.unary_unary(method_path("Authorize"), request_serializer=_identity,
                               response_deserializer=_identity)(body, metadata=(*terminal.session_metadata(mac),
                                                                                *metadata))
    try:
        raw = await call
    except grpc.aio.AioRpcError as exc:
        return exc, dict(exc.trailing_metadata() or ()), stan
    return pos_pb2.AuthorizeResponse.FromString(raw), dict(await call.trailing_metadata()), stan


async def test_a_request_line_carries_the_request_fields_and_never_the_pan(switch, channel, network, terminal,
                                                                          json_log):
    card = network.cards[0]
    approved, trailers, stan = await _authorize_raw(channel, terminal, card.pan, card.pin, 2_000)
    assert approved.response_code == "00"
    generated = trailers[MD_REQUEST_ID]
    assert GENERATED_ID.match(generated)
    declined, chosen, _ = await _authorize_raw(channel, terminal, card.pan, "999999", 1_000,
                                               metadata=((MD_REQUEST_ID, "pos-7/abc"),))
    assert declined.response_code == "55" and chosen[MD_REQUEST_ID] == "pos-7/abc"
    refused, refused_trailers, _ = await _authorize_raw(channel, terminal, card.pan, card.pin, 1_000,
                                                        metadata=((MD_REQUEST_ID, "pos-8"),), mac_hex="00" * 32)
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED and refused_trailers[MD_REQUEST_ID] == "pos-8"
    operator = admin_pb2_grpc.CardAdminStub(channel)
    call = operator.GetCard(admin_pb2.GetCardRequest(card_id=card.card_id),
                            metadata=(("authorization", f"Bearer {OPERATOR_TOKEN}"),))
    await call
    assert GENERATED_ID.match(dict(await call.trailing_metadata())[MD_REQUEST_ID])

    text = json_log.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    by_id = {line.get("request_id"): line for line in lines if line["logger"] == "fuelswitch.request"}
    line = by_id[generated]
    assert REQUEST_FIELDS <= set(line)
    assert line["level"] == "INFO" and line["message"] == "Authorize 00"
    assert (line["service"], line["method"], line["terminal_id"], line["stan"], line["response_code"]) == (
        "PosGateway", "Authorize", terminal.terminal_id, stan, "00")
    assert line["masked_pan"] == mask_pan(card.pan) and "*" in line["masked_pan"]
    assert 0 < line["latency_ms"] < 10_000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert by_id["pos-7/abc"]["response_code"] == "55"
    assert by_id["pos-8"]["response_code"] == "UNAUTHENTICATED"
    assert any(line.get("method") == "GetCard" and line["response_code"] == "OK" for line in lines)
    digit_runs = set(re.findall(r"[0-9]+", text))
    assert card.pan not in text and card.pin not in digit_runs and "999999" not in digit_runs  # nor the wrong PIN


async def test_by_default_only_problems_are_logged(json_log):
    answers = iter([b"\n\x0200", b"\n\x0251", b"\n\x0210"])

    async def handler(request, context):
        return next(answers)

    generic = grpc.method_handlers_generic_handler("fuelswitch.v1.PosGateway", {
        "Cancel": grpc.unary_unary_rpc_method_handler(handler)})

    class Details:
        method = "/fuelswitch.v1.PosGateway/Cancel"

    class Context:
        trailing = ()

        def invocation_metadata(self):
            return (("fs-terminal-id", "T1"),)

        def set_trailing_metadata(self, md):
            self.trailing = tuple(md)

        def trailing_metadata(self):
            return self.trailing

    stats = RpcStats()
    observed = Instrumented(generic, stats, RequestIds()).service(Details()).unary_unary
    for _ in range(3):
        await observed(b"", Context())
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert [(line["response_code"], line["terminal_id"]) for line in lines] == [("51", "T1")]
    assert {code: n for (_, _, code), n in stats.requests.items()} == {"00": 1, "51": 1, "10": 1}


def test_text_lines_append_the_fields():
    record = logging.LogRecord("fuelswitch.request", logging.INFO, __file__, 1, "%s %s", ("Authorize", "00"), None)
    record.fs = {"request_id": "r-1", "stan": 12, "masked_pan": "900001*********1234", "terminal_id": ""}
    text = TextFormatter().format(record)
    assert text.endswith("INFO fuelswitch.request: Authorize 00 request_id=r-1 stan=12 masked_pan=900001*********1234")


def test_configure_logging_refuses_an_unknown_format():
    with pytest.raises(ValueError):
        configure_logging("INFO", "xml")


async def test_serve_with_json_logs_writes_one_object_per_line(fresh_db, tmp_path):
    """The real command line: every line the switch logs on stderr is JSON (gRPC's own C-core lines
    aside, which do not start with '{')."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(Path.cwd() / "proto")])}
    serve = [sys.executable, "-m", "switch.cli", "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
             "--operator-token", OPERATOR_TOKEN, "--dsn", fresh_db, "--log-format", "json", "--request-log", "all"]
    proc = await asyncio.create_subprocess_exec(*serve, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert ready.startswith(b"fuelswitch listening on"), ready
        target = ready.decode().rsplit(" ", 1)[-1].strip()
        async with grpc.aio.insecure_channel(target) as channel:
            operator = admin_pb2_grpc.CardAdminStub(channel)
            await operator.CreateAccount(admin_pb2.CreateAccountRequest(kind="personal", holder_name="日志"),
                                         metadata=(("authorization", f"Bearer {OPERATOR_TOKEN}"),))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert any(line["logger"] == "fuelswitch.server" and "serving" in line["message"] for line in lines)
    created = [line for line in lines if line.get("method") == "CreateAccount"]
    assert len(created) == 1 and created[0]["response_code"] == "OK" and created[0]["level"] == "INFO"
