"""Every PosGateway, CardAdmin and Clearing RPC, fed random and mutated messages and metadata (hypothesis).

An in-process switch on a fresh database. Requests start as valid serialized messages (built for
each example, with a fresh STAN and a correct MAC, so that mutations reach the parser and the
business logic and not only the MAC check) and are then mutated: bit flips, truncation, duplicated
byte ranges (a field repeated: protobuf keeps the last or appends), inserted or spliced random
bytes, a field set to an extreme or odd value (huge, negative, Unicode digits, NUL, 100 KiB), a
huge unknown field, or replaced by random bytes. Metadata is valid, missing an entry, random or
huge, or carries extra keys. Every method of the three services is enumerated from the protos, so
methods added later are fuzzed too.

What must hold, per call: the status is OK or a documented refusal — never INTERNAL or UNKNOWN (an
unexpected exception in the switch), never a message carrying a traceback, never a 91/96/
UNAVAILABLE (a database commit that failed on fuzzed input would fail everybody's batch), and the
journal writer records no failed commit. After the run: the POS phase moved no money (the network
is built so that no mutation can make a legitimate approval: the fuzzing terminals' card has no
money, the funded card's PIN is unknown to them, the holds and sales that exist belong to another
station), every transaction the operator phase created was acknowledged to the fuzzer, memory
equals PostgreSQL, and `verify` (hash chain + balances against the journal) is clean.

FUELSWITCH_FUZZ_EXAMPLES scales the number of examples per phase (default 700).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import Any

import grpc
import pytest
import uvloop
from fuelswitch.v1 import admin_pb2, clearing_pb2, common_pb2, pos_pb2
from google.protobuf import descriptor as D
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtest.provision import provision
from loadtest.terminal import Terminal, offline_record_bytes
from switch import sm2, sm3
from switch.config import ServeConfig
from switch.protocol import MD_AUTHORIZATION, MD_MAC, MD_SESSION_ID, MD_TERMINAL_ID
from switch.server import start_switch
from switch.verify import verify
from tests.switch.conftest import assert_memory_equals_database

EXAMPLES = int(os.environ.get("FUELSWITCH_FUZZ_EXAMPLES", "700"))
TOKEN = "fuzz-operator-token"
CALL_TIMEOUT_S = 10.0
FUZZ_STATION, OTHER_STATION = "FZ-S1", "FZ-S2"
SECRET_PIN = "864209"  # the funded card's PIN: the fuzzing terminals never know it
WRONG_PIN = "000000"
UNKNOWN_PAN = "9000019999999999996"  # Luhn-valid, far from every issued card number
# Refusals a fuzzed call may get; anything else (INTERNAL, UNKNOWN, ...) is a finding.
REFUSALS = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
}
FAILED_CODES = {"91", "96"}  # a POS answer meaning the host failed, not the request
ODD_STRINGS = ["", "0", "-1", "²", "١٢", "１２", "9" * 40, " 1", "1e3", "\x00", "a\x00b", "\ud7ff", "😀" * 50,
               "x" * 100_000, "'; DROP TABLE accounts; --", "../../etc/passwd", "%s%n", "NaN"]
ODD_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, -(2**63), 10_000_001, -10_000_000]
SERVICES = [
    ("fuelswitch.v1.PosGateway", pos_pb2),
    ("fuelswitch.v1.CardAdmin", admin_pb2),
    ("fuelswitch.v1.Clearing", clearing_pb2),
]


# ------------------------------------------------------------------------------ mutations


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, seed: Message) -> bytes:
    """The seed message's bytes, mutated one of several ways (or left valid)."""
    op = draw(st.sampled_from(["valid", "flip", "truncate", "duplicate", "insert", "splice", "field", "field",
                               "unknown", "random"]))
    data = bytearray(seed.SerializeToString())
    if op == "flip" and data:
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif op == "duplicate" and data:
        start = draw(st.integers(0, len(data) - 1))
        end = draw(st.integers(start, len(data)))
        data = data + data[start:end] if draw(st.booleans()) else data[:end] + data[start:end] + data[end:]
    elif op == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=24))
    elif op == "splice" and data:
        start = draw(st.integers(0, len(data) - 1))
        data[start:start + draw(st.integers(1, 16))] = draw(st.binary(max_size=16))
    elif op == "field":
        message = type(seed)()
        message.CopyFrom(seed)
        _set_odd_field(draw, message)
        data = bytearray(message.SerializeToString())
    elif op == "unknown":
        number = draw(st.integers(1, 2**29 - 1))
        if draw(st.booleans()):
            data += _varint(number << 3) + _varint(draw(st.sampled_from(ODD_INTS)))
        else:
            size = draw(st.sampled_from([0, 1, 1000, 200_000]))
            data += _varint(number << 3 | 2) + _varint(size) + b"\xff" * size
    elif op == "random":
        data = bytearray(draw(st.binary(max_size=200)))
    return bytes(data)


