"""An async POS terminal that speaks docs/pos-protocol.md exactly.

Used by the load runner (`loadtest.workload`), the demo and the end-to-end tests of the switch.
One `Terminal` is one registered terminal id with one session; it may have several calls in
flight at once (every call takes its own STAN).

How a call is made (§5 of the protocol):

1. the request message gets its `TerminalHeader` (terminal id, STAN, terminal time);
2. it is serialized ONCE; the HMAC-SM3 of exactly those bytes under the session MAC key is the
   `fs-mac` metadata value, and exactly those bytes are sent (the gRPC serializer is the identity);
3. the response arrives as raw bytes too, so that its trailing `fs-mac` can be checked over the
   bytes the host sent before they are parsed.

Every RPC method returns `Sent(response, stan, request_bytes)`, a named tuple: keep
`request_bytes` to retransmit the identical message (`send_bytes`), as §6.2 asks after a lost
response. Business declines are normal responses (read `response_code`); gRPC errors are raised
as `grpc.aio.AioRpcError` unchanged; a wrong response MAC raises `ResponseMacError`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import grpc
import grpc.aio
from fuelswitch.v1 import pos_pb2
from google.protobuf.message import Message

from switch import pinblock, sm2, sm3
from switch.protocol import (
    MD_HOST_TIME,
    MD_MAC,
    MD_SESSION_ID,
    MD_TERMINAL_ID,
    NONCE_LEN_BYTES,
    SESSION_KEY_LEN_BYTES,
    signon_message,
)

SERVICE = "fuelswitch.v1.PosGateway"
STAN_MAX = 0xFFFF_FFFF  # uint32; the counter wraps from here to 1 (0 is never used)
CALL_TIMEOUT_S = 10.0  # §2: "10 seconds is a good value for unary calls"
RECORD_MAC_TAG = b"\x7a\x40"  # field 15, wire type 2, length 64: the offline record MAC (§9.3)

# rpc name -> (request class, response class), as in pos.proto.
RPCS: dict[str, tuple[type[Message], type[Message]]] = {
    "SignOn": (pos_pb2.SignOnRequest, pos_pb2.SignOnResponse),
    "Authorize": (pos_pb2.AuthorizeRequest, pos_pb2.AuthorizeResponse),
    "Complete": (pos_pb2.CompleteRequest, pos_pb2.CompleteResponse),
    "Cancel": (pos_pb2.CancelRequest, pos_pb2.CancelResponse),
    "Reverse": (pos_pb2.ReverseRequest, pos_pb2.ReverseResponse),
    "Purchase": (pos_pb2.PurchaseRequest, pos_pb2.PurchaseResponse),
    "Refund": (pos_pb2.RefundRequest, pos_pb2.RefundResponse),
    "BalanceInquiry": (pos_pb2.BalanceInquiryRequest, pos_pb2.BalanceInquiryResponse),
    "UploadOffline": (pos_pb2.OfflineTransaction, pos_pb2.OfflineUploadResult),
    "SyncHotlist": (pos_pb2.SyncHotlistRequest, pos_pb2.SyncHotlistResponse),
}

R = TypeVar("R", bound=Message)


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, UTC: the default terminal clock."""
    return time.time_ns() // 1_000_000


def method_path(rpc: str) -> str:
    return f"/{SERVICE}/{rpc}"


def _identity(data: bytes) -> bytes:
    return data


class TerminalError(Exception):
    """The terminal could not complete a protocol step (not a gRPC status, not a decline)."""


class NotSignedOn(TerminalError):
    """A session call was attempted before a successful sign_on()."""


class SignOnRefused(TerminalError):
    """SignOn answered OK at the gRPC level but with a response code other than "00"."""

    def __init__(self, response_code: str, message: str) -> None:
        super().__init__(f"sign-on refused with response code {response_code!r}: {message}")
        self.response_code = response_code


class ResponseMacError(TerminalError):
    """The response's trailing fs-mac is wrong (or missing when required): outcome unknown (§6.2)."""


