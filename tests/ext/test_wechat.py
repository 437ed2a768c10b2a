"""WeChat Pay: v2 and v3 notifications built and signed here from throwaway keys, and trade bills."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ext import wechat_v2
from ext.errors import (
    NotificationIgnored,
    NotificationInvalid,
    SignatureInvalid,
    StatementInvalid,
    SummaryMismatch,
)
from ext.records import Payment, Refund, StatementLine
from ext.wechat import WechatAdapter, WechatConfig
from tests.ext.conftest import public_pem

MCH_ID = "1900000109"
APP_ID = "wx8888888888888888"
API_KEY = "192006250b4c09247ec02edce69f6a2d"
API_V3_KEY = "0123456789abcdefghijklmnopqrstuv"
SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PAID_AT_MS = 1736906400000  # 2025-01-15 10:00:00 Beijing


# ================================================================ API v2


def v2_sign(fields: dict[str, str], key: str, sign_type: str = "MD5") -> str:
    """Written from the documentation: sorted non-empty key=value&... + '&key=' + API key."""
    text = (
        "&".join(f"{k}={fields[k]}" for k in sorted(fields) if fields[k] and k != "sign")
        + f"&key={key}"
    )
    if sign_type == "MD5":
        return hashlib.md5(text.encode()).hexdigest().upper()
    return hmac.new(key.encode(), text.encode(), hashlib.sha256).hexdigest().upper()


def v2_xml(fields: dict[str, str]) -> bytes:
    return (
        "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()) + "</xml>"
    ).encode()


def v2_payment_fields(**changes: str) -> dict[str, str]:
    fields = {
        "appid": APP_ID,
        "attach": "fs1.1001.S01",
        "bank_type": "CMC",
        "cash_fee": "10000",
        "fee_type": "CNY",
        "is_subscribe": "Y",
        "mch_id": MCH_ID,
        "nonce_str": "5d2b6c2a8db53831f7eda20af46e531c",
        "openid": "oUpF8uMEb4qRXf22hE3X68TekukE",
        "out_trade_no": "TOPUP20250115000001",
        "result_code": "SUCCESS",
        "return_code": "SUCCESS",
        "time_end": "20250115100000",
        "total_fee": "10000",
        "trade_type": "JSAPI",
        "transaction_id": "4200002501202501150000000001",
        "device_info": "",  # empty fields are not signed
    }
    fields.update(changes)
    return fields


def signed_v2(fields: dict[str, str], key: str = API_KEY, sign_type: str = "MD5") -> bytes:
    if sign_type != "MD5":
        fields = {**fields, "sign_type": sign_type}
    return v2_xml({**fields, "sign": v2_sign(fields, key, sign_type)})


@pytest.fixture
def v2() -> WechatAdapter:
    return WechatAdapter(
        WechatConfig(mch_id=MCH_ID, app_id=APP_ID, api_version="v2", api_key=API_KEY)
    )


EXPECTED_PAYMENT = Payment(
    channel="wechat",
    channel_txn_id="4200002501202501150000000001",
    account_id="1001",
    amount=10000,
    fee=0,
    paid_at_ms=PAID_AT_MS,
    merchant_order_id="TOPUP20250115000001",
    station_id="S01",
)


def test_v2_signature_matches_the_official_example():
    # pay.weixin.qq.com 签名算法: the documented example and both of its signatures.
    fields = {
        "appid": "wxd930ea5d5a258f4f",
        "mch_id": "10000100",
        "device_info": "1000",
        "body": "test",
        "nonce_str": "ibuaiVcKdpRxkhJA",
    }
    assert wechat_v2.sign(fields, API_KEY, "MD5") == "9A0A8659F005D6984697E2CA0A9CF3B7"
    assert (
        wechat_v2.sign(fields, API_KEY, "HMAC-SHA256")
        == "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    )


@pytest.mark.parametrize("sign_type", ["MD5", "HMAC-SHA256"])
def test_v2_payment(v2, sign_type):
    assert (
        v2.parse_notification({}, signed_v2(v2_payment_fields(), sign_type=sign_type))
        == EXPECTED_PAYMENT
    )


def test_v2_replay_gives_the_same_record(v2):
    body = signed_v2(v2_payment_fields())
    first, second = v2.parse_notification({}, body), v2.parse_notification({}, body)
    assert first == second
    assert first.to_proto().SerializeToString() == second.to_proto().SerializeToString()


def test_v2_wrong_key(v2):
    with pytest.raises(SignatureInvalid):
        v2.parse_notification({}, signed_v2(v2_payment_fields(), key="f" * 32))


def test_v2_tampered_amount(v2):
    body = signed_v2(v2_payment_fields()).replace(
        b"<total_fee><![CDATA[10000]]>", b"<total_fee><![CDATA[99999]]>"
    )
    assert b"99999" in body
    with pytest.raises(SignatureInvalid):
        v2.parse_notification({}, body)


def test_v2_added_field_breaks_the_signature(v2):
    body = signed_v2(v2_payment_fields()).replace(b"</xml>", b"<coupon_fee>100</coupon_fee></xml>")
    with pytest.raises(SignatureInvalid):
        v2.parse_notification({}, body)


def test_v2_missing_signature(v2):
    with pytest.raises(SignatureInvalid):
        v2.parse_notification({}, v2_xml(v2_payment_fields()))


def test_v2_sign_type_not_accepted():
    adapter = WechatAdapter(
        WechatConfig(
            mch_id=MCH_ID,
            app_id=APP_ID,
            api_version="v2",
            api_key=API_KEY,
            v2_sign_types=("HMAC-SHA256",),
        )
    )
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification({}, signed_v2(v2_payment_fields(), sign_type="MD5"))
    assert (
        adapter.parse_notification({}, signed_v2(v2_payment_fields(), sign_type="HMAC-SHA256"))
        == EXPECTED_PAYMENT
    )


def test_v2_return_code_fail_is_unsigned(v2):
    with pytest.raises(SignatureInvalid):
        v2.parse_notification({}, v2_xml({"return_code": "FAIL", "return_msg": "签名失败"}))


def test_v2_unsuccessful_payment_is_ignored(v2):
    fields = v2_payment_fields(result_code="FAIL", err_code="ORDERNOTEXIST")
    with pytest.raises(NotificationIgnored) as caught:
        v2.parse_notification({}, signed_v2(fields))
    assert caught.value.native_status == "FAIL"


@pytest.mark.parametrize(
    "changes",
    [
        {"transaction_id": ""},
        {"total_fee": ""},
        {"total_fee": "0"},
        {"total_fee": "100.00"},
        {"time_end": "2025-01-15"},
        {"attach": ""},
        {"attach": "somebody else's"},
        {"fee_type": "USD"},
        {"mch_id": "1900000999"},
        {"appid": "wx1"},
    ],
)
def test_v2_signed_but_unusable(v2, changes):
    with pytest.raises(NotificationInvalid):
        v2.parse_notification({}, signed_v2(v2_payment_fields(**changes)))


def test_v2_refuses_a_dtd(v2):
    body = b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>'
    with pytest.raises(NotificationInvalid):
        v2.parse_notification({}, body)


def test_v2_refuses_garbage_and_oversize(v2):
    for body in (
        b"",
        b"not xml",
        b"<html></html>",
        b"<xml><a><b>1</b></a></xml>",
        b"<xml>" + b" " * 70000 + b"</xml>",
    ):
        with pytest.raises(NotificationInvalid):
            v2.parse_notification({}, body)


def v2_refund_body(inner: dict[str, str], key: str = API_KEY) -> bytes:
    """req_info: AES-256-ECB, PKCS#7, key = lowercase hex MD5 of the API key, base64."""
    plain = (
        "<root>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in inner.items()) + "</root>"
    ).encode()
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(
        algorithms.AES(hashlib.md5(key.encode()).hexdigest().encode()), modes.ECB()
    ).encryptor()
    req_info = base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()
    outer = {
        "return_code": "SUCCESS",
        "appid": APP_ID,
        "mch_id": MCH_ID,
        "nonce_str": "TeqClE3i0mvn3DrK",
        "req_info": req_info,
    }
    return v2_xml(outer)