def _set_odd_field(draw: st.DrawFn, message: Message, depth: int = 0) -> None:
    fields = list(message.DESCRIPTOR.fields)
    if not fields:
        return
    field = draw(st.sampled_from(fields))
    if field.type == D.FieldDescriptor.TYPE_MESSAGE:
        if field.is_repeated:
            child = getattr(message, field.name).add()
        else:
            child = getattr(message, field.name)
        if depth < 2:
            _set_odd_field(draw, child, depth + 1)
        return
    value = _odd_value(draw, field)
    try:
        if field.is_repeated:
            getattr(message, field.name).extend([value] * draw(st.integers(1, 3)))
        else:
            setattr(message, field.name, value)
    except (ValueError, TypeError):  # out of the field's range: protobuf refuses it on this side
        pass


def _odd_value(draw: st.DrawFn, field: D.FieldDescriptor) -> Any:
    t = field.type
    if t == D.FieldDescriptor.TYPE_STRING:
        return draw(st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=40)))
    if t == D.FieldDescriptor.TYPE_BYTES:
        return draw(st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\x00" * 16, b"\xff" * 100_000])))
    if t == D.FieldDescriptor.TYPE_BOOL:
        return draw(st.booleans())
    if t in (D.FieldDescriptor.TYPE_DOUBLE, D.FieldDescriptor.TYPE_FLOAT):
        return draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 91.0]))
    if t == D.FieldDescriptor.TYPE_ENUM:
        return draw(st.integers(-5, 50))
    return draw(st.one_of(st.sampled_from(ODD_INTS), st.integers(-(2**63), 2**64 - 1)))


@st.composite
def metadata_for(draw: st.DrawFn, valid: list[tuple[str, str]]) -> list[tuple[str, str | bytes]]:
    """Valid metadata, or one entry missing/replaced, random values, huge values, extra keys."""
    mode = draw(st.sampled_from(["valid", "valid", "valid", "drop", "replace", "random", "huge", "extra"]))
    md: list[tuple[str, str | bytes]] = list(valid)
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
    if mode == "drop" and md:
        del md[draw(st.integers(0, len(md) - 1))]
    elif mode == "replace" and md:
        at = draw(st.integers(0, len(md) - 1))
        md[at] = (md[at][0], draw(printable))
    elif mode == "random":
        md = [(key, draw(printable)) for key, _ in md]
    elif mode == "huge" and md:
        at = draw(st.integers(0, len(md) - 1))
        md[at] = (md[at][0], "A" * draw(st.sampled_from([4_000, 7_000, 20_000])))
    elif mode == "extra":
        key = draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20))
        if key.endswith("-bin"):
            md.append((key, draw(st.binary(max_size=64))))
        elif not key.startswith("grpc-"):
            md.append((key, draw(printable)))
    return md


# ------------------------------------------------------------------------------ the rig


