"""WeChat Pay API v2 notifications: signed payment results and encrypted refund results.

Payment result (支付结果通知): XML signed over the ASCII-sorted `key=value` pairs of every
non-empty field but `sign`, joined by '&', plus '&key=<API key>'; MD5 or HMAC-SHA256 (keyed with
the API key), uppercase hex. The official example (pay.weixin.qq.com, 签名算法) is a test vector.

Refund result (退款结果通知): not signed; `req_info` is AES-256-ECB (PKCS#7) under the lowercase
hex MD5 of the API key, base64. Decryption that yields valid padding and XML is the channel's only
proof of origin, so any failure there is a SignatureInvalid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ext.attach import decode_attach
from ext.beijing import compact_ms, dashed_ms
from ext.errors import AmountInvalid, NotificationIgnored, NotificationInvalid, SignatureInvalid
from ext.flatxml import parse_flat_xml
from ext.money import parse_fen
from ext.records import Payment, Refund
from ext.wire import require

SIGN_TYPES = ("MD5", "HMAC-SHA256")
AES_BLOCK_BYTES = 16


def sign(fields: Mapping[str, str], api_key: str, sign_type: str) -> str:
    """The v2 signature of `fields` (uppercase hex)."""
    pairs = [f"{k}={v.strip()}" for k, v in sorted(fields.items()) if k != "sign" and v.strip()]
    message = ("&".join(pairs) + "&key=" + api_key).encode()
    if sign_type == "MD5":
        return hashlib.md5(message).hexdigest().upper()
    if sign_type == "HMAC-SHA256":
        return hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest().upper()
    raise SignatureInvalid(f"unsupported sign_type {sign_type!r}")


def verify(fields: Mapping[str, str], api_key: str, allowed: tuple[str, ...]) -> None:
    sign_type = fields.get("sign_type") or "MD5"  # the field is optional; MD5 is the default
    if sign_type not in allowed:
        raise SignatureInvalid(f"sign_type {sign_type!r} is not accepted")
    received = fields.get("sign", "")
    if not received or not hmac.compare_digest(sign(fields, api_key, sign_type), received.upper()):
        raise SignatureInvalid("v2 signature does not verify")


def decrypt_req_info(req_info: str, api_key: str) -> dict[str, str]:
    """The refund result inside `req_info`, or SignatureInvalid."""
    try:
        ciphertext = base64.b64decode(req_info, validate=True)
    except ValueError as exc:  # binascii.Error, or text not ASCII
        raise SignatureInvalid("req_info is not base64") from exc
    if not ciphertext or len(ciphertext) % AES_BLOCK_BYTES:
        raise SignatureInvalid("req_info is not whole AES blocks")
    key = hashlib.md5(api_key.encode()).hexdigest().encode()
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    unpadder = padding.PKCS7(AES_BLOCK_BYTES * 8).unpadder()
    try:
        plain = unpadder.update(decryptor.update(ciphertext) + decryptor.finalize())
        plain += unpadder.finalize()
        return parse_flat_xml(plain, "root")
    except (ValueError, NotificationInvalid) as exc:
        raise SignatureInvalid("req_info does not decrypt under this API key") from exc


def parse(
    body: bytes, *, api_key: str, sign_types: tuple[str, ...], mch_id: str, app_id: str
) -> Payment | Refund:
    fields = parse_flat_xml(body, "xml")
    if fields.get("return_code") != "SUCCESS":
        # A FAIL notice carries neither a signature nor a result: nothing to trust or apply.
        raise SignatureInvalid("return_code is not SUCCESS: the notice is unsigned")
    if "req_info" in fields:
        inner = decrypt_req_info(fields["req_info"], api_key)
        _check_merchant(fields, mch_id, app_id)
        return _refund(inner)
    verify(fields, api_key, sign_types)
    _check_merchant(fields, mch_id, app_id)
    return _payment(fields)


def _check_merchant(fields: Mapping[str, str], mch_id: str, app_id: str) -> None:
    if fields.get("mch_id") != mch_id or fields.get("appid") != app_id:
        raise NotificationInvalid("mch_id/appid are not this merchant's")


def _payment(fields: Mapping[str, str]) -> Payment:
    result = require(fields, "result_code")
    if result != "SUCCESS":
        raise NotificationIgnored(
            f"payment not successful: {fields.get('err_code', '')}", native_status=result
        )
    if fields.get("fee_type", "CNY") != "CNY":
        raise NotificationInvalid(f"currency {fields['fee_type']!r} is not CNY")
    attach = decode_attach(fields.get("attach"))
    try:
        return Payment(
            channel="wechat",
            channel_txn_id=require(fields, "transaction_id"),
            account_id=attach.account_id,
            amount=parse_fen(require(fields, "total_fee")),
            fee=0,  # the notification has no fee; the daily bill does
            paid_at_ms=compact_ms(require(fields, "time_end")),
            merchant_order_id=fields.get("out_trade_no", ""),
            station_id=attach.station_id,
        )
    except (AmountInvalid, ValueError) as exc:
        raise NotificationInvalid(f"payment fields: {exc}") from exc


def _refund(inner: Mapping[str, str]) -> Refund:
    status = require(inner, "refund_status")
    if status != "SUCCESS":
        raise NotificationIgnored(f"refund not successful ({status})", native_status=status)
    try:
        return Refund(
            channel="wechat",
            channel_refund_id=require(inner, "refund_id"),
            channel_txn_id=require(inner, "transaction_id"),
            amount=parse_fen(require(inner, "refund_fee")),
            fee=0,
            refunded_at_ms=dashed_ms(require(inner, "success_time")),
        )
    except (AmountInvalid, ValueError) as exc:
        raise NotificationInvalid(f"refund fields: {exc}") from exc