REFUND_INNER = {
    "out_refund_no": "RF20250115000001",
    "out_trade_no": "TOPUP20250110000077",
    "refund_account": "REFUND_SOURCE_RECHARGE_FUNDS",
    "refund_fee": "2500",
    "refund_id": "50300002502025011500000000001",
    "refund_recv_accout": "支付用户零钱",
    "refund_request_source": "API",
    "refund_status": "SUCCESS",
    "settlement_refund_fee": "2500",
    "settlement_total_fee": "10000",
    "success_time": "2025-01-15 11:00:00",
    "total_fee": "10000",
    "transaction_id": "4200002501202501100000000077",
}


def test_v2_refund_of_a_payment_never_seen(v2):
    # A fresh adapter has seen no payment at all: the refund is still a Refund record.
    assert v2.parse_notification({}, v2_refund_body(REFUND_INNER)) == Refund(
        channel="wechat",
        channel_refund_id="50300002502025011500000000001",
        channel_txn_id="4200002501202501100000000077",
        amount=2500,
        fee=0,
        refunded_at_ms=PAID_AT_MS + 3600_000,
    )


def test_v2_refund_under_another_key(v2):
    with pytest.raises(SignatureInvalid):
        v2.parse_notification({}, v2_refund_body(REFUND_INNER, key="0" * 32))