class Rig:
    """The switch, a network built for fuzzing, and the bookkeeping of one run."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.findings: list[str] = []
        self.calls = 0
        self.acknowledged_ids: set[int] = set()

    async def start(self, config: ServeConfig) -> None:
        self.running = await start_switch(config)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.running.port}", options=[
            ("grpc.max_send_message_length", 4 << 20), ("grpc.max_receive_message_length", 4 << 20)])
        fuzz = await provision(self.channel, TOKEN, terminals=3, cards=1, balance_fen=0, station_id=FUZZ_STATION)
        other = await provision(self.channel, TOKEN, terminals=1, cards=1, balance_fen=100_000,
                                station_id=OTHER_STATION, pin=SECRET_PIN)
        self.poor, self.rich = fuzz.cards[0], other.cards[0]
        self.terminals = []
        for spec in fuzz.terminals:
            t = Terminal(self.channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex)
            await t.sign_on()
            self.terminals.append(t)
        self.signon_spec = fuzz.terminals[2]
        helper_spec = other.terminals[0]
        helper = Terminal(self.channel, helper_spec.terminal_id, helper_spec.private_key_hex, helper_spec.public_key_hex)
        await helper.sign_on()
        # A hold and a sale at the other station: what Complete, Cancel and Refund seeds point at.
        self.other_hold = (await helper.authorize(self.rich.pan, SECRET_PIN, 10_000)).response.hold_id
        self.other_sale = (await helper.purchase(self.rich.pan, SECRET_PIN, 5_000, "92", 6_000)).response.transaction_id
        assert self.other_hold and self.other_sale
        self.first_txn_id = await self._max_txn_id() + 1
        self.totals_before = await self._totals()

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(0.5)

    async def _max_txn_id(self) -> int:
        async with self.running.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT coalesce(max(transaction_id), 0) FROM transactions"))

    async def _totals(self) -> tuple[int, int]:
        await self.running.app.writer.flush()
        async with self.running.pool.acquire() as conn:
            balance = await conn.fetchval("SELECT coalesce(sum(balance), 0)::bigint FROM accounts")
            held = await conn.fetchval(
                "SELECT coalesce(sum(a), 0)::bigint FROM holds, unnest(amounts) AS a WHERE state = 1")
        return int(balance), int(held)

    # -- POS seeds ---------------------------------------------------------------------

    def pos_seed(self, draw: st.DrawFn, method: str, terminal: Terminal) -> Message:
        header = common_pb2.TerminalHeader(terminal_id=terminal.terminal_id, stan=terminal.next_stan(),
                                        terminal_time_ms=terminal.now_ms())
        card, pin = draw(st.sampled_from([(self.poor, self.poor.pin), (self.rich, WRONG_PIN)]))
        pin_block = terminal.pin_block(pin, card.pan)
        hold = draw(st.sampled_from([self.other_hold, "1", "999999999"]))
        if method == "Authorize":
            return pos_pb2.AuthorizeRequest(header=header, pan=card.pan, pin_block=pin_block, amount=5_000,
                                            product_code="92", pump=1, partial_allowed=draw(st.booleans()),
                                            preset_volume_ml=draw(st.sampled_from([0, 20_000])))
        if method == "Complete":
            return pos_pb2.CompleteRequest(header=header, hold_id=hold, amount=3_000, volume_ml=4_000,
                                           product_code="92", unit_price=738)
        if method == "Cancel":
            return pos_pb2.CancelRequest(header=header, hold_id=hold)
        if method == "Reverse":
            return pos_pb2.ReverseRequest(header=header, original_stan=max(1, header.stan - draw(st.integers(0, 40))))
        if method == "Purchase":
            return pos_pb2.PurchaseRequest(header=header, pan=card.pan, pin_block=pin_block, amount=2_000,
                                           product_code="92", volume_ml=2_700)
        if method == "Refund":
            return pos_pb2.RefundRequest(header=header, original_transaction_id=self.other_sale, amount=1_000)
        if method == "BalanceInquiry":
            return pos_pb2.BalanceInquiryRequest(header=header, pan=card.pan, pin_block=pin_block)
        if method == "SyncHotlist":
            return pos_pb2.SyncHotlistRequest(header=header, since_version=draw(st.sampled_from([0, 1, 2**62])))
        if method in ("UploadOffline", "UploadOfflineBatch"):
            return self.offline_record(header, terminal)
        raise AssertionError(f"no POS seed for {method}: add one")

    def offline_record(self, header: common_pb2.TerminalHeader, terminal: Terminal) -> pos_pb2.OfflineTransaction:
        return pos_pb2.OfflineTransaction(header=header, pan=UNKNOWN_PAN, amount=2_000, volume_ml=2_700,
                                          product_code="92", unit_price=738,
                                          transaction_time_ms=terminal.now_ms() - 60_000, pump=2)

    def signon_seed(self) -> pos_pb2.SignOnRequest:
        spec = self.signon_spec
        nonce = os.urandom(16)
        now = self.terminals[2].now_ms()
        message = f"{spec.terminal_id}|{nonce.hex()}|{now}".encode()
        return pos_pb2.SignOnRequest(terminal_id=spec.terminal_id, nonce=nonce, terminal_time_ms=now,
                                     signature=sm2.sign(spec.private_key_hex, message))

    # -- calls --------------------------------------------------------------------------

    async def call(self, path: str, payload: bytes | list[bytes], metadata: list[tuple[str, Any]],
                   streaming: bool) -> None:
        self.calls += 1
        try:
            if streaming:
                call = self.channel.stream_unary(path, request_serializer=None, response_deserializer=None)
                response = await call(iter(payload), metadata=metadata, timeout=CALL_TIMEOUT_S)
            else:
                call = self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
                response = await call(payload, metadata=metadata, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            self._status(path, exc.code(), exc.details() or "")
            return
        except (ValueError, TypeError) as exc:  # metadata the client library refuses to send
            self.outcomes[f"client refused: {type(exc).__name__}"] += 1
            return
        self._status(path, grpc.StatusCode.OK, "")
        self._answer(path, response)

    def _status(self, path: str, code: grpc.StatusCode, details: str) -> None:
        self.outcomes[code.name] += 1
        if code not in REFUSALS or "Traceback" in details or 'File "' in details:
            self.findings.append(f"{path}: {code.name} {details[:300]!r}")

    def _answer(self, path: str, raw: bytes) -> None:
        service, method = path.strip("/").rsplit("/", 1)
        module = dict(SERVICES)[service]
        descriptor = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods_by_name[method]
        response_type = getattr(module, descriptor.output_type.name)
        try:
            response = response_type.FromString(raw)
        except DecodeError:
            self.findings.append(f"{path}: an OK response that does not parse")
            return
        code = getattr(response, "response_code", "")
        if code in FAILED_CODES:
            self.findings.append(f"{path}: answered {code} ({response.message})")
        self.outcomes[f"{method} {code}".strip()] += 1
        _collect_ids(response, self.acknowledged_ids)


def _collect_ids(message: Message, into: set[int]) -> None:
    """Every transaction id an operator response acknowledged (nested results included)."""
    for field, value in message.ListFields():
        if field.type == D.FieldDescriptor.TYPE_MESSAGE:
            for child in value if field.is_repeated else [value]:
                _collect_ids(child, into)
        elif field.name.endswith("transaction_id") and isinstance(value, str) and value.isascii() and value.isdigit():
            into.add(int(value))


def _methods(service: str, module: Any) -> list[tuple[str, D.MethodDescriptor]]:
    descriptor = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]]
    return [(f"/{service}/{m.name}", m) for m in descriptor.methods]


POS_METHODS = _methods(*SERVICES[0])
OPERATOR_METHODS = _methods(*SERVICES[1]) + _methods(*SERVICES[2])


# ------------------------------------------------------------------------------ operator seeds


def operator_seed(rig: Rig, draw: st.DrawFn, message_type: type[Message]) -> Message:
    """A plausible request of any operator method, filled by field name from the network's real ids."""
    known: dict[str, Any] = {
        "account_id": draw(st.sampled_from([rig.poor.account_id, rig.rich.account_id, "424242"])),
        "card_id": draw(st.sampled_from([rig.poor.card_id, rig.rich.card_id, "424243"])),
        "station_id": draw(st.sampled_from([FUZZ_STATION, OTHER_STATION, "FZ-NEW"])),
        "terminal_id": draw(st.sampled_from(["FZ-NEW-T1", f"{OTHER_STATION}-T001"])),
        "public_key": "04" + "11" * 64, "pin": "123456", "kind": "personal", "holder_name": "模糊测试",
        "state": draw(st.sampled_from(["active", "frozen", "lost", "suspended"])), "reason": "fuzz",
        "amount": 100, "reference": f"fuzz-{draw(st.integers(0, 10**9))}", "channel": "wechat",
        "channel_txn_id": f"FZ{draw(st.integers(0, 10**9))}", "original_channel_txn_id": "FZ1",
        "business_date": "2025-01-15", "day": "2025-01-15", "decision": "ignore", "run_id": "1",
        "product_code": "92", "unit_price": 738, "expiry": "2030-12", "name": "站", "region": "110105",
        "paid_at_ms": 1736906400000, "status": "SUCCESS",
    }
    return _fill(message_type(), known, 0)


