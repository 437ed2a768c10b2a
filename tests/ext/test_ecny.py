"""Digital RMB: SM2-signed notifications built here with throwaway switch.sm2 keys, and statements."""

from __future__ import annotations

import base64
import json

import pytest

from ext.ecny import EcnyAdapter, EcnyConfig
from ext.errors import (
    NotificationIgnored,
    NotificationInvalid,
    SignatureInvalid,
    StatementInvalid,
    SummaryMismatch,
)
from ext.records import Payment, Refund, StatementLine
from switch import sm2

MERCHANT_NO = "M100000000001"
SERIAL = "ECNY-KEY-2025"
TIMESTAMP = 1736906405
PAID_AT_MS = 1736906400000  # 2025-01-15 10:00:00 Beijing


@pytest.fixture(scope="module")
def operator_keys() -> tuple[str, str]:
    return sm2.generate_keypair()


@pytest.fixture
def ecny(operator_keys) -> EcnyAdapter:
    return EcnyAdapter(
        EcnyConfig(merchant_no=MERCHANT_NO, platform_keys={SERIAL: operator_keys[1]})
    )


def request(
    private_hex: str, message: dict, *, timestamp: int = TIMESTAMP, serial: str = SERIAL
) -> tuple[dict, bytes]:
    """The canonical string as documented: timestamp \\n nonce \\n body \\n, SM2 with the default id."""
    body = json.dumps(message, ensure_ascii=False).encode()
    nonce = "c9f0f895fb98ab91"
    signature = sm2.sign(private_hex, f"{timestamp}\n{nonce}\n".encode() + body + b"\n")
    headers = {
        "Ecny-Timestamp": str(timestamp),
        "Ecny-Nonce": nonce,
        "Ecny-Serial": serial,
        "Ecny-Signature": base64.b64encode(signature).decode(),
    }
    return headers, body


def payment(**changes) -> dict:
    message = {
        "event_type": "PAYMENT",
        "merchant_no": MERCHANT_NO,
        "txn_no": "E202501150000000001",
        "merchant_order_no": "TOPUP20250115000001",
        "amount": 10000,
        "fee": 0,
        "status": "SUCCESS",
        "finish_time": "2025-01-15T10:00:00+08:00",
        "attach": "fs1.1001.S01",
    }
    message.update(changes)
    return message


EXPECTED_PAYMENT = Payment(
    "ecny", "E202501150000000001", "1001", 10000, 0, PAID_AT_MS, "TOPUP20250115000001", "S01"
)


def test_payment(ecny, operator_keys):
    headers, body = request(operator_keys[0], payment())
    assert ecny.parse_notification(headers, body) == EXPECTED_PAYMENT
    assert ecny.parse_notification(headers, body) == EXPECTED_PAYMENT  # a replay: same record


def test_refund_of_a_payment_never_seen(ecny, operator_keys):
    message = payment(
        event_type="REFUND",
        txn_no="E202501150000000009",
        orig_txn_no="E202501100000000077",
        amount=2500,
        fee=1,
        finish_time="2025-01-15T11:00:00+08:00",
        attach=None,
    )
    headers, body = request(operator_keys[0], message)
    assert ecny.parse_notification(headers, body) == Refund(
        "ecny", "E202501150000000009", "E202501100000000077", 2500, 1, PAID_AT_MS + 3600_000
    )


def test_wrong_key(ecny):
    other_private, _ = sm2.generate_keypair()
    headers, body = request(other_private, payment())
    with pytest.raises(SignatureInvalid):
        ecny.parse_notification(headers, body)


def test_tampered_amount(ecny, operator_keys):
    headers, body = request(operator_keys[0], payment())
    with pytest.raises(SignatureInvalid):
        ecny.parse_notification(headers, body.replace(b'"amount": 10000', b'"amount": 99999'))


def test_signature_covers_timestamp_and_nonce(ecny, operator_keys):
    headers, body = request(operator_keys[0], payment())
    for name, value in (("Ecny-Timestamp", str(TIMESTAMP + 1)), ("Ecny-Nonce", "another")):
        with pytest.raises(SignatureInvalid):
            ecny.parse_notification({**headers, name: value}, body)


@pytest.mark.parametrize(
    "change",
    [
        {"Ecny-Serial": "OTHER"},
        {"Ecny-Signature": "%%%"},
        {"Ecny-Signature": ""},
        {"Ecny-Timestamp": "soon"},
        {"Ecny-Nonce": ""},
        {"Ecny-Nonce": "x" * 65},
    ],
)
def test_bad_headers(ecny, operator_keys, change):
    headers, body = request(operator_keys[0], payment())
    with pytest.raises(SignatureInvalid):
        ecny.parse_notification({**headers, **change}, body)


def test_timestamp_window(ecny, operator_keys):
    headers, body = request(operator_keys[0], payment())
    assert (
        ecny.parse_notification(headers, body, now_ms=TIMESTAMP * 1000 - 300_000)
        == EXPECTED_PAYMENT
    )
    with pytest.raises(SignatureInvalid):
        ecny.parse_notification(headers, body, now_ms=TIMESTAMP * 1000 + 300_001)


