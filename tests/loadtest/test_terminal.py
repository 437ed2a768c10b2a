"""loadtest.terminal against a recording gateway built from the switch/ security modules.

The gateway keeps the raw bytes and metadata of every call, so these tests check what the client
puts on the wire: the sign-on signature (SessionTable.check_signon), the session keys it decrypts,
the request MAC (SessionTable.authenticate), the PIN block (pinblock.decrypt_pin), the §12 test
vectors byte for byte, and that a retransmission is the identical bytes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from fuelswitch.v1 import common_pb2, pos_pb2

from loadtest.terminal import (
    RPCS,
    SERVICE,
    STAN_MAX,
    ResponseMacError,
    SignOnRefused,
    Terminal,
    TerminalError,
    offline_record_bytes,
)
from switch import pinblock, sm2, sm3
from switch.protocol import (
    MD_HOST_TIME,
    MD_MAC,
    MD_SESSION_ID,
    MD_TERMINAL_ID,
    Unauthenticated,
    signon_message,
)
from switch.sessions import SessionTable

# docs/pos-protocol.md §12
DOC_PRIVATE = "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8"
DOC_PUBLIC = (
    "0409f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f350"
    "20ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13"
)
DOC_NONCE = bytes.fromhex("00112233445566778899aabbccddeeff")
DOC_TIME_MS = 1735689600000
DOC_SIGNATURE = bytes.fromhex(
    "a37053341b3aa3b6e311cf39cd0ce286c73e7cce3f1b29290f192181ad79868c"
    "d1f6ae274b89ef18b51812f8b4b69443c1004ca9949bb375409f2b23aa68714c"
)
DOC_ENCRYPTED_KEYS = bytes.fromhex(
    "62c0c0ba292e3c0c0c47fae6ef31deeff706184dda17fb0aa51b521048edc117"
    "6e4d14e5014cf5ecdfc84be937534929e40eb0a2f4afb95286d97c2d7374ec83"
    "335bfffdf55ec734bd99dc0001087000143319511baa65d539de44a2ee68cd43"
    "7b7ea92ebe52c73271082b9761d6b23786e72b945ed9d2e0a183efc15357cb5e"
)
DOC_MAC_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
DOC_PIN_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
DOC_PAN = "9000011234567890127"
DOC_AUTHORIZE = bytes.fromhex(
    "0a100a055430303031102a1880f8a5f9c132"  # header {T0001, 42, 1735689600000}
    "12133930303030313132333435363738393031323"
    "7"  # pan
    "1a10addd776d25fa5ee8545c1bcf479ed251"  # pin_block
    "20b0ea01"  # amount 30000
    "32023932"  # product_code "92"
    "3803"  # pump 3
    "5801"  # partial_allowed true
)
DOC_AUTHORIZE_MAC = "881d2753db522c62d61c9608322cb576796dae3629476873f6b16e6b1624293c"
DOC_EMPTY_MAC = "c8e4e95012eb3d449b5dd0691947986e469e08a3506bb55ccb94a96ebfada654"
DOC_OFFLINE_BODY = bytes.fromhex(
    "0a100a05543030303110391880d581fbc13212133930303030313132333435363738393031323718a09c0120dcd301"
    "2a02393230e2053880adbef9c13240b0094803"
)
DOC_OFFLINE_MAC = "830ab2118fbdd71e527fe766ed0718581c7ed444f563ff6d7d1eb9569dbfac4c"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Received:
    rpc: str
    body: bytes
    metadata: dict[str, str]


@dataclass
class RecordingGateway:
    """A PosGateway that authenticates with switch.sessions and records every request.

    `vector_keys=True` answers SignOn with the §12 encrypted_keys (no signature check, since the
    terminal's time is the fixed doc time); `response_mac` is "good", "bad" or "none";
    `skew_first` refuses the first sign-on with clock-skew and `fs-host-time-ms`.
    """

    public_key_hex: str
    vector_keys: bool = False
    response_mac: str = "good"
    skew_first: bool = False
    refuse_code: str = ""
    encrypted_keys: bytes = DOC_ENCRYPTED_KEYS  # what vector_keys mode sends
    host_time_ms: int | None = None
    sessions: SessionTable = field(default_factory=SessionTable)
    keys: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # session -> (mac, pin)
    received: list[Received] = field(default_factory=list)

    def handler(self) -> grpc.GenericRpcHandler:
        def keep(data: bytes) -> bytes:
            return data

        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._unary(name), request_deserializer=keep, response_serializer=keep
            )
            for name in RPCS
            if name != "UploadOffline"
        }
        handlers["UploadOffline"] = grpc.stream_unary_rpc_method_handler(
            self._upload, request_deserializer=keep, response_serializer=keep
        )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _now(self) -> int:
        return self.host_time_ms if self.host_time_ms is not None else wall_ms()

    def _unary(self, rpc: str) -> Any:
        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            md = {k: v for k, v in context.invocation_metadata() or ()}
            self.received.append(Received(rpc, body, md))
            if rpc == "SignOn":
                return await self._sign_on(body, context)
            mac_key = self._authenticate(body, md)
            if mac_key is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad-mac: test gateway")
                raise AssertionError
            response = RPCS[rpc][1](response_code="00", message="ok")
            if rpc == "Authorize":
                request = pos_pb2.AuthorizeRequest.FromString(body)
                response = pos_pb2.AuthorizeResponse(
                    response_code="00", hold_id="H1", approved_amount=request.amount
                )
            return self._reply(response.SerializeToString(), mac_key, context)

        return handle

    def _authenticate(self, body: bytes, md: dict[str, str]) -> bytes | None:
        session_id = md.get(MD_SESSION_ID, "")
        if session_id not in self.keys:
            return None
        mac_key = self.keys[session_id][0]
        if not self.vector_keys:  # the switch's own check, over the bytes as received
            try:
                self.sessions.authenticate(
                    md.get(MD_TERMINAL_ID), session_id, md.get(MD_MAC), body, self._now()
                )
            except Unauthenticated:
                return None
        return mac_key if sm3.mac_equal(mac_key, body, md.get(MD_MAC, "")) else None

    def _reply(self, body: bytes, mac_key: bytes, context: Any) -> bytes:
        if self.response_mac == "good":
            context.set_trailing_metadata(((MD_MAC, sm3.mac_hex(mac_key, body)),))
        elif self.response_mac == "bad":
            context.set_trailing_metadata(((MD_MAC, "0" * 64),))
        return body

    async def _sign_on(self, body: bytes, context: Any) -> bytes:
        request = pos_pb2.SignOnRequest.FromString(body)
        if self.skew_first:
            self.skew_first = False
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "clock-skew: terminal time is outside ±300 s of host time",
                ((MD_HOST_TIME, str(self._now())),),
            )
        if self.refuse_code:
            return pos_pb2.SignOnResponse(
                response_code=self.refuse_code, message="no"
            ).SerializeToString()
        now = self._now()
        if self.vector_keys:
            session_id, encrypted = f"S{len(self.keys)}", self.encrypted_keys
            self.keys[session_id] = (DOC_MAC_KEY, DOC_PIN_KEY)
        else:
            SessionTable.check_signon(
                request.terminal_id,
                self.public_key_hex,
                request.nonce,
                request.terminal_time_ms,
                request.signature,
                now,
            )
            opened = self.sessions.open(
                request.terminal_id, request.nonce, now, self.public_key_hex
            )
            session_id, encrypted = opened.session.session_id, opened.encrypted_keys
            self.keys[session_id] = (opened.session.mac_key, opened.session.pin_key)
        return pos_pb2.SignOnResponse(
            response_code="00",
            session_id=session_id,
            encrypted_keys=encrypted,
            expires_at_ms=now + 3_600_000,
            host_time_ms=now,
            station_id="ST-TEST",
        ).SerializeToString()

    async def _upload(self, bodies: AsyncIterator[bytes], context: Any) -> bytes:
        md = {k: v for k, v in context.invocation_metadata() or ()}
        records = [body async for body in bodies]
        for record in records:
            self.received.append(Received("UploadOffline", record, md))
        mac_key = self._authenticate(b"", md)
        assert mac_key is not None
        result = pos_pb2.OfflineUploadResult(response_code="00", applied=len(records))
        return self._reply(result.SerializeToString(), mac_key, context)


@asynccontextmanager
async def serving(gateway: RecordingGateway) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((gateway.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return sm2.generate_keypair()


# ---------------------------------------------------------------------- encodings


def test_signon_message_and_doc_signature() -> None:
    message = signon_message("T0001", DOC_NONCE, DOC_TIME_MS)
    assert message == b"T0001|00112233445566778899aabbccddeeff|1735689600000"
    assert sm2.verify(DOC_PUBLIC, message, DOC_SIGNATURE)


def test_offline_record_vector() -> None:
    record = pos_pb2.OfflineTransaction(
        header=common_pb2.TerminalHeader(
            terminal_id="T0001", stan=57, terminal_time_ms=1735693200000
        ),
        pan=DOC_PAN,
        amount=20000,
        volume_ml=27100,
        product_code="92",
        unit_price=738,
        transaction_time_ms=1735690000000,
        hotlist_version=1200,
        pump=3,
        mac="ignored: replaced by the computed MAC",
    )
    sent = offline_record_bytes(record, DOC_MAC_KEY)
    assert sent == DOC_OFFLINE_BODY + b"\x7a\x40" + DOC_OFFLINE_MAC.encode()
    assert len(sent) == 132
    assert pos_pb2.OfflineTransaction.FromString(sent).mac == DOC_OFFLINE_MAC
    assert sm3.mac_hex(DOC_MAC_KEY, b"") == DOC_EMPTY_MAC


async def test_stan_counter_starts_where_told_and_wraps(keypair: tuple[str, str]) -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:9") as channel:
        wrapping = Terminal(channel, "T1", *keypair, first_stan=STAN_MAX - 1)
        assert [wrapping.next_stan() for _ in range(4)] == [STAN_MAX - 1, STAN_MAX, 1, 2]
        assert 1 <= Terminal(channel, "T2", *keypair).next_stan() <= 2**31
        with pytest.raises(ValueError):
            Terminal(channel, "T3", *keypair, first_stan=0)


# ---------------------------------------------------------------------- against the gateway


async def test_doc_vectors_on_the_wire() -> None:
    """§12: keys from encrypted_keys, then the 69 Authorize bytes and their fs-mac, exactly."""
    gateway = RecordingGateway(DOC_PUBLIC, vector_keys=True, host_time_ms=DOC_TIME_MS)
    async with serving(gateway) as channel:
        terminal = Terminal(
            channel, "T0001", DOC_PRIVATE, DOC_PUBLIC, clock=lambda: DOC_TIME_MS, first_stan=42
        )
        await terminal.sign_on()
        assert (terminal.session.mac_key, terminal.session.pin_key) == (DOC_MAC_KEY, DOC_PIN_KEY)
        signon = pos_pb2.SignOnRequest.FromString(gateway.received[0].body)
        assert signon.terminal_id == "T0001" and signon.terminal_time_ms == DOC_TIME_MS
        assert sm2.verify(
            DOC_PUBLIC, signon_message("T0001", signon.nonce, DOC_TIME_MS), signon.signature
        )

        sent = await terminal.authorize(DOC_PAN, "1234", 30000, "92", pump=3, partial_allowed=True)
        assert sent.stan == 42 and sent.response.hold_id == "H1"
        wire = gateway.received[-1]
        assert wire.body == sent.request_bytes == DOC_AUTHORIZE
        assert len(wire.body) == 69
        assert wire.metadata[MD_MAC] == DOC_AUTHORIZE_MAC
        assert wire.metadata[MD_TERMINAL_ID] == "T0001"
        assert wire.metadata[MD_SESSION_ID] == terminal.session.session_id


async def test_sign_on_keys_pin_block_and_mac_round_trip(keypair: tuple[str, str]) -> None:
    gateway = RecordingGateway(keypair[1])
    async with serving(gateway) as channel:
        terminal = Terminal(channel, "T0007", *keypair, require_response_mac=True)
        response = await terminal.sign_on()
        mac_key, pin_key = gateway.keys[response.session_id]
        assert terminal.session.session_id == response.session_id
        assert (terminal.session.mac_key, terminal.session.pin_key) == (mac_key, pin_key)
        assert terminal.session.station_id == "ST-TEST"

        pan = "9000019876543210988"
        sent = await terminal.authorize(pan, "482913", 12345, "95", pump=7, vehicle_id="粤B12345")
        wire = gateway.received[-1]
        request = pos_pb2.AuthorizeRequest.FromString(wire.body)
        assert pinblock.decrypt_pin(pin_key, request.pin_block, pan) == "482913"
        assert sm3.mac_equal(mac_key, wire.body, wire.metadata[MD_MAC])
        assert request.header.terminal_id == "T0007" and request.header.stan == sent.stan
        assert abs(request.header.terminal_time_ms - wall_ms()) < 5_000
        assert (request.amount, request.product_code, request.pump) == (12345, "95", 7)
        assert request.vehicle_id == "粤B12345"

        no_pin = await terminal.balance_inquiry(pan, None)
        assert pos_pb2.BalanceInquiryRequest.FromString(gateway.received[-1].body).pin_block == b""
        assert no_pin.stan == sent.stan + 1


async def test_every_rpc_sends_header_and_mac(keypair: tuple[str, str]) -> None:
    gateway = RecordingGateway(keypair[1])
    async with serving(gateway) as channel:
        terminal = Terminal(channel, "T0008", *keypair, first_stan=100)
        await terminal.sign_on()
        pan = "9000011234567890127"
        calls = [
            ("Authorize", terminal.authorize(pan, "1234", 100)),
            ("Complete", terminal.complete("H1", 100, 136, "92", 738)),
            ("Cancel", terminal.cancel("H1")),
            ("Reverse", terminal.reverse(101)),
            ("Purchase", terminal.purchase(pan, "1234", 500, "", 0)),
            ("Refund", terminal.refund("TX1", 500)),
            ("BalanceInquiry", terminal.balance_inquiry(pan, "1234")),
            ("SyncHotlist", terminal.sync_hotlist(7)),
        ]
        for number, (rpc, call) in enumerate(calls):
            sent = await call
            assert sent.response.response_code == "00"
            assert isinstance(sent.response, RPCS[rpc][1])
            wire = gateway.received[-1]
            assert wire.rpc == rpc and wire.body == sent.request_bytes
            header = RPCS[rpc][0].FromString(wire.body).header  # type: ignore[attr-defined]
            assert (
                (header.terminal_id, header.stan) == ("T0008", 100 + number) == ("T0008", sent.stan)
            )

        record = pos_pb2.OfflineTransaction(
            header=common_pb2.TerminalHeader(stan=77), pan=pan, amount=1000, volume_ml=1355,
            product_code="92", unit_price=738, transaction_time_ms=wall_ms(), pump=2,
        )  # fmt: skip
        result = await terminal.upload_offline([record, record])
        assert result.applied == 2
        uploaded = gateway.received[-1]
        assert uploaded.metadata[MD_MAC] == sm3.mac_hex(terminal.session.mac_key, b"")
        body, tag, mac = uploaded.body[:-66], uploaded.body[-66:-64], uploaded.body[-64:]
        assert tag == b"\x7a\x40" and sm3.mac_hex(terminal.session.mac_key, body) == mac.decode()
        assert pos_pb2.OfflineTransaction.FromString(uploaded.body).header.stan == 77


async def test_retransmission_sends_identical_bytes(keypair: tuple[str, str]) -> None:
    gateway = RecordingGateway(keypair[1])
    async with serving(gateway) as channel:
        terminal = Terminal(channel, "T0009", *keypair)
        await terminal.sign_on()
        sent = await terminal.authorize("9000011234567890127", "1234", 2500)
        again = await terminal.send_bytes("Authorize", sent.request_bytes)
        assert again == sent.response
        first, second = gateway.received[-2], gateway.received[-1]
        assert first.body == second.body == sent.request_bytes
        assert first.metadata[MD_MAC] == second.metadata[MD_MAC]

        await terminal.sign_on()  # new session: same bytes, new MAC (§6.1)
        await terminal.send_bytes("Authorize", sent.request_bytes)
        third = gateway.received[-1]
        assert third.body == sent.request_bytes
        assert third.metadata[MD_MAC] != first.metadata[MD_MAC]
        assert sm3.mac_equal(terminal.session.mac_key, third.body, third.metadata[MD_MAC])

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await terminal.send_bytes("Authorize", sent.request_bytes, mac_hex="0" * 64)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("mode", "required", "fails"),
    [("good", True, False), ("bad", False, True), ("none", True, True), ("none", False, False)],
)
async def test_response_mac_policy(
    keypair: tuple[str, str], mode: str, required: bool, fails: bool
) -> None:
    gateway = RecordingGateway(keypair[1], response_mac=mode)
    async with serving(gateway) as channel:
        terminal = Terminal(channel, "T0010", *keypair, require_response_mac=required)
        await terminal.sign_on()  # SignOn itself carries no response MAC
        if fails:
            with pytest.raises(ResponseMacError):
                await terminal.cancel("H1")
        else:
            assert (await terminal.cancel("H1")).response.response_code == "00"


async def test_sign_on_corrects_clock_skew_and_reports_refusal(keypair: tuple[str, str]) -> None:
    gateway = RecordingGateway(keypair[1], skew_first=True)
    async with serving(gateway) as channel:
        terminal = Terminal(channel, "T0011", *keypair, clock=lambda: 1_000_000)
        await terminal.sign_on()
        first, second = (pos_pb2.SignOnRequest.FromString(r.body) for r in gateway.received)
        assert first.terminal_time_ms == 1_000_000
        assert abs(second.terminal_time_ms - wall_ms()) < 5_000
        assert first.nonce != second.nonce
        assert abs(terminal.now_ms() - wall_ms()) < 5_000

        gateway.skew_first = True
        strict = Terminal(channel, "T0011", *keypair, clock=lambda: 1_000_000)
        with pytest.raises(grpc.aio.AioRpcError) as skewed:
            await strict.sign_on(fix_clock_skew=False)
        assert skewed.value.details().startswith("clock-skew")

        gateway.refuse_code = "96"
        with pytest.raises(SignOnRefused) as refused:
            await terminal.sign_on()
        assert refused.value.response_code == "96"


async def test_tampered_encrypted_keys_are_rejected() -> None:
    tampered = bytearray(DOC_ENCRYPTED_KEYS)
    tampered[-1] ^= 1  # one bit of C2: C3 no longer matches
    gateway = RecordingGateway(
        DOC_PUBLIC, vector_keys=True, host_time_ms=DOC_TIME_MS, encrypted_keys=bytes(tampered)
    )
    async with serving(gateway) as channel:
        terminal = Terminal(channel, "T0001", DOC_PRIVATE, DOC_PUBLIC, clock=lambda: DOC_TIME_MS)
        with pytest.raises(TerminalError, match="encrypted_keys rejected"):
            await terminal.sign_on()
        assert not terminal.signed_on
