"""Digital RMB (数字人民币, e-CNY) adapter: SM2-signed JSON notifications and a CSV statement.

e-CNY operators publish no common merchant callback format, so fuelswitch defines one in the
shape of WeChat Pay API v3, with the national algorithms (GB/T 32918 SM2 over SM3) in place of RSA:

Headers: ``Ecny-Timestamp`` (Unix seconds), ``Ecny-Nonce`` (1..64 printable ASCII),
``Ecny-Serial`` (which operator key signed), ``Ecny-Signature`` (base64 of the 64-byte r||s).
Canonical string, signed as UTF-8 bytes with the default user id 1234567812345678::

    <Ecny-Timestamp> "\\n" <Ecny-Nonce> "\\n" <body> "\\n"

Body, a UTF-8 JSON object: ``event_type`` "PAYMENT" or "REFUND"; ``merchant_no``; ``txn_no``
(the operator's transaction number, of the refund for refunds); ``orig_txn_no`` (refunds: the
payment's txn_no); ``merchant_order_no``; ``amount`` and ``fee`` (integers, fen); ``status``
"SUCCESS", "FAIL" or "CLOSED"; ``finish_time`` (RFC 3339 with offset); ``attach`` (the
fuelswitch pass-through, ext.attach). Answer: 200 ``{"code":"SUCCESS"}``, anything else retries.
The statement format is in ext.ecny_statement.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ext.attach import decode_attach
from ext.beijing import rfc3339_ms
from ext.ecny_statement import parse_ecny_statement
from ext.errors import NotificationIgnored, NotificationInvalid, SignatureInvalid
from ext.records import Payment, Refund, StatementLine
from ext.wire import Ack, check_body, header, parse_json_object, require
from switch import sm2

CHANNEL = "ecny"
TIMESTAMP_SKEW_MAX_S = 300
NONCE_LEN_MAX_CHARS = 64
EVENT_TYPES = ("PAYMENT", "REFUND")


@dataclass(frozen=True)
class EcnyConfig:
    """One e-CNY merchant and its operator's SM2 public keys (130 hex, '04'||x||y) by serial."""

    merchant_no: str
    platform_keys: Mapping[str, str] = field(default_factory=dict)
    timestamp_skew_max_s: int = TIMESTAMP_SKEW_MAX_S

    def __post_init__(self) -> None:
        if not self.merchant_no or not self.platform_keys:
            raise ValueError("merchant_no and at least one operator public key are required")
        for key in self.platform_keys.values():
            sm2.z_value(key)  # raises ValueError on a malformed or off-curve key


def canonical_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes the operator signs (module docstring)."""
    return f"{timestamp}\n{nonce}\n".encode() + bytes(body) + b"\n"


class EcnyAdapter:
    channel = CHANNEL

    def __init__(self, config: EcnyConfig) -> None:
        self.config = config

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now_ms: int | None = None
    ) -> Payment | Refund:
        """Verify, then map. `now_ms` turns on the timestamp check."""
        check_body(body)
        self._verify(headers, body, now_ms)
        message = parse_json_object(body, "body")
        if message.get("merchant_no") != self.config.merchant_no:
            raise NotificationInvalid("merchant_no is not this merchant's")
        event = require(message, "event_type")
        if event not in EVENT_TYPES:
            raise NotificationIgnored(
                f"event_type {event!r} is not a payment or refund", native_status=event
            )
        status = require(message, "status")
        if status != "SUCCESS":
            raise NotificationIgnored(
                f"{event.lower()} not successful ({status})", native_status=status
            )
        try:
            return _payment(message) if event == "PAYMENT" else _refund(message)
        except ValueError as exc:
            raise NotificationInvalid(f"fields: {exc}") from exc

    def ack(self, ok: bool) -> Ack:
        code = "SUCCESS" if ok else "FAIL"
        return Ack(
            200 if ok else 500,
            "application/json",
            json.dumps({"code": code}, separators=(",", ":")).encode(),
        )

    def parse_statement(
        self, data: bytes, *, business_date: str | None = None
    ) -> Iterator[StatementLine]:
        return parse_ecny_statement(
            data, merchant_no=self.config.merchant_no, business_date=business_date
        )

    def _verify(self, headers: Mapping[str, str], body: bytes, now_ms: int | None) -> None:
        timestamp = header(headers, "Ecny-Timestamp")
        nonce = header(headers, "Ecny-Nonce")
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise SignatureInvalid("Ecny-Timestamp missing or not Unix seconds")
        if not (nonce.isascii() and nonce.isprintable() and 0 < len(nonce) <= NONCE_LEN_MAX_CHARS):
            raise SignatureInvalid("Ecny-Nonce missing or malformed")
        key = self.config.platform_keys.get(header(headers, "Ecny-Serial"))
        if key is None:
            raise SignatureInvalid("unknown Ecny-Serial")
        if (
            now_ms is not None
            and abs(now_ms - int(timestamp) * 1000) > self.config.timestamp_skew_max_s * 1000
        ):
            raise SignatureInvalid("Ecny-Timestamp outside the accepted clock skew")
        try:
            signature = base64.b64decode(header(headers, "Ecny-Signature"), validate=True)
        except ValueError as exc:  # binascii.Error, or text not ASCII
            raise SignatureInvalid("Ecny-Signature is not base64") from exc
        if not sm2.verify(key, canonical_message(timestamp, nonce, body), signature):
            raise SignatureInvalid("SM2 signature does not verify")


def _fen(message: Mapping[str, Any], name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise NotificationInvalid(f"{name} is not an integer number of fen")
    return value


def _payment(message: Mapping[str, Any]) -> Payment:
    attach = decode_attach(message.get("attach"))
    return Payment(
        channel=CHANNEL,
        channel_txn_id=require(message, "txn_no"),
        account_id=attach.account_id,
        amount=_fen(message, "amount"),
        fee=_fen(message, "fee"),
        paid_at_ms=rfc3339_ms(require(message, "finish_time")),
        merchant_order_id=str(message.get("merchant_order_no", "")),
        station_id=attach.station_id,
    )


def _refund(message: Mapping[str, Any]) -> Refund:
    return Refund(
        channel=CHANNEL,
        channel_refund_id=require(message, "txn_no"),
        channel_txn_id=require(message, "orig_txn_no"),
        amount=_fen(message, "amount"),
        fee=_fen(message, "fee"),
        refunded_at_ms=rfc3339_ms(require(message, "finish_time")),
    )