@pytest.mark.parametrize("status", ["FAIL", "CLOSED"])
def test_unsuccessful_is_ignored(ecny, operator_keys, status):
    headers, body = request(operator_keys[0], payment(status=status))
    with pytest.raises(NotificationIgnored) as caught:
        ecny.parse_notification(headers, body)
    assert caught.value.native_status == status


@pytest.mark.parametrize(
    "changes",
    [
        {"merchant_no": "M999"},
        {"amount": "10000"},
        {"amount": 100.0},
        {"amount": 0},
        {"fee": -1},
        {"txn_no": ""},
        {"finish_time": "2025-01-15 10:00:00"},
        {"attach": "x"},
        {"status": None},
    ],
)
def test_authentic_but_unusable(ecny, operator_keys, changes):
    headers, body = request(operator_keys[0], payment(**changes))
    with pytest.raises(NotificationInvalid):
        ecny.parse_notification(headers, body)


def test_not_json(ecny, operator_keys):
    nonce, body = "n", b"[1, 2]"
    signature = sm2.sign(operator_keys[0], f"{TIMESTAMP}\n{nonce}\n".encode() + body + b"\n")
    headers = {
        "Ecny-Timestamp": str(TIMESTAMP),
        "Ecny-Nonce": nonce,
        "Ecny-Serial": SERIAL,
        "Ecny-Signature": base64.b64encode(signature).decode(),
    }
    with pytest.raises(NotificationInvalid):
        ecny.parse_notification(headers, body)


def test_answers(ecny):
    assert ecny.ack(True) == (200, "application/json", b'{"code":"SUCCESS"}')
    assert ecny.ack(False).status == 500


def test_config_refuses_a_bad_key():
    with pytest.raises(ValueError):
        EcnyConfig(merchant_no=MERCHANT_NO, platform_keys={SERIAL: "04" + "00" * 64})
    with pytest.raises(ValueError):
        EcnyConfig(merchant_no=MERCHANT_NO)


# ================================================================ statement

LINES = [
    "txn_no,event_type,orig_txn_no,merchant_order_no,amount,fee,status,finish_time",
    "E202501150000000001,PAYMENT,,TOPUP-1,10000,6,SUCCESS,2025-01-15 10:00:00",
    "E202501150000000002,PAYMENT,,TOPUP-2,5000,0,CLOSED,2025-01-15 10:30:00",
    "E202501150000000009,REFUND,E202501100000000077,TOPUP-77,2500,1,SUCCESS,2025-01-15 11:00:00",
]
TOTAL = "#TOTAL,count=3,payment_amount=15000,refund_amount=2500,fee_amount=7"


def ecny_statement(lines=LINES, total=TOTAL, merchant=MERCHANT_NO) -> bytes:
    first = f"#ECNY-STATEMENT,version=1,merchant_no={merchant},business_date=2025-01-15"
    return "\r\n".join([first, *lines, total, ""]).encode()


def test_statement(ecny):
    assert list(ecny.parse_statement(ecny_statement(), business_date="2025-01-15")) == [
        StatementLine(
            "ecny",
            "2025-01-15",
            "E202501150000000001",
            "payment",
            10000,
            6,
            "success",
            PAID_AT_MS,
            "",
            "TOPUP-1",
        ),
        StatementLine(
            "ecny",
            "2025-01-15",
            "E202501150000000002",
            "payment",
            5000,
            0,
            "failed",
            PAID_AT_MS + 1800_000,
            "",
            "TOPUP-2",
        ),
        StatementLine(
            "ecny",
            "2025-01-15",
            "E202501150000000009",
            "refund",
            2500,
            1,
            "success",
            PAID_AT_MS + 3600_000,
            "E202501100000000077",
            "TOPUP-77",
        ),
    ]


@pytest.mark.parametrize(
    "total",
    [
        "#TOTAL,count=2,payment_amount=15000,refund_amount=2500,fee_amount=7",
        "#TOTAL,count=3,payment_amount=15001,refund_amount=2500,fee_amount=7",
        "#TOTAL,count=3,payment_amount=15000,refund_amount=2500,fee_amount=6",
    ],
)
def test_broken_totals(ecny, total):
    with pytest.raises(SummaryMismatch):
        list(ecny.parse_statement(ecny_statement(total=total)))


def test_truncated(ecny):
    with pytest.raises(SummaryMismatch):
        list(ecny.parse_statement(ecny_statement(total="")))


def test_statement_errors(ecny):
    broken = [
        ecny_statement(merchant="M999"),
        ecny_statement(lines=LINES[1:]),
        ecny_statement(lines=[*LINES, "E3,REFUND,,TOPUP-3,100,0,SUCCESS,2025-01-15 12:00:00"]),
        ecny_statement(lines=[*LINES, "E3,PAYMENT,,TOPUP-3,1.00,0,SUCCESS,2025-01-15 12:00:00"]),
        ecny_statement(total="#TOTAL,count=3"),
        ecny_statement() + b"more\r\n",
        b"\xff",
    ]
    for data in broken:
        with pytest.raises(StatementInvalid):
            list(ecny.parse_statement(data))
    with pytest.raises(StatementInvalid):
        list(ecny.parse_statement(ecny_statement(), business_date="2025-01-16"))
