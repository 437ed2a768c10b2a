"""WeChat Pay API v3 notifications (回调通知): RSA-signed envelope, AES-256-GCM resource.

Verification, in WeChat's order: the `Wechatpay-Serial` header picks the platform certificate
or WeChat Pay public key ("PUB_KEY_ID_..."); `Wechatpay-Signature` is base64 RSASSA-PKCS1-v1_5
SHA-256 over "<Wechatpay-Timestamp>\\n<Wechatpay-Nonce>\\n<body>\\n". Signatures starting with
"WECHATPAY/SIGNTEST/" are WeChat's deliberate probes and must fail. Then `resource` is decrypted
with AEAD_AES_256_GCM under the API v3 key (nonce and associated_data from the resource).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509 import load_pem_x509_certificate

from ext.attach import decode_attach
from ext.beijing import rfc3339_ms
from ext.errors import NotificationIgnored, NotificationInvalid, SignatureInvalid
from ext.records import Payment, Refund
from ext.wire import header, parse_json_object, require

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
API_V3_KEY_BYTES = 32


def load_platform_key(pem: str) -> rsa.RSAPublicKey:
    """A platform certificate or a WeChat Pay public key, PEM."""
    data = pem.encode()
    key = (
        load_pem_x509_certificate(data).public_key()
        if b"CERTIFICATE" in data
        else serialization.load_pem_public_key(data)
    )
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("a WeChat Pay platform key must be RSA")
    return key


def verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, rsa.RSAPublicKey],
    *,
    now_ms: int | None,
    skew_max_s: int,
) -> None:
    timestamp = header(headers, "Wechatpay-Timestamp")
    nonce = header(headers, "Wechatpay-Nonce")
    signature = header(headers, "Wechatpay-Signature")
    kind = header(headers, "Wechatpay-Signature-Type")
    if not (timestamp.isascii() and timestamp.isdigit()) or not nonce or not signature:
        raise SignatureInvalid("Wechatpay-Timestamp/Nonce/Signature headers missing or malformed")
    if kind and kind != SIGNATURE_TYPE:
        raise SignatureInvalid(f"unsupported Wechatpay-Signature-Type {kind!r}")
    if signature.startswith(PROBE_PREFIX):
        raise SignatureInvalid("WeChat signature probe")
    key = keys.get(header(headers, "Wechatpay-Serial"))
    if key is None:
        raise SignatureInvalid("unknown Wechatpay-Serial")
    if now_ms is not None and abs(now_ms - int(timestamp) * 1000) > skew_max_s * 1000:
        raise SignatureInvalid("Wechatpay-Timestamp outside the accepted clock skew")
    try:
        raw = base64.b64decode(signature, validate=True)
        message = f"{timestamp}\n{nonce}\n".encode() + bytes(body) + b"\n"
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature) as exc:  # binascii.Error, or text not ASCII
        raise SignatureInvalid("v3 signature does not verify") from exc


def decrypt_resource(envelope: Mapping[str, Any], api_v3_key: bytes) -> tuple[str, dict[str, Any]]:
    """(original_type, decrypted resource object) of a verified notification envelope."""
    resource = envelope.get("resource")
    if not isinstance(resource, dict) or resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise NotificationInvalid("resource missing or not AEAD_AES_256_GCM")
    try:
        plain = AESGCM(api_v3_key).decrypt(
            require(resource, "nonce").encode(),
            base64.b64decode(require(resource, "ciphertext"), validate=True),
            str(resource.get("associated_data", "")).encode(),
        )
    except (ValueError, InvalidTag) as exc:  # binascii.Error, or text not ASCII
        raise SignatureInvalid("resource does not decrypt under the API v3 key") from exc
    return str(resource.get("original_type", "")), parse_json_object(plain, "resource")


def parse(
    headers: Mapping[str, str],
    body: bytes,
    *,
    keys: Mapping[str, rsa.RSAPublicKey],
    api_v3_key: bytes,
    mch_id: str,
    app_id: str,
    now_ms: int | None,
    skew_max_s: int,
) -> Payment | Refund:
    verify(headers, body, keys, now_ms=now_ms, skew_max_s=skew_max_s)
    original_type, resource = decrypt_resource(parse_json_object(body, "body"), api_v3_key)
    if resource.get("mchid") != mch_id:
        raise NotificationInvalid("mchid is not this merchant's")
    if original_type == "transaction":
        if resource.get("appid") != app_id:
            raise NotificationInvalid("appid is not this merchant's")
        return _payment(resource)
    if original_type == "refund":
        return _refund(resource)
    raise NotificationIgnored(
        f"resource type {original_type!r} is not a payment or refund", native_status=original_type
    )


def _payment(resource: Mapping[str, Any]) -> Payment:
    state = require(resource, "trade_state")
    if state != "SUCCESS":
        raise NotificationIgnored(f"payment not successful ({state})", native_status=state)
    attach = decode_attach(resource.get("attach"))
    try:
        return Payment(
            channel="wechat",
            channel_txn_id=require(resource, "transaction_id"),
            account_id=attach.account_id,
            amount=_fen(resource.get("amount"), "total"),
            fee=0,  # notifications carry no fee; the daily bill does
            paid_at_ms=rfc3339_ms(require(resource, "success_time")),
            merchant_order_id=str(resource.get("out_trade_no", "")),
            station_id=attach.station_id,
        )
    except ValueError as exc:
        raise NotificationInvalid(f"transaction fields: {exc}") from exc


def _refund(resource: Mapping[str, Any]) -> Refund:
    status = require(resource, "refund_status")
    if status != "SUCCESS":
        raise NotificationIgnored(f"refund not successful ({status})", native_status=status)
    try:
        return Refund(
            channel="wechat",
            channel_refund_id=require(resource, "refund_id"),
            channel_txn_id=require(resource, "transaction_id"),
            amount=_fen(resource.get("amount"), "refund"),
            fee=0,
            refunded_at_ms=rfc3339_ms(require(resource, "success_time")),
        )
    except ValueError as exc:
        raise NotificationInvalid(f"refund fields: {exc}") from exc


def _fen(amount: Any, name: str) -> int:
    """`amount.<name>`: JSON integer fen, in CNY."""
    if not isinstance(amount, dict) or amount.get("currency", "CNY") != "CNY":
        raise NotificationInvalid("amount missing or not in CNY")
    value = amount.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise NotificationInvalid(f"amount.{name} is not an integer number of fen")
    return value