def _fill(message: Message, known: dict[str, Any], depth: int) -> Message:
    for field in message.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if field.type == D.FieldDescriptor.TYPE_MESSAGE:
            if depth < 2:
                child = getattr(message, field.name).add() if repeated else getattr(message, field.name)
                _fill(child, known, depth + 1)
            continue
        value = known.get(field.name)
        if value is None:
            continue  # defaults: the operator API must cope with what it was not given
        try:
            if repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
        except (TypeError, ValueError):
            pass
    return message


# ------------------------------------------------------------------------------ the test


@pytest.fixture
def fuzz_rig(fresh_db, tmp_path):
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    rig = Rig()
    config = ServeConfig(listen="127.0.0.1:0", data_dir=tmp_path, operator_token=TOKEN, dsn=fresh_db)
    runner.run(rig.start(config))
    errors = _ErrorLog()
    logging.getLogger("fuelswitch").addHandler(errors)
    try:
        yield runner, rig, errors
    finally:
        logging.getLogger("fuelswitch").removeHandler(errors)
        runner.run(rig.stop())
        runner.close()


class _ErrorLog(logging.Handler):
    """ERROR records of the switch: an unexpected exception, or a failed journal commit."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))


def test_every_rpc_survives_mutated_messages_and_metadata(fuzz_rig):
    runner, rig, errors = fuzz_rig

    @FUZZ_SETTINGS
    @given(st.data())
    def pos_example(data: st.DataObject) -> None:
        path, method = data.draw(st.sampled_from(POS_METHODS), label="method")
        if method.name == "SignOn":
            payload: bytes | list[bytes] = data.draw(mutated(rig.signon_seed()))
            runner.run(rig.call(path, payload, data.draw(metadata_for([])), streaming=False))
            return
        # Terminal 0: valid MACs over the mutated bytes (deep); terminal 1: its metadata mutated too.
        terminal = rig.terminals[data.draw(st.sampled_from([0, 0, 0, 1]))]
        session = terminal.session
        if method.client_streaming:
            records = []
            for _ in range(data.draw(st.integers(0, 3))):
                body = data.draw(mutated(rig.pos_seed(data.draw, method.name, terminal)))
                if data.draw(st.booleans()):  # a correct record MAC over the mutated record
                    record = pos_pb2.OfflineTransaction()
                    try:
                        record.MergeFromString(body)
                        body = offline_record_bytes(record, session.mac_key)
                    except DecodeError:
                        pass
                records.append(body)
            if method.name == "UploadOfflineBatch":
                payload = [pos_pb2.OfflineBatch(records=records).SerializeToString()] * data.draw(st.integers(0, 2))
            else:
                payload = records
            mac_over = b""
        else:
            payload = data.draw(mutated(rig.pos_seed(data.draw, method.name, terminal)))
            mac_over = payload
        valid = [(MD_TERMINAL_ID, terminal.terminal_id), (MD_SESSION_ID, session.session_id),
                 (MD_MAC, sm3.mac_hex(session.mac_key, mac_over))]
        metadata = valid if terminal is rig.terminals[0] else data.draw(metadata_for(valid))
        runner.run(rig.call(path, payload, metadata, method.client_streaming))

    pos_example()
    pos_calls = rig.calls
    assert not rig.findings, "\n".join(rig.findings[:20])
    after_pos = runner.run(rig._totals())
    assert after_pos == rig.totals_before, f"the POS fuzz moved money: {rig.totals_before} -> {after_pos}"

    @FUZZ_SETTINGS
    @given(st.data())
    def operator_example(data: st.DataObject) -> None:
        path, method = data.draw(st.sampled_from(OPERATOR_METHODS), label="method")
        module = clearing_pb2 if path.startswith("/fuelswitch.v1.Clearing/") else admin_pb2
        request_type = getattr(module, method.input_type.name)
        valid = [(MD_AUTHORIZATION, f"Bearer {TOKEN}")]
        metadata = data.draw(metadata_for(valid))
        if method.client_streaming:
            payload: bytes | list[bytes] = [data.draw(mutated(operator_seed(rig, data.draw, request_type)))
                                            for _ in range(data.draw(st.integers(0, 3)))]
        else:
            payload = data.draw(mutated(operator_seed(rig, data.draw, request_type)))
        runner.run(rig.call(path, payload, metadata, method.client_streaming))

    operator_example()
    assert not rig.findings, "\n".join(rig.findings[:20])
    assert not errors.records, "\n".join(errors.records[:20])
    assert rig.running.app.writer.stats.failures == 0

    async def final_checks() -> dict[str, int]:
        running = rig.running
        await assert_memory_equals_database(running)
        async with running.pool.acquire() as conn:
            report = await verify(conn, running.app.keyring)
            created = [r["transaction_id"] for r in await conn.fetch(
                "SELECT transaction_id FROM transactions WHERE transaction_id >= $1", rig.first_txn_id)]
        assert report.ok, report.problems
        unacknowledged = sorted(set(created) - rig.acknowledged_ids)
        assert not unacknowledged, f"transactions no caller was told about: {unacknowledged[:20]}"
        return {"created": len(created)}

    created = runner.run(final_checks())
    print(f"\ngRPC fuzz: {pos_calls} PosGateway calls, {rig.calls - pos_calls} CardAdmin/Clearing calls; "
          f"{created['created']} operator transactions, all acknowledged; outcomes {dict(rig.outcomes.most_common(25))}")

