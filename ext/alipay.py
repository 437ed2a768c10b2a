"""Alipay (支付宝) adapter: asynchronous trade notifications (异步通知) and the business statement.

Verification (Alipay open platform, 异步通知验签; the Java SDK's AlipaySignature.rsaCheckV1):
remove `sign` and `sign_type`, sort the remaining form parameters by name, join the URL-decoded
``name=value`` pairs with '&' (empty values included), encode in the notification's `charset`,
and check `sign` (base64) as SHA256withRSA (sign_type RSA2) under the Alipay public key. RSA1 and
certificate mode are not accepted.

Mapping: `trade_status_sync` with TRADE_SUCCESS or TRADE_FINISHED and no `out_biz_no` is a
payment (trade_no, total_amount yuan, gmt_payment). A notification with `out_biz_no` reports a
refund: `refund_fee` there is the trade's cumulative refund, so this refund's amount is taken from
`send_back_fee`; without it the refund cannot be known exactly and the notification is ignored
(the statement brings the refund). Refund ids are unique only within a trade, hence the key
``<trade_no>:<out_biz_no>``, which the statement parser builds the same way.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ext.alipay_statement import parse_business_statement
from ext.attach import decode_attach
from ext.beijing import dashed_ms
from ext.errors import NotificationIgnored, NotificationInvalid, SignatureInvalid
from ext.money import yuan_to_fen
from ext.records import Payment, Refund, StatementLine
from ext.rsa_keys import load_rsa_public_key
from ext.wire import Ack, check_body, parse_form, require

CHANNEL = "alipay"
CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gbk", "gb2312": "gbk"}
PAID_STATES = ("TRADE_SUCCESS", "TRADE_FINISHED")
# A refund leaves the trade in TRADE_SUCCESS (partial) or TRADE_CLOSED (fully refunded).
REFUNDED_STATES = ("TRADE_SUCCESS", "TRADE_CLOSED")


@dataclass(frozen=True)
class AlipayConfig:
    """One Alipay application (public-key mode)."""

    app_id: str
    alipay_public_key: str  # PEM, or the bare base64 key from the console
    seller_id: str = ""  # the merchant's 2088... id; checked when set

    def __post_init__(self) -> None:
        if not self.app_id or not self.alipay_public_key:
            raise ValueError("app_id and alipay_public_key are required")


class AlipayAdapter:
    channel = CHANNEL

    def __init__(self, config: AlipayConfig) -> None:
        self.config = config
        self._key = load_rsa_public_key(config.alipay_public_key)

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now_ms: int | None = None
    ) -> Payment | Refund:
        """Verify, then map. Alipay's scheme has no timestamp to check, so `now_ms` is unused."""
        check_body(body)
        charset = _charset(body)
        form = parse_form(body, charset)
        self._verify(form, charset)
        if form.get("app_id") != self.config.app_id:
            raise NotificationInvalid("app_id is not this application's")
        if self.config.seller_id and form.get("seller_id") != self.config.seller_id:
            raise NotificationInvalid("seller_id is not this merchant's")
        notify_type = form.get("notify_type", "")
        if notify_type != "trade_status_sync":
            raise NotificationIgnored(
                f"notify_type {notify_type!r} is not a trade", native_status=notify_type
            )
        return _refund(form) if form.get("out_biz_no") else _payment(form)

    def ack(self, ok: bool) -> Ack:
        """Alipay stops retrying on the exact plain text 'success'."""
        return Ack(200, "text/plain", b"success" if ok else b"fail")

    def parse_statement(
        self, data: bytes, *, business_date: str | None = None
    ) -> Iterator[StatementLine]:
        """The GBK 业务明细 CSV; its header gives the date, `business_date` must agree if given."""
        return parse_business_statement(data, business_date=business_date)

    def _verify(self, form: Mapping[str, str], charset: str) -> None:
        if form.get("sign_type") != "RSA2":
            raise SignatureInvalid(f"sign_type {form.get('sign_type')!r} is not RSA2")
        content = "&".join(
            f"{k}={v}" for k, v in sorted(form.items()) if k not in ("sign", "sign_type")
        )
        try:
            signature = base64.b64decode(require(form, "sign"), validate=True)
            self._key.verify(
                signature, content.encode(charset), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, InvalidSignature, NotificationInvalid, UnicodeEncodeError) as exc:  # binascii.Error, or text not ASCII
            raise SignatureInvalid("RSA2 signature does not verify") from exc


def _charset(body: bytes) -> str:
    """The body's declared charset (a parameter of the form itself); UTF-8 when absent."""
    try:
        declared = dict(parse_qsl(body.decode("ascii"), encoding="latin-1")).get("charset", "utf-8")
    except UnicodeDecodeError as exc:
        raise NotificationInvalid("body is not a URL-encoded form") from exc
    charset = CHARSETS.get(declared.lower())
    if charset is None:
        raise NotificationInvalid(f"unsupported charset {declared!r}")
    return charset


def _payment(form: Mapping[str, str]) -> Payment:
    status = require(form, "trade_status")
    if status not in PAID_STATES:
        raise NotificationIgnored(f"trade not paid ({status})", native_status=status)
    attach = decode_attach(form.get("passback_params"))
    try:
        return Payment(
            channel=CHANNEL,
            channel_txn_id=require(form, "trade_no"),
            account_id=attach.account_id,
            amount=yuan_to_fen(require(form, "total_amount")),
            fee=0,  # the notification has no fee; the statement's 服务费 does
            paid_at_ms=dashed_ms(require(form, "gmt_payment")),
            merchant_order_id=form.get("out_trade_no", ""),
            station_id=attach.station_id,
        )
    except ValueError as exc:
        raise NotificationInvalid(f"payment fields: {exc}") from exc


def _refund(form: Mapping[str, str]) -> Refund:
    status = require(form, "trade_status")
    if status not in REFUNDED_STATES:
        raise NotificationIgnored(f"refund notice in state {status}", native_status=status)
    if not form.get("send_back_fee"):
        raise NotificationIgnored(
            "refund notice without send_back_fee: refund_fee is cumulative, the statement has the amount",
            native_status=status,
        )
    trade_no = require(form, "trade_no")
    try:
        return Refund(
            channel=CHANNEL,
            channel_refund_id=f"{trade_no}:{form['out_biz_no']}",
            channel_txn_id=trade_no,
            amount=yuan_to_fen(form["send_back_fee"]),
            fee=0,
            refunded_at_ms=dashed_ms(require(form, "gmt_refund")),
        )
    except ValueError as exc:
        raise NotificationInvalid(f"refund fields: {exc}") from exc
