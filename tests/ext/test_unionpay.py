"""UnionPay: 5.1.0 back notifications signed by a certificate chain built here, and ZM files."""

from __future__ import annotations

import base64
import datetime
import hashlib
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ext.errors import NotificationIgnored, NotificationInvalid, SignatureInvalid, StatementInvalid
from ext.records import Payment, Refund, StatementLine
from ext.unionpay import UnionpayAdapter, UnionpayConfig
from tests.ext.conftest import new_rsa_key

MER_ID = "777290058110048"
NOW = datetime.datetime(2025, 1, 15, 3, 0, tzinfo=datetime.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
PAID_AT_MS = 1736906400000  # 2025-01-15 10:00:00 Beijing
UNIONPAY_CN = "041@Z12345678@中国银联股份有限公司@00000001"


def certificate(subject_cn, key, issuer_cn, issuer_key, *, ca, days=(-30, 365)):
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.COMMON_NAME, subject_cn),
        ]
    )
    issuer = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0]))
        .not_valid_after(NOW + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


class Pki:
    """A stand-in for UnionPay's root, middle and signing certificates."""

    def __init__(self) -> None:
        self.root_key, self.middle_key, self.sign_key = new_rsa_key(), new_rsa_key(), new_rsa_key()
        self.root = certificate(
            "CFCA TEST OCA1 ROOT", self.root_key, "CFCA TEST OCA1 ROOT", self.root_key, ca=True
        )
        self.middle = certificate(
            "CFCA TEST OCA1", self.middle_key, "CFCA TEST OCA1 ROOT", self.root_key, ca=True
        )
        self.sign_cert = self.issue(UNIONPAY_CN, self.sign_key)

    def issue(self, cn, key, *, days=(-30, 365)):
        return certificate(cn, key, "CFCA TEST OCA1", self.middle_key, ca=False, days=days)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def unionpay(pki) -> UnionpayAdapter:
    return UnionpayAdapter(
        UnionpayConfig(mer_id=MER_ID, root_cert_pem=pem(pki.root), middle_cert_pem=pem(pki.middle))
    )


def signed(params: dict[str, str], key, cert) -> bytes:
    """Written from the ACP SDK: sorted name=value&... without `signature`, SHA-256 hex, SHA256withRSA."""
    params = {**params, "signPubKeyCert": pem(cert)}
    content = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
    digest_hex = hashlib.sha256(content.encode()).hexdigest()
    signature = key.sign(digest_hex.encode(), padding.PKCS1v15(), hashes.SHA256())
    return urlencode({**params, "signature": base64.b64encode(signature).decode()}).encode()


def consume(**changes: str) -> dict[str, str]:
    params = {
        "accessType": "0",
        "bizType": "000201",
        "currencyCode": "156",
        "encoding": "UTF-8",
        "merId": MER_ID,
        "orderId": "TOPUP20250115000001",
        "queryId": "772501151000000000011",
        "reqReserved": "fs1.1001.S01",
        "respCode": "00",
        "respMsg": "成功[0000000]",
        "settleAmt": "10000",
        "settleCurrencyCode": "156",
        "settleDate": "0115",
        "signMethod": "01",
        "traceNo": "000001",
        "traceTime": "0115100000",
        "txnAmt": "10000",
        "txnSubType": "01",
        "txnTime": "20250115095950",
        "txnType": "01",
        "version": "5.1.0",
        "accNo": "6216***********0018",
        "payCardType": "01",
    }
    params.update(changes)
    return params


EXPECTED_PAYMENT = Payment(
    channel="unionpay",
    channel_txn_id="772501151000000000011",
    account_id="1001",
    amount=10000,
    fee=0,
    paid_at_ms=PAID_AT_MS,
    merchant_order_id="TOPUP20250115000001",
    station_id="S01",
)


def test_payment(unionpay, pki):
    body = signed(consume(), pki.sign_key, pki.sign_cert)
    assert unionpay.parse_notification({}, body, now_ms=NOW_MS) == EXPECTED_PAYMENT
    assert (
        unionpay.parse_notification({}, body, now_ms=NOW_MS) == EXPECTED_PAYMENT
    )  # a replay: same record


def test_success_with_defects_is_a_payment(unionpay, pki):
    body = signed(consume(respCode="A6"), pki.sign_key, pki.sign_cert)
    assert unionpay.parse_notification({}, body, now_ms=NOW_MS) == EXPECTED_PAYMENT


def test_trace_time_year_comes_from_the_order(unionpay, pki):
    body = signed(
        consume(txnTime="20241231235950", traceTime="0101000010"), pki.sign_key, pki.sign_cert
    )
    assert (
        unionpay.parse_notification({}, body, now_ms=NOW_MS).paid_at_ms == 1735660810000
    )  # 2025-01-01 00:00:10


@pytest.mark.parametrize("txn_type", ["04", "31"])
def test_refund_of_a_payment_never_seen(unionpay, pki, txn_type):
    params = consume(
        txnType=txn_type,
        queryId="772501151100000000022",
        origQryId="772501101000000000077",
        txnAmt="2500",
        traceTime="0115110000",
        txnTime="20250115105950",
        reqReserved="",
    )
    refund = unionpay.parse_notification(
        {}, signed(params, pki.sign_key, pki.sign_cert), now_ms=NOW_MS
    )
    assert refund == Refund(
        "unionpay", "772501151100000000022", "772501101000000000077", 2500, 0, PAID_AT_MS + 3600_000
    )


def test_tampered_amount(unionpay, pki):
    body = signed(consume(), pki.sign_key, pki.sign_cert).replace(b"txnAmt=10000", b"txnAmt=99999")
    with pytest.raises(SignatureInvalid):
        unionpay.parse_notification({}, body, now_ms=NOW_MS)


def test_signed_by_another_key_than_the_certificate(unionpay, pki, other_key):
    with pytest.raises(SignatureInvalid):
        unionpay.parse_notification({}, signed(consume(), other_key, pki.sign_cert), now_ms=NOW_MS)


def test_certificate_not_issued_by_unionpay(unionpay, other_key):
    forged = certificate(
        UNIONPAY_CN, other_key, "CFCA TEST OCA1", other_key, ca=False
    )  # right names, own key
    with pytest.raises(SignatureInvalid):
        unionpay.parse_notification({}, signed(consume(), other_key, forged), now_ms=NOW_MS)


def test_certificate_of_another_owner(unionpay, pki, other_key):
    cert = pki.issue("041@Z12345678@Some Bank@00000001", other_key)
    with pytest.raises(SignatureInvalid):
        unionpay.parse_notification({}, signed(consume(), other_key, cert), now_ms=NOW_MS)


def test_test_environment_owner_needs_cn_validation_off(pki, other_key):
    cert = pki.issue("041@Z12345678@00040000:SIGN@00000001", other_key)
    body = signed(consume(), other_key, cert)
    strict = UnionpayAdapter(UnionpayConfig(MER_ID, pem(pki.root), pem(pki.middle)))
    with pytest.raises(SignatureInvalid):
        strict.parse_notification({}, body, now_ms=NOW_MS)
    lenient = UnionpayAdapter(
        UnionpayConfig(MER_ID, pem(pki.root), pem(pki.middle), validate_cn_name=False)
    )
    assert lenient.parse_notification({}, body, now_ms=NOW_MS) == EXPECTED_PAYMENT


def test_expired_certificate(unionpay, pki):
    cert = pki.issue(UNIONPAY_CN, pki.sign_key, days=(-400, -1))
    with pytest.raises(SignatureInvalid):
        unionpay.parse_notification({}, signed(consume(), pki.sign_key, cert), now_ms=NOW_MS)
    later = NOW_MS + 366 * 86400_000
    with pytest.raises(SignatureInvalid):
        unionpay.parse_notification(
            {}, signed(consume(), pki.sign_key, pki.sign_cert), now_ms=later
        )


@pytest.mark.parametrize(
    "change", [{"version": "5.0.0"}, {"signMethod": "11"}, {"signPubKeyCert": "garbage"}]
)
def test_unsupported_or_broken_signing(unionpay, pki, change):
    body = signed(consume(), pki.sign_key, pki.sign_cert)
    params = dict(pair.split("=", 1) for pair in body.decode().split("&"))
    key, value = next(iter(change.items()))
    params[key] = value
    with pytest.raises(SignatureInvalid):
        unionpay.parse_notification(
            {}, "&".join(f"{k}={v}" for k, v in params.items()).encode(), now_ms=NOW_MS
        )


def test_missing_signature(unionpay, pki):
    body = signed(consume(), pki.sign_key, pki.sign_cert)
    without = b"&".join(pair for pair in body.split(b"&") if not pair.startswith(b"signature="))
    with pytest.raises(SignatureInvalid):
        unionpay.parse_notification({}, without, now_ms=NOW_MS)


@pytest.mark.parametrize("code", ["01", "03", "05", "12"])
def test_failed_transactions_are_ignored(unionpay, pki, code):
    with pytest.raises(NotificationIgnored) as caught:
        unionpay.parse_notification(
            {}, signed(consume(respCode=code), pki.sign_key, pki.sign_cert), now_ms=NOW_MS
        )
    assert caught.value.native_status == code


def test_other_transaction_types_are_ignored(unionpay, pki):
    with pytest.raises(NotificationIgnored):
        unionpay.parse_notification(
            {}, signed(consume(txnType="02"), pki.sign_key, pki.sign_cert), now_ms=NOW_MS
        )


@pytest.mark.parametrize(
    "changes",
    [
        {"merId": "777290058110099"},
        {"currencyCode": "840"},
        {"txnAmt": "100.00"},
        {"txnAmt": "0"},
        {"queryId": ""},
        {"reqReserved": ""},
        {"traceTime": "1315100000"},
        {"encoding": "BIG5"},
    ],
)
def test_authentic_but_unusable(unionpay, pki, changes):
    with pytest.raises(NotificationInvalid):
        unionpay.parse_notification(
            {}, signed(consume(**changes), pki.sign_key, pki.sign_cert), now_ms=NOW_MS
        )


def test_refund_without_original(unionpay, pki):
    params = {k: v for k, v in consume(txnType="04").items()}
    with pytest.raises(NotificationInvalid):
        unionpay.parse_notification({}, signed(params, pki.sign_key, pki.sign_cert), now_ms=NOW_MS)


def test_answers(unionpay):
    assert unionpay.ack(True).status == 200
    assert unionpay.ack(False).status != 200


# ================================================================ ZM reconciliation file

# Field widths of the ZM record as in UnionPay's ACP SDK DemoBase.parseZMFile (全渠道 file spec 6.1).
ZM_WIDTHS = [
    3,
    11,
    11,
    6,
    10,
    19,
    12,
    4,
    2,
    21,
    2,
    32,
    2,
    6,
    10,
    13,
    13,
    4,
    15,
    2,
    2,
    6,
    2,
    4,
    32,
    1,
    21,
    15,
    1,
    15,
    32,
    13,
    13,
    8,
    32,
    13,
    13,
    12,
    2,
    1,
    32,
    98,
]


def zm_record(
    trade_code,
    trace_time,
    amount_fen,
    query_id,
    order_id,
    fee,
    txn_type,
    orig_query_id="",
    mer_id=MER_ID,
    sub_mer_abbr="朝阳加油站",
) -> bytes:
    values = {
        0: trade_code,
        1: "00000000000",
        2: "00000000000",
        3: "000001",
        4: trace_time,
        5: "6216***********0018",
        6: f"{amount_fen:012d}",
        7: "5541",
        8: "07",
        9: query_id,
        11: order_id,
        12: "01",
        15: fee,
        16: f"C{amount_fen:012d}",
        19: txn_type,
        20: "01",
        21: "000201",
        24: "加油卡充值账单",
        26: orig_query_id,
        27: mer_id,
        30: sub_mer_abbr,
    }
    # GBK text before the merchant code: offsets are bytes, not characters.
    fields = []
    for index, width in enumerate(ZM_WIDTHS):
        raw = values.get(index, "").encode("gbk")
        assert len(raw) <= width
        fields.append(raw + b" " * (width - len(raw)))
    return b" ".join(fields)


ZM = (
    b"\r\n".join(
        [
            zm_record(
                "S22", "0115080102", 10000, "772501150800000000001", "T1", "D00000000060", "01"
            ),
            zm_record(
                "S22", "0114235959", 20000, "772501142300000000002", "T2", "D00000000120", "01"
            ),
            zm_record(
                "S30",
                "0115110000",
                2500,
                "772501151100000000003",
                "T77",
                "C00000000015",
                "04",
                "772501101000000000077",
            ),
            zm_record(
                "S31",
                "0115120000",
                20000,
                "772501151200000000004",
                "T2",
                "C00000000120",
                "31",
                "772501142300000000002",
            ),
        ]
    )
    + b"\r\n"
)


def test_zm_file(unionpay):
    assert list(unionpay.parse_statement(ZM, business_date="2025-01-15")) == [
        StatementLine(
            "unionpay",
            "2025-01-15",
            "772501150800000000001",
            "payment",
            10000,
            60,
            "success",
            1736899262000,
            "",
            "T1",
        ),
        StatementLine(
            "unionpay",
            "2025-01-15",
            "772501142300000000002",
            "payment",
            20000,
            120,
            "success",
            1736870399000,
            "",
            "T2",
        ),
        StatementLine(
            "unionpay",
            "2025-01-15",
            "772501151100000000003",
            "refund",
            2500,
            15,
            "success",
            1736910000000,
            "772501101000000000077",
            "T77",
        ),
        StatementLine(
            "unionpay",
            "2025-01-15",
            "772501151200000000004",
            "refund",
            20000,
            120,
            "success",
            1736913600000,
            "772501142300000000002",
            "T2",
        ),
    ]


def test_zm_year_across_new_year(unionpay):
    data = zm_record("S22", "1231235959", 100, "772412312300000000001", "T1", "000000000000", "01")
    (line,) = unionpay.parse_statement(data, business_date="2025-01-01")
    assert line.time_ms == 1735660799000  # 2024-12-31 23:59:59 Beijing


def test_zm_needs_the_settlement_date(unionpay):
    with pytest.raises(StatementInvalid):
        list(unionpay.parse_statement(ZM))


@pytest.mark.parametrize(
    "record",
    [
        zm_record(
            "S22",
            "0115080102",
            100,
            "772501150800000000001",
            "T1",
            "D00000000060",
            "01",
            mer_id="777290058110099",
        ),
        zm_record("S22", "0115080102", 100, "772501150800000000001", "T1", "D00000000060", "02"),
        zm_record("S30", "0115080102", 100, "772501150800000000001", "T1", "D00000000060", "04"),
        zm_record("S22", "0115080102", 100, "", "T1", "D00000000060", "01"),
        zm_record("S22", "0115080102", 100, "772501150800000000001", "T1", "X0000000006", "01"),
        zm_record("S22", "0132080102", 100, "772501150800000000001", "T1", "D00000000060", "01"),
        zm_record("S22", "0115080102", 100, "772501150800000000001", "T1", "D00000000060", "01")[
            :150
        ],
    ],
)
def test_zm_bad_records(unionpay, record):
    with pytest.raises(StatementInvalid) as caught:
        list(unionpay.parse_statement(ZM + record, business_date="2025-01-15"))
    assert caught.value.line_no == 5


def test_zm_amount_field_must_be_digits(unionpay):
    record = bytearray(
        zm_record("S22", "0115080102", 100, "772501150800000000001", "T1", "0", "01")
    )
    start = sum(ZM_WIDTHS[:6]) + 6
    record[start : start + 12] = b"00000000010A"
    with pytest.raises(StatementInvalid):
        list(unionpay.parse_statement(bytes(record), business_date="2025-01-15"))
