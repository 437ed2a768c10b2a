"""UnionPay (银联) online gateway adapter (全渠道 ACP 5.1.0): back notifications and the ZM file.

Verification (signMethod 01, version 5.1.0, as UnionPay's ACP SDK AcpService.validate): the
`signPubKeyCert` must chain to UnionPay's root (ext.unionpay_cert); the form parameters but
`signature` are sorted by name and joined as ``name=value`` with '&' (empty values included); the
lowercase hex SHA-256 of that string, as ASCII bytes, is what `signature` (base64) signs with
SHA256withRSA. Version 5.0.0 (SHA-1, certId) is refused.

Mapping: respCode 00 (or A6, "success with defects", which the SDK also treats as success) with
txnType 01 (消费) is a payment keyed by queryId; txnType 04 (退货) and 31 (消费撤销) are refunds
of origQryId. txnAmt is fen. UnionPay counts a notification as delivered on HTTP 200.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ext.attach import decode_attach
from ext.beijing import compact_ms, month_day_ms
from ext.errors import NotificationIgnored, NotificationInvalid, SignatureInvalid
from ext.money import parse_fen
from ext.records import Payment, Refund, StatementLine
from ext.unionpay_cert import UnionpayTrust, utc_now
from ext.unionpay_zm import parse_zm
from ext.wire import Ack, check_body, parse_form, require

CHANNEL = "unionpay"
VERSION = "5.1.0"
SUCCESS_CODES = ("00", "A6")
PAYMENT_TXN_TYPES = ("01",)
REFUND_TXN_TYPES = ("04", "31")
CNY = "156"
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gbk"}


@dataclass(frozen=True)
class UnionpayConfig:
    """One UnionPay merchant (merId) and UnionPay's root and middle certificates (PEM)."""

    mer_id: str
    root_cert_pem: str
    middle_cert_pem: str
    validate_cn_name: bool = True  # False only against UnionPay's test environment

    def __post_init__(self) -> None:
        if not self.mer_id or not self.root_cert_pem or not self.middle_cert_pem:
            raise ValueError("mer_id and UnionPay's root and middle certificates are required")


class UnionpayAdapter:
    channel = CHANNEL

    def __init__(self, config: UnionpayConfig) -> None:
        self.config = config
        self._trust = UnionpayTrust(
            config.root_cert_pem, config.middle_cert_pem, validate_cn_name=config.validate_cn_name
        )

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now_ms: int | None = None
    ) -> Payment | Refund:
        """Verify, then map. `now_ms` is the clock for the certificates' validity (default: now)."""
        check_body(body)
        encoding = _encoding(body)
        form = parse_form(body, encoding)
        now = utc_now() if now_ms is None else datetime.fromtimestamp(now_ms / 1000, UTC)
        self._verify(form, encoding, now)
        if form.get("merId") != self.config.mer_id:
            raise NotificationInvalid("merId is not this merchant's")
        if form.get("currencyCode", CNY) != CNY:
            raise NotificationInvalid(f"currencyCode {form['currencyCode']!r} is not CNY (156)")
        code = require(form, "respCode")
        if code not in SUCCESS_CODES:
            raise NotificationIgnored(
                f"transaction failed: {form.get('respMsg', '')}", native_status=code
            )
        txn_type = require(form, "txnType")
        try:
            if txn_type in PAYMENT_TXN_TYPES:
                return _payment(form)
            if txn_type in REFUND_TXN_TYPES:
                return _refund(form)
        except ValueError as exc:
            raise NotificationInvalid(f"fields: {exc}") from exc
        raise NotificationIgnored(
            f"txnType {txn_type} is not a payment or refund", native_status=txn_type
        )

    def ack(self, ok: bool) -> Ack:
        """HTTP 200 is "delivered"; any other status makes UnionPay send again."""
        return Ack(200, "text/plain", b"ok") if ok else Ack(500, "text/plain", b"fail")

    def parse_statement(
        self, data: bytes, *, business_date: str | None = None
    ) -> Iterator[StatementLine]:
        """The ZM file of settlement date `business_date` (required: the file carries no year)."""
        return parse_zm(data, mer_id=self.config.mer_id, business_date=business_date)

    def _verify(self, form: Mapping[str, str], encoding: str, now: datetime) -> None:
        if form.get("version") != VERSION or form.get("signMethod") != "01":
            raise SignatureInvalid(f"only version {VERSION} with signMethod 01 is accepted")
        key = self._trust.signing_key(form.get("signPubKeyCert", ""), now)
        content = "&".join(f"{k}={v}" for k, v in sorted(form.items()) if k != "signature")
        try:
            digest_hex = hashlib.sha256(content.encode(encoding)).hexdigest()
            signature = base64.b64decode(form.get("signature", ""), validate=True)
            key.verify(signature, digest_hex.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        except (ValueError, InvalidSignature, UnicodeEncodeError) as exc:  # binascii.Error, or text not ASCII
            raise SignatureInvalid("UnionPay signature does not verify") from exc


def _encoding(body: bytes) -> str:
    try:
        declared = dict(parse_qsl(body.decode("ascii"), encoding="latin-1")).get(
            "encoding", "UTF-8"
        )
    except UnicodeDecodeError as exc:
        raise NotificationInvalid("body is not a URL-encoded form") from exc
    encoding = ENCODINGS.get(declared.lower())
    if encoding is None:
        raise NotificationInvalid(f"unsupported encoding {declared!r}")
    return encoding


def _time_ms(form: Mapping[str, str]) -> int:
    """traceTime (MMDDhhmmss, when UnionPay processed it) in the year of the order's txnTime."""
    return month_day_ms(require(form, "traceTime"), compact_ms(require(form, "txnTime")))


def _payment(form: Mapping[str, str]) -> Payment:
    attach = decode_attach(form.get("reqReserved"))
    return Payment(
        channel=CHANNEL,
        channel_txn_id=require(form, "queryId"),
        account_id=attach.account_id,
        amount=parse_fen(require(form, "txnAmt")),
        fee=0,  # the notification has no fee; the ZM file's 商户手续费 does
        paid_at_ms=_time_ms(form),
        merchant_order_id=form.get("orderId", ""),
        station_id=attach.station_id,
    )


def _refund(form: Mapping[str, str]) -> Refund:
    return Refund(
        channel=CHANNEL,
        channel_refund_id=require(form, "queryId"),
        channel_txn_id=require(form, "origQryId"),
        amount=parse_fen(require(form, "txnAmt")),
        fee=0,
        refunded_at_ms=_time_ms(form),
    )