class Sent(NamedTuple, Generic[R]):
    """What one call returns: the parsed response, the STAN used, the exact request bytes sent."""

    response: R
    stan: int
    request_bytes: bytes


@dataclass(frozen=True)
class TerminalSession:
    """The keys from the last successful SignOn. Never log them."""

    session_id: str
    mac_key: bytes
    pin_key: bytes
    expires_at_ms: int
    station_id: str
    host_time_ms: int


def offline_record_bytes(record: pos_pb2.OfflineTransaction, mac_key: bytes) -> bytes:
    """§9.3: B (the record without `mac`) ‖ 7A 40 ‖ lowercase hex HMAC-SM3(mac_key, B)."""
    bare = pos_pb2.OfflineTransaction()
    bare.CopyFrom(record)
    bare.ClearField("mac")
    body = bare.SerializeToString()
    return body + RECORD_MAC_TAG + sm3.mac_hex(mac_key, body).encode("ascii")


def _metadata_value(metadata: Any, key: str) -> str | None:
    """The first value of `key` in gRPC metadata (aio Metadata or a sequence of pairs)."""
    if metadata is None:
        return None
    for item_key, value in metadata:
        if item_key == key:
            return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return None


class Terminal:
    """One POS terminal: sign on, then send MAC'ed requests with fresh STANs.

    `clock` is the terminal's own clock in ms; after every sign-on the terminal adds the offset
    to the host's `host_time_ms` (§4 "set your clock from host_time_ms") unless
    `adopt_host_time=False`. `first_stan` is the first STAN handed out (default: random in
    1..2**31, so that a rerun against the same host does not collide with STANs it remembers).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        terminal_id: str,
        private_key_hex: str,
        public_key_hex: str,
        clock: Callable[[], int] = wall_clock_ms,
        *,
        require_response_mac: bool = False,
        adopt_host_time: bool = True,
        first_stan: int | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        if first_stan is not None and not 1 <= first_stan <= STAN_MAX:
            raise ValueError(f"first_stan must be 1..{STAN_MAX}")
        self.terminal_id = terminal_id
        self.public_key_hex = public_key_hex
        self.require_response_mac = require_response_mac
        self.adopt_host_time = adopt_host_time
        self.timeout_s = timeout_s
        self._private_key_hex = private_key_hex
        self._clock = clock
        self._clock_offset_ms = 0
        self._next_stan = first_stan if first_stan is not None else secrets.randbelow(2**31) + 1
        self._session: TerminalSession | None = None
        self._unary = {
            rpc: channel.unary_unary(
                method_path(rpc), request_serializer=_identity, response_deserializer=_identity
            )
            for rpc in RPCS
            if rpc != "UploadOffline"
        }
        self._upload = channel.stream_unary(
            method_path("UploadOffline"),
            request_serializer=_identity,
            response_deserializer=_identity,
        )
        self._upload_batch = channel.stream_unary(
            method_path("UploadOfflineBatch"),
            request_serializer=_identity,
            response_deserializer=_identity,
        )

    # ------------------------------------------------------------------ state

    @property
    def session(self) -> TerminalSession:
        if self._session is None:
            raise NotSignedOn(f"terminal {self.terminal_id!r} has not signed on")
        return self._session

    @property
    def signed_on(self) -> bool:
        return self._session is not None

    def now_ms(self) -> int:
        """The terminal's time: its clock corrected by the offset learnt at sign-on."""
        return self._clock() + self._clock_offset_ms

    def next_stan(self) -> int:
        """A new STAN: 1..4294967295, incremented per message, wrapping to 1 (§6.1)."""
        stan = self._next_stan
        self._next_stan = stan % STAN_MAX + 1
        return stan

    def forget_session(self) -> None:
        """Drop the session keys (e.g. to test calls without a session)."""
        self._session = None

    # ------------------------------------------------------------------ SignOn

    async def sign_on(
        self, *, nonce: bytes | None = None, fix_clock_skew: bool = True
    ) -> pos_pb2.SignOnResponse:
        """§4: prove the private key, decrypt and keep the session keys.

        On UNAUTHENTICATED `clock-skew` carrying `fs-host-time-ms` the clock is corrected and the
        sign-on retried once with a new nonce (unless `fix_clock_skew=False`). Other gRPC errors
        propagate; a non-"00" response raises SignOnRefused; a bad `encrypted_keys` (C3 mismatch)
        raises TerminalError.
        """
        try:
            return await self._sign_on_once(nonce)
        except grpc.aio.AioRpcError as exc:
            host_time = _metadata_value(exc.trailing_metadata(), MD_HOST_TIME)
            skewed = exc.code() == grpc.StatusCode.UNAUTHENTICATED and (
                exc.details() or ""
            ).startswith("clock-skew")
            if not (fix_clock_skew and skewed and host_time and host_time.isdigit()):
                raise
            self._clock_offset_ms = int(host_time) - self._clock()
        return await self._sign_on_once(None)

    async def _sign_on_once(self, nonce: bytes | None) -> pos_pb2.SignOnResponse:
        nonce = secrets.token_bytes(NONCE_LEN_BYTES) if nonce is None else nonce
        time_ms = self.now_ms()
        request = pos_pb2.SignOnRequest(
            terminal_id=self.terminal_id,
            nonce=nonce,
            terminal_time_ms=time_ms,
            signature=sm2.sign(
                self._private_key_hex, signon_message(self.terminal_id, nonce, time_ms)
            ),
        )
        raw = await self._unary["SignOn"](request.SerializeToString(), timeout=self.timeout_s)
        response = pos_pb2.SignOnResponse.FromString(raw)
        if response.response_code != "00":
            raise SignOnRefused(response.response_code, response.message)
        try:
            keys = sm2.decrypt(self._private_key_hex, response.encrypted_keys)
        except ValueError as exc:  # C3 mismatch, bad point, wrong length: reject the response
            raise TerminalError(f"encrypted_keys rejected: {exc}") from exc
        if len(keys) != 2 * SESSION_KEY_LEN_BYTES:
            raise TerminalError(f"encrypted_keys decrypts to {len(keys)} bytes, expected 32")
        self._session = TerminalSession(
            session_id=response.session_id,
            mac_key=keys[:SESSION_KEY_LEN_BYTES],
            pin_key=keys[SESSION_KEY_LEN_BYTES:],
            expires_at_ms=response.expires_at_ms,
            station_id=response.station_id,
            host_time_ms=response.host_time_ms,
        )
        if self.adopt_host_time and response.host_time_ms:
            self._clock_offset_ms = response.host_time_ms - self._clock()
        return response

    # ------------------------------------------------------------------ low level

    def pin_block(self, pin: str | None, pan: str) -> bytes:
        """The §7 PIN block under the session PIN key; empty when no PIN was entered."""
        if pin is None or pin == "":
            return b""
        return pinblock.encrypt_pin_block(self.session.pin_key, pin, pan)

    def prepare(self, request: Message, stan: int | None = None) -> tuple[int, bytes]:
        """Fill the request's header and serialize it once: (stan, bytes).

        terminal_id and terminal_time_ms are filled only when unset; the STAN is `stan` if given,
        else the header's own if non-zero, else `next_stan()`.
        """
        header = request.header  # type: ignore[attr-defined]
        if not header.terminal_id:
            header.terminal_id = self.terminal_id
        if stan is not None:
            header.stan = stan
        elif header.stan == 0:
            header.stan = self.next_stan()
        if header.terminal_time_ms == 0:
            header.terminal_time_ms = self.now_ms()
        return header.stan, request.SerializeToString()

    async def send(
        self, method_name: str, request_message: Message, stan: int | None = None
    ) -> Sent[Message]:
        """Header, serialize once, MAC, send (see `prepare` for how the header is filled)."""
        used_stan, body = self.prepare(request_message, stan)
        response = await self.send_bytes(method_name, body)
        return Sent(response, used_stan, body)

    async def send_bytes(
        self,
        method_name: str,
        request_bytes: bytes,
        mac_hex: str | None = None,
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
    ) -> Message:
        """Send exactly `request_bytes`; return the parsed response.

        `mac_hex` overrides the computed request MAC; `metadata` replaces all three session
        entries (tests use both to tamper). Retransmitting the bytes of an earlier `Sent` is the
        identical repeat of §6.1.
        """
        session = self.session
        if metadata is None:
            metadata = self.session_metadata(
                sm3.mac_hex(session.mac_key, request_bytes) if mac_hex is None else mac_hex
            )
        call = self._unary[method_name](request_bytes, metadata=metadata, timeout=self.timeout_s)
        raw = await call
        self._check_response_mac(session, raw, await call.trailing_metadata())
        return RPCS[method_name][1].FromString(raw)

    def session_metadata(self, mac_hex: str) -> tuple[tuple[str, str], ...]:
        session = self.session
        return (
            (MD_TERMINAL_ID, self.terminal_id),
            (MD_SESSION_ID, session.session_id),
            (MD_MAC, mac_hex),
        )

    def _check_response_mac(self, session: TerminalSession, raw: bytes, trailing: Any) -> None:
        mac = _metadata_value(trailing, MD_MAC)
        if mac is None:
            if self.require_response_mac:
                raise ResponseMacError("response carries no fs-mac")
            return
        if not sm3.mac_equal(session.mac_key, raw, mac):
            raise ResponseMacError("response fs-mac does not match the response bytes")

    async def _typed(
        self, method_name: str, request: Message, response_type: type[R], stan: int | None
    ) -> Sent[R]:
        sent = await self.send(method_name, request, stan)
        if not isinstance(sent.response, response_type):  # pragma: no cover - RPCS table bug
            raise TypeError(f"{method_name} answered {type(sent.response).__name__}")
        return Sent(sent.response, sent.stan, sent.request_bytes)

    # ------------------------------------------------------------------ one method per RPC

    async def authorize(
        self,
        pan: str,
        pin: str | None,
        amount: int,
        product_code: str = "92",
        pump: int = 1,
        partial_allowed: bool = False,
        preset_volume_ml: int = 0,
        odometer_km: int = 0,
        driver_id: str = "",
        vehicle_id: str = "",
        *,
        nozzle: int = 0,
        stan: int | None = None,
    ) -> Sent[pos_pb2.AuthorizeResponse]:
        request = pos_pb2.AuthorizeRequest(
            pan=pan,
            pin_block=self.pin_block(pin, pan),
            amount=amount,
            preset_volume_ml=preset_volume_ml,
            product_code=product_code,
            pump=pump,
            odometer_km=odometer_km,
            driver_id=driver_id,
            vehicle_id=vehicle_id,
            partial_allowed=partial_allowed,
            nozzle=nozzle,
        )
        return await self._typed("Authorize", request, pos_pb2.AuthorizeResponse, stan)

    async def complete(
        self,
        hold_id: str,
        amount: int,
        volume_ml: int,
        product_code: str,
        unit_price: int,
        *,
        stan: int | None = None,
    ) -> Sent[pos_pb2.CompleteResponse]:
        request = pos_pb2.CompleteRequest(
            hold_id=hold_id,
            amount=amount,
            volume_ml=volume_ml,
            product_code=product_code,
            unit_price=unit_price,
        )
        return await self._typed("Complete", request, pos_pb2.CompleteResponse, stan)

    async def cancel(
        self, hold_id: str, *, stan: int | None = None
    ) -> Sent[pos_pb2.CancelResponse]:
        request = pos_pb2.CancelRequest(hold_id=hold_id)
        return await self._typed("Cancel", request, pos_pb2.CancelResponse, stan)

    async def reverse(
        self, original_stan: int, *, stan: int | None = None
    ) -> Sent[pos_pb2.ReverseResponse]:
        request = pos_pb2.ReverseRequest(original_stan=original_stan)
        return await self._typed("Reverse", request, pos_pb2.ReverseResponse, stan)

    async def purchase(
        self,
        pan: str,
        pin: str | None,
        amount: int,
        product_code: str,
        volume_ml: int,
        unit_price: int = 0,
        *,
        stan: int | None = None,
    ) -> Sent[pos_pb2.PurchaseResponse]:
        request = pos_pb2.PurchaseRequest(
            pan=pan,
            pin_block=self.pin_block(pin, pan),
            amount=amount,
            product_code=product_code,
            volume_ml=volume_ml,
            unit_price=unit_price,
        )
        return await self._typed("Purchase", request, pos_pb2.PurchaseResponse, stan)

    async def refund(
        self, original_transaction_id: str, amount: int, *, stan: int | None = None
    ) -> Sent[pos_pb2.RefundResponse]:
        request = pos_pb2.RefundRequest(
            original_transaction_id=original_transaction_id, amount=amount
        )
        return await self._typed("Refund", request, pos_pb2.RefundResponse, stan)

    async def balance_inquiry(
        self, pan: str, pin: str | None, *, stan: int | None = None
    ) -> Sent[pos_pb2.BalanceInquiryResponse]:
        request = pos_pb2.BalanceInquiryRequest(pan=pan, pin_block=self.pin_block(pin, pan))
        return await self._typed("BalanceInquiry", request, pos_pb2.BalanceInquiryResponse, stan)

    async def sync_hotlist(
        self, since_version: int = 0, *, stan: int | None = None
    ) -> Sent[pos_pb2.SyncHotlistResponse]:
        request = pos_pb2.SyncHotlistRequest(since_version=since_version)
        return await self._typed("SyncHotlist", request, pos_pb2.SyncHotlistResponse, stan)

    async def upload_offline(
        self, records: Iterable[pos_pb2.OfflineTransaction], *, per_message: int = 1
    ) -> pos_pb2.OfflineUploadResult:
        """§9.3: one stream of MAC'ed records; stream fs-mac = HMAC-SM3 of the empty string.

        per_message > 1 uploads through UploadOfflineBatch with that many records per stream message.

        Each record keeps the STAN it was given when the sale was made (a record with STAN 0 gets
        `next_stan()`); its terminal id is filled if empty and terminal_time_ms is set to now
        (the upload time).
        """
        session = self.session
        bodies = []
        for record in records:
            stamped = pos_pb2.OfflineTransaction()
            stamped.CopyFrom(record)
            if not stamped.header.terminal_id:
                stamped.header.terminal_id = self.terminal_id
            if stamped.header.stan == 0:
                stamped.header.stan = self.next_stan()
            stamped.header.terminal_time_ms = self.now_ms()
            bodies.append(offline_record_bytes(stamped, session.mac_key))
        if per_message > 1:
            upload, messages = self._upload_batch, iter([
                pos_pb2.OfflineBatch(records=bodies[at:at + per_message]).SerializeToString()
                for at in range(0, len(bodies), per_message)])
        else:
            upload, messages = self._upload, iter(bodies)
        call = upload(
            messages,
            metadata=self.session_metadata(sm3.mac_hex(session.mac_key, b"")),
            timeout=self.timeout_s,
        )
        raw = await call
        self._check_response_mac(session, raw, await call.trailing_metadata())
        return pos_pb2.OfflineUploadResult.FromString(raw)


# ---------------------------------------------------------------------- card numbers


def luhn_check_digit(digits: str) -> str:
    """The Luhn check digit to append to `digits` (ISO/IEC 7812-1)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # every second digit from the right, starting next to the check
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str(-total % 10)


def pan_is_valid(pan: str) -> bool:
    """16–19 ASCII digits whose last digit is the Luhn check digit (§1)."""
    return (
        16 <= len(pan) <= 19
        and pan.isascii()
        and pan.isdigit()
        and luhn_check_digit(pan[:-1]) == pan[-1]
    )