def test_v2_refund_tampered_ciphertext(v2):
    body = v2_refund_body(REFUND_INNER)
    start = body.index(b"<req_info><![CDATA[") + len(b"<req_info><![CDATA[")
    flipped = b"A" if body[start + 5 : start + 6] != b"A" else b"B"
    with pytest.raises(SignatureInvalid):
        v2.parse_notification({}, body[: start + 5] + flipped + body[start + 6 :])


def test_v2_refund_closed_is_ignored(v2):
    with pytest.raises(NotificationIgnored):
        v2.parse_notification({}, v2_refund_body({**REFUND_INNER, "refund_status": "REFUNDCLOSE"}))


def test_v2_refund_missing_fields(v2):
    inner = {k: v for k, v in REFUND_INNER.items() if k != "refund_id"}
    with pytest.raises(NotificationInvalid):
        v2.parse_notification({}, v2_refund_body(inner))


def test_v2_answers(v2):
    ok = v2.ack(True)
    assert ok == (
        200,
        "application/xml",
        b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>",
    )
    assert b"<return_code><![CDATA[FAIL]]></return_code>" in v2.ack(False).body


# ================================================================ API v3


@pytest.fixture
def v3(channel_key) -> WechatAdapter:
    config = WechatConfig(
        mch_id=MCH_ID,
        app_id=APP_ID,
        api_v3_key=API_V3_KEY,
        platform_keys={SERIAL: public_pem(channel_key)},
    )
    return WechatAdapter(config)


def encrypt_resource(plain: dict, original_type: str, key: str = API_V3_KEY) -> dict:
    nonce, associated = (
        "fdasflkja484",
        "transaction" if original_type == "transaction" else "refund",
    )
    ciphertext = AESGCM(key.encode()).encrypt(
        nonce.encode(), json.dumps(plain).encode(), associated.encode()
    )
    return {
        "original_type": original_type,
        "algorithm": "AEAD_AES_256_GCM",
        "ciphertext": base64.b64encode(ciphertext).decode(),
        "associated_data": associated,
        "nonce": nonce,
    }


def v3_request(
    private_key, envelope: dict, *, timestamp: int = 1736906405, serial: str = SERIAL
) -> tuple[dict, bytes]:
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
    nonce = "593BEC0C930BF1AFEB40B4A08C8FB242"
    message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
    signature = private_key.sign(message, rsa_padding.PKCS1v15(), hashes.SHA256())
    headers = {
        "Wechatpay-Timestamp": str(timestamp),
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": base64.b64encode(signature).decode(),
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    return headers, body


def transaction(**changes) -> dict:
    plain = {
        "mchid": MCH_ID,
        "appid": APP_ID,
        "out_trade_no": "TOPUP20250115000001",
        "transaction_id": "4200002501202501150000000001",
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "CMC",
        "attach": "fs1.1001.S01",
        "success_time": "2025-01-15T10:00:00+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {
            "total": 10000,
            "payer_total": 10000,
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    }
    plain.update(changes)
    return plain


def envelope(resource: dict, event_type: str = "TRANSACTION.SUCCESS") -> dict:
    return {
        "id": "EV-2018022511223320873",
        "create_time": "2025-01-15T10:00:05+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功",
        "resource": resource,
    }


def test_v3_payment(v3, channel_key):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(), "transaction"))
    )
    assert v3.parse_notification(headers, body) == EXPECTED_PAYMENT
    # Header names are case-insensitive.
    assert (
        v3.parse_notification({k.lower(): v for k, v in headers.items()}, body) == EXPECTED_PAYMENT
    )


def test_v3_platform_certificate_instead_of_public_key(channel_key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(channel_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(channel_key, hashes.SHA256())
    )
    config = WechatConfig(
        mch_id=MCH_ID,
        app_id=APP_ID,
        api_v3_key=API_V3_KEY,
        platform_keys={SERIAL: cert.public_bytes(Encoding.PEM).decode()},
    )
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(), "transaction"))
    )
    assert WechatAdapter(config).parse_notification(headers, body) == EXPECTED_PAYMENT


def test_v3_replay_gives_the_same_record(v3, channel_key):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(), "transaction"))
    )
    assert v3.parse_notification(headers, body) == v3.parse_notification(headers, body)


def test_v3_wrong_signing_key(v3, other_key):
    headers, body = v3_request(other_key, envelope(encrypt_resource(transaction(), "transaction")))
    with pytest.raises(SignatureInvalid):
        v3.parse_notification(headers, body)


def test_v3_unknown_serial(v3, channel_key):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(), "transaction")), serial="PUB_KEY_ID_X"
    )
    with pytest.raises(SignatureInvalid):
        v3.parse_notification(headers, body)


def test_v3_tampered_body(v3, channel_key):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(), "transaction"))
    )
    tampered = body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESs")
    with pytest.raises(SignatureInvalid):
        v3.parse_notification(headers, tampered)


def test_v3_resource_encrypted_with_another_key(v3, channel_key):
    resource = encrypt_resource(
        transaction(amount={"total": 99999, "currency": "CNY"}), "transaction", key="x" * 32
    )
    headers, body = v3_request(channel_key, envelope(resource))
    with pytest.raises(SignatureInvalid):
        v3.parse_notification(headers, body)


def test_v3_signature_probe_fails(v3, channel_key):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(), "transaction"))
    )
    headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + headers["Wechatpay-Signature"]
    with pytest.raises(SignatureInvalid, match="probe"):
        v3.parse_notification(headers, body)


@pytest.mark.parametrize(
    "missing", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"]
)
def test_v3_missing_headers(v3, channel_key, missing):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(), "transaction"))
    )
    del headers[missing]
    with pytest.raises(SignatureInvalid):
        v3.parse_notification(headers, body)


def test_v3_timestamp_window(v3, channel_key):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(), "transaction")), timestamp=1736906405
    )
    assert v3.parse_notification(headers, body, now_ms=1736906405_000 + 299_000) == EXPECTED_PAYMENT
    with pytest.raises(SignatureInvalid):
        v3.parse_notification(headers, body, now_ms=1736906405_000 + 301_000)


def test_v3_unpaid_is_ignored(v3, channel_key):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(trade_state="NOTPAY"), "transaction"))
    )
    with pytest.raises(NotificationIgnored) as caught:
        v3.parse_notification(headers, body)
    assert caught.value.native_status == "NOTPAY"


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": None},
        {"amount": {"total": "10000", "currency": "CNY"}},
        {"amount": {"total": 100, "currency": "USD"}},
        {"transaction_id": ""},
        {"success_time": "2025-01-15 10:00:00"},
        {"mchid": "1900000999"},
        {"appid": "wx2"},
        {"attach": None},
    ],
)
def test_v3_authentic_but_unusable(v3, channel_key, changes):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(transaction(**changes), "transaction"))
    )
    with pytest.raises(NotificationInvalid):
        v3.parse_notification(headers, body)


def refund_resource(**changes) -> dict:
    plain = {
        "mchid": MCH_ID,
        "out_trade_no": "TOPUP20250110000077",
        "transaction_id": "4200002501202501100000000077",
        "out_refund_no": "RF20250115000001",
        "refund_id": "50300002502025011500000000001",
        "refund_status": "SUCCESS",
        "success_time": "2025-01-15T11:00:00+08:00",
        "user_received_account": "支付用户零钱",
        "amount": {"total": 10000, "refund": 2500, "payer_total": 10000, "payer_refund": 2500},
    }
    plain.update(changes)
    return plain


def test_v3_refund_of_a_payment_never_seen(v3, channel_key):
    headers, body = v3_request(
        channel_key, envelope(encrypt_resource(refund_resource(), "refund"), "REFUND.SUCCESS")
    )
    assert v3.parse_notification(headers, body) == Refund(
        "wechat",
        "50300002502025011500000000001",
        "4200002501202501100000000077",
        2500,
        0,
        PAID_AT_MS + 3600_000,
    )


@pytest.mark.parametrize("status", ["ABNORMAL", "CLOSED"])
def test_v3_failed_refunds_are_ignored(v3, channel_key, status):
    resource = encrypt_resource(refund_resource(refund_status=status), "refund")
    headers, body = v3_request(channel_key, envelope(resource, f"REFUND.{status}"))
    with pytest.raises(NotificationIgnored):
        v3.parse_notification(headers, body)


def test_v3_v2_body_is_refused(v3):
    with pytest.raises(SignatureInvalid):
        v3.parse_notification({}, signed_v2(v2_payment_fields()))


def test_v3_answers(v3):
    assert v3.ack(True) == (204, "", b"")
    status, content_type, body = v3.ack(False)
    assert (status, content_type) == (500, "application/json")
    assert json.loads(body) == {"code": "FAIL", "message": "失败"}


def test_config_is_checked(channel_key):
    with pytest.raises(ValueError):
        WechatConfig(mch_id=MCH_ID, app_id=APP_ID, api_v3_key=API_V3_KEY)  # no platform key
    with pytest.raises(ValueError):
        WechatConfig(
            mch_id=MCH_ID,
            app_id=APP_ID,
            api_v3_key="short",
            platform_keys={SERIAL: public_pem(channel_key)},
        )
    with pytest.raises(ValueError):
        WechatConfig(mch_id=MCH_ID, app_id=APP_ID, api_version="v2")  # no API key
    with pytest.raises(ValueError):
        WechatConfig(
            mch_id=MCH_ID, app_id=APP_ID, api_version="v2", api_key=API_KEY, v2_sign_types=("SHA1",)
        )


# ================================================================ trade bill

BILL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,"
    "应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,"
    "手续费,费率,订单金额,申请退款金额,费率备注"
)
SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)


def bill_row(
    time,
    txn,
    order,
    state,
    settle,
    refund_id="0",
    out_refund="0",
    refund="0.00",
    refund_state="",
    fee="0.00000",
    total="0.00",
    applied="0.00",
    product="加油卡充值",
) -> str:
    cells = [
        time,
        APP_ID,
        MCH_ID,
        "0",
        "",
        txn,
        order,
        "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        "JSAPI",
        state,
        "CMC",
        "CNY",
        settle,
        "0.00",
        refund_id,
        out_refund,
        refund,
        "0.00",
        "ORIGINAL" if refund_id != "0" else "",
        refund_state,
        product,
        "fs1.1001.S01",
        fee,
        "0.60%",
        total,
        applied,
        "",
    ]
    return ",".join("`" + cell for cell in cells)


ROWS = [
    bill_row(
        "2025-01-15 08:01:02",
        "4200000001",
        "T1",
        "SUCCESS",
        "100.00",
        fee="0.60000",
        total="100.00",
    ),
    bill_row(
        "2025-01-15 09:30:00",
        "4200000002",
        "T2",
        "SUCCESS",
        "200.00",
        fee="1.20000",
        total="200.00",
    ),
    bill_row("2025-01-15 10:00:00", "4200000003", "T3", "REVOKED", "0.00", total="50.00"),
    bill_row(
        "2025-01-15 11:00:00",
        "4200000001",
        "T1",
        "REFUND",
        "0.00",
        "5030000001",
        "R1",
        "25.00",
        "SUCCESS",
        fee="-0.15000",
        applied="25.00",
    ),
    bill_row(
        "2025-01-15 23:59:59",
        "4200000009",
        "T9",
        "REFUND",
        "0.00",
        "5030000002",
        "R2",
        "10.00",
        "PROCESSING",
        fee="-0.06000",
        applied="10.00",
    ),
]
SUMMARY = "`5,`300.00,`35.00,`0.00,`1.59000,`350.00,`35.00"


def bill(rows=ROWS, summary=SUMMARY, newline="\r\n") -> bytes:
    return newline.join(["\ufeff" + BILL_HEADER, *rows, SUMMARY_HEADER, summary, ""]).encode()


def day_ms(hms: str) -> int:
    h, m, s = map(int, hms.split(":"))
    return 1736870400000 + ((h * 60 + m) * 60 + s) * 1000  # 2025-01-15 00:00 Beijing


EXPECTED_BILL = [
    StatementLine(
        "wechat",
        "2025-01-15",
        "4200000001",
        "payment",
        10000,
        60,
        "success",
        day_ms("08:01:02"),
        "",
        "T1",
    ),
    StatementLine(
        "wechat",
        "2025-01-15",
        "4200000002",
        "payment",
        20000,
        120,
        "success",
        day_ms("09:30:00"),
        "",
        "T2",
    ),
    StatementLine(
        "wechat",
        "2025-01-15",
        "4200000003",
        "payment",
        5000,
        0,
        "failed",
        day_ms("10:00:00"),
        "",
        "T3",
    ),
    StatementLine(
        "wechat",
        "2025-01-15",
        "5030000001",
        "refund",
        2500,
        15,
        "success",
        day_ms("11:00:00"),
        "4200000001",
        "T1",
    ),
    StatementLine(
        "wechat",
        "2025-01-15",
        "5030000002",
        "refund",
        1000,
        6,
        "failed",
        day_ms("23:59:59"),
        "4200000009",
        "T9",
    ),
]


def test_bill(v3):
    assert list(v3.parse_statement(bill(), business_date="2025-01-15")) == EXPECTED_BILL


def test_bill_with_lf_and_without_a_date(v2):
    # The bill has no date of its own: the first line's Beijing date is used.
    assert list(v2.parse_statement(bill(newline="\n"))) == EXPECTED_BILL


def test_bill_of_another_day_keeps_the_callers_date(v3):
    lines = list(v3.parse_statement(bill(), business_date="2025-01-16"))
    assert {line.business_date for line in lines} == {"2025-01-16"}


def test_empty_bill(v3):
    assert (
        list(v3.parse_statement(bill(rows=[], summary="`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00")))
        == []
    )


def test_older_bill_without_order_amount_columns(v3):
    drop = {24, 25, 26}
    header = ",".join(c for i, c in enumerate(BILL_HEADER.split(",")) if i not in drop)
    rows = [
        ",".join(c for i, c in enumerate(row.split(",")) if i not in drop)
        for row in ROWS[:2] + ROWS[3:4]
    ]
    data = "\n".join(
        [
            header,
            *rows,
            "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额",
            "`3,`300.00,`25.00,`0.00,`1.65000",
            "",
        ]
    ).encode()
    lines = list(v3.parse_statement(data, business_date="2025-01-15"))
    assert [(line.channel_txn_id, line.amount, line.fee) for line in lines] == [
        ("4200000001", 10000, 60),
        ("4200000002", 20000, 120),
        ("5030000001", 2500, 15),
    ]


@pytest.mark.parametrize(
    "summary",
    [
        "`4,`300.00,`35.00,`0.00,`1.59000,`350.00,`35.00",  # count
        "`5,`300.01,`35.00,`0.00,`1.59000,`350.00,`35.00",  # 应结订单总金额
        "`5,`300.00,`35.00,`0.00,`1.58000,`350.00,`35.00",  # 手续费总金额
        "`5,`300.00,`35.00,`0.00,`1.59000,`350.00,`34.00",
    ],  # 申请退款总金额
)
def test_broken_summary_is_detected(v3, summary):
    with pytest.raises(SummaryMismatch):
        list(v3.parse_statement(bill(summary=summary), business_date="2025-01-15"))


def test_altered_line_is_detected_by_the_summary(v3):
    rows = [ROWS[0].replace("`100.00", "`110.00"), *ROWS[1:]]
    with pytest.raises(SummaryMismatch):
        list(v3.parse_statement(bill(rows=rows), business_date="2025-01-15"))


def test_summary_must_have_every_total(v3):
    header = SUMMARY_HEADER.replace(",手续费总金额", "")
    data = "\r\n".join(
        [BILL_HEADER, *ROWS, header, "`5,`300.00,`35.00,`0.00,`350.00,`35.00"]
    ).encode()
    with pytest.raises(StatementInvalid, match="lacks 手续费总金额"):
        list(v3.parse_statement(data, business_date="2025-01-15"))


def test_truncated_bill_is_detected(v3):
    data = "\r\n".join([BILL_HEADER, *ROWS[:3]]).encode()
    lines = v3.parse_statement(data, business_date="2025-01-15")
    assert next(lines).channel_txn_id == "4200000001"  # lines stream before the check
    with pytest.raises(SummaryMismatch):
        list(lines)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (ROWS[0].replace(",`JSAPI", ",JSAPI"), "backtick"),
        (ROWS[0] + ",`extra", "fields"),
        (ROWS[0].replace("`100.00,", "`100.005,", 1), "decimal places"),
        (ROWS[0].replace("`SUCCESS", "`PAID"), "交易状态"),
        (ROWS[0].replace("`2025-01-15 08:01:02", "`2025/01/15 08:01:02"), "time"),
        (
            ROWS[3].replace("`25.00,`SUCCESS", "`0.00,`SUCCESS").replace("`25.00,`", "`0.00,`"),
            "refund amount",
        ),
    ],
)
def test_malformed_lines_name_their_line(v3, row, message):
    with pytest.raises(StatementInvalid) as caught:
        list(v3.parse_statement(bill(rows=[row]), business_date="2025-01-15"))
    assert caught.value.line_no == 2
    assert message in str(caught.value)


def test_bill_structure_errors(v3):
    for data in (
        b"",
        BILL_HEADER.replace("微信订单号", "订单号").encode(),
        bill() + b"`trailing\r\n",
        b"\xff\xfe",
    ):
        with pytest.raises(StatementInvalid):
            list(v3.parse_statement(data, business_date="2025-01-15"))
    with pytest.raises(StatementInvalid):
        list(v3.parse_statement(bill(), business_date="2025-13-01"))


def test_generated_bill_streams_many_lines(v3):
    count = 5000
    rows = [
        bill_row(
            f"2025-01-15 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}",
            f"42{i:08d}",
            f"T{i}",
            "SUCCESS",
            f"{i + 1}.{i % 100:02d}",
            fee="0.01000",
            total=f"{i + 1}.{i % 100:02d}",
        )
        for i in range(count)
    ]
    total = sum((i + 1) * 100 + i % 100 for i in range(count))
    summary = f"`{count},`{total // 100}.{total % 100:02d},`0.00,`0.00,`{count // 100}.{count % 100:02d}000,`{total // 100}.{total % 100:02d},`0.00"
    lines = list(v3.parse_statement(bill(rows=rows, summary=summary), business_date="2025-01-15"))
    assert len(lines) == count and sum(line.amount for line in lines) == total


def test_comma_inside_a_field_stays_in_its_field(v3):
    rows = [ROWS[0].replace("`加油卡充值", "`加油卡,充值"), *ROWS[1:]]
    assert list(v3.parse_statement(bill(rows=rows), business_date="2025-01-15")) == EXPECTED_BILL
