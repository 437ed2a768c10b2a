"""Alipay: RSA2-signed asynchronous notifications built here, and the GBK business statement."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from ext.alipay import AlipayAdapter, AlipayConfig
from ext.errors import (
    NotificationIgnored,
    NotificationInvalid,
    SignatureInvalid,
    StatementInvalid,
    SummaryMismatch,
)
from ext.records import Payment, Refund, StatementLine
from tests.ext.conftest import public_pem

APP_ID = "2021000117600001"
SELLER_ID = "2088102177846880"
PAID_AT_MS = 1736906400000  # 2025-01-15 10:00:00 Beijing


@pytest.fixture
def alipay(channel_key) -> AlipayAdapter:
    return AlipayAdapter(
        AlipayConfig(app_id=APP_ID, alipay_public_key=public_pem(channel_key), seller_id=SELLER_ID)
    )


def sign_params(private_key, params: dict[str, str], charset: str = "utf-8") -> dict[str, str]:
    """Written from the documentation: drop sign/sign_type, sort, join name=value with '&' (empties too)."""
    content = "&".join(f"{k}={params[k]}" for k in sorted(params) if k not in ("sign", "sign_type"))
    signature = private_key.sign(content.encode(charset), padding.PKCS1v15(), hashes.SHA256())
    return {**params, "sign_type": "RSA2", "sign": base64.b64encode(signature).decode()}


def form(params: dict[str, str], charset: str = "utf-8") -> bytes:
    return urlencode(params, encoding=charset).encode("ascii")


def paid(**changes: str) -> dict[str, str]:
    params = {
        "gmt_create": "2025-01-15 09:59:50",
        "charset": "utf-8",
        "seller_email": "fuel@example.com",
        "subject": "加油卡充值 100元",
        "body": "",
        "buyer_id": "2088102177846881",
        "invoice_amount": "100.00",
        "notify_id": "2025011500222100000071530591",
        "fund_bill_list": '[{"amount":"100.00","fundChannel":"ALIPAYACCOUNT"}]',
        "notify_type": "trade_status_sync",
        "trade_status": "TRADE_SUCCESS",
        "receipt_amount": "100.00",
        "buyer_pay_amount": "100.00",
        "app_id": APP_ID,
        "notify_time": "2025-01-15 10:00:01",
        "point_amount": "0.00",
        "total_amount": "100.00",
        "seller_id": SELLER_ID,
        "trade_no": "2025011522001446881401234567",
        "auth_app_id": APP_ID,
        "buyer_logon_id": "138****0000",
        "gmt_payment": "2025-01-15 10:00:00",
        "out_trade_no": "TOPUP20250115000001",
        "passback_params": "fs1.1001.S01",
        "version": "1.0",
    }
    params.update(changes)
    return params


EXPECTED_PAYMENT = Payment(
    channel="alipay",
    channel_txn_id="2025011522001446881401234567",
    account_id="1001",
    amount=10000,
    fee=0,
    paid_at_ms=PAID_AT_MS,
    merchant_order_id="TOPUP20250115000001",
    station_id="S01",
)


def test_payment(alipay, channel_key):
    assert alipay.parse_notification({}, form(sign_params(channel_key, paid()))) == EXPECTED_PAYMENT


def test_yuan_amounts_are_exact(alipay, channel_key):
    body = form(sign_params(channel_key, paid(total_amount="0.1")))
    assert alipay.parse_notification({}, body).amount == 10
    body = form(sign_params(channel_key, paid(total_amount="88.88")))
    assert alipay.parse_notification({}, body).amount == 8888
    with pytest.raises(NotificationInvalid):
        alipay.parse_notification({}, form(sign_params(channel_key, paid(total_amount="1.005"))))


def test_gbk_notification(alipay, channel_key):
    params = sign_params(channel_key, paid(charset="gbk"), charset="gbk")
    assert alipay.parse_notification({}, form(params, charset="gbk")) == EXPECTED_PAYMENT


def test_empty_values_are_signed(alipay, channel_key):
    # Alipay's SDK (rsaCheckV1) keeps empty parameters in the signed content; so must we.
    params = sign_params(channel_key, paid(body=""))
    assert alipay.parse_notification({}, form(params)) == EXPECTED_PAYMENT
    for changed in ({k: v for k, v in params.items() if k != "body"}, {**params, "extra": ""}):
        with pytest.raises(SignatureInvalid):
            alipay.parse_notification({}, form(changed))


def test_finished_after_success_gives_the_same_payment(alipay, channel_key):
    success = alipay.parse_notification({}, form(sign_params(channel_key, paid())))
    finished = alipay.parse_notification(
        {}, form(sign_params(channel_key, paid(trade_status="TRADE_FINISHED")))
    )
    assert success == finished  # Clearing reports the second one "duplicate"


def test_replay_gives_the_same_record(alipay, channel_key):
    body = form(sign_params(channel_key, paid()))
    assert alipay.parse_notification({}, body) == alipay.parse_notification({}, body)


def test_wrong_key(alipay, other_key):
    with pytest.raises(SignatureInvalid):
        alipay.parse_notification({}, form(sign_params(other_key, paid())))


def test_tampered_amount(alipay, channel_key):
    params = sign_params(channel_key, paid())
    params["total_amount"] = "10000.00"
    with pytest.raises(SignatureInvalid):
        alipay.parse_notification({}, form(params))


@pytest.mark.parametrize(
    "change", [{"sign": ""}, {"sign_type": "RSA"}, {"sign_type": ""}, {"sign": "not base64!"}]
)
def test_bad_signature_fields(alipay, channel_key, change):
    with pytest.raises(SignatureInvalid):
        alipay.parse_notification({}, form({**sign_params(channel_key, paid()), **change}))


@pytest.mark.parametrize("status", ["WAIT_BUYER_PAY", "TRADE_CLOSED"])
def test_unpaid_is_ignored(alipay, channel_key, status):
    with pytest.raises(NotificationIgnored) as caught:
        alipay.parse_notification({}, form(sign_params(channel_key, paid(trade_status=status))))
    assert caught.value.native_status == status


@pytest.mark.parametrize(
    "changes",
    [
        {"app_id": "2021000000000000"},
        {"seller_id": "2088000000000000"},
        {"trade_no": ""},
        {"total_amount": "-1.00"},
        {"total_amount": "0.00"},
        {"gmt_payment": ""},
        {"passback_params": ""},
        {"charset": "big5"},
    ],
)
def test_authentic_but_unusable(alipay, channel_key, changes):
    with pytest.raises(NotificationInvalid):
        alipay.parse_notification({}, form(sign_params(channel_key, paid(**changes))))


def test_missing_fields(alipay, channel_key):
    params = {k: v for k, v in paid().items() if k != "trade_status"}
    with pytest.raises(NotificationInvalid):
        alipay.parse_notification({}, form(sign_params(channel_key, params)))


def test_repeated_parameter_is_refused(alipay, channel_key):
    body = form(sign_params(channel_key, paid())) + b"&total_amount=1.00"
    with pytest.raises(NotificationInvalid):
        alipay.parse_notification({}, body)


def refunded(**changes: str) -> dict[str, str]:
    params = paid(
        trade_no="2025011022001446881400000077",
        out_trade_no="TOPUP20250110000077",
        trade_status="TRADE_SUCCESS",
        out_biz_no="RF20250115000001",
        refund_fee="25.00",
        send_back_fee="25.00",
        gmt_refund="2025-01-15 11:00:00.320",
    )
    params.update(changes)
    return params


def test_refund_of_a_payment_never_seen(alipay, channel_key):
    refund = alipay.parse_notification({}, form(sign_params(channel_key, refunded())))
    assert refund == Refund(
        channel="alipay",
        channel_refund_id="2025011022001446881400000077:RF20250115000001",
        channel_txn_id="2025011022001446881400000077",
        amount=2500,
        fee=0,
        refunded_at_ms=PAID_AT_MS + 3600_000 + 320,
    )


def test_second_partial_refund_uses_its_own_amount(alipay, channel_key):
    # refund_fee is the trade's cumulative refund (25 + 30); send_back_fee is this refund's.
    params = refunded(
        out_biz_no="RF20250115000002",
        refund_fee="55.00",
        send_back_fee="30.00",
        trade_status="TRADE_CLOSED",
    )
    refund = alipay.parse_notification({}, form(sign_params(channel_key, params)))
    assert (refund.channel_refund_id.endswith(":RF20250115000002"), refund.amount) == (True, 3000)


def test_refund_without_its_own_amount_is_ignored(alipay, channel_key):
    params = {k: v for k, v in refunded().items() if k != "send_back_fee"}
    with pytest.raises(NotificationIgnored):
        alipay.parse_notification({}, form(sign_params(channel_key, params)))


def test_answers(alipay):
    assert alipay.ack(True) == (200, "text/plain", b"success")
    assert alipay.ack(False) == (200, "text/plain", b"fail")


def test_console_style_public_key(channel_key, other_key):
    der = channel_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    adapter = AlipayAdapter(
        AlipayConfig(app_id=APP_ID, alipay_public_key=base64.b64encode(der).decode())
    )
    assert (
        adapter.parse_notification({}, form(sign_params(channel_key, paid()))) == EXPECTED_PAYMENT
    )
    with pytest.raises(SignatureInvalid):
        adapter.parse_notification({}, form(sign_params(other_key, paid())))


# ================================================================ business statement (GBK)

HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,"
    "商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,"
    "卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def row(
    trade_no, order, kind, created, finished, amount, received, request_no="", fee="0.00"
) -> str:
    cells = [
        trade_no,
        order,
        kind,
        "加油卡充值",
        created,
        finished,
        "S01",
        "中石化北京朝阳站",
        "",
        "",
        "138****0000",
        amount,
        received,
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "0.00",
        "",
        "0.00",
        "0.00",
        request_no,
        fee,
        "0.00",
        "",
    ]
    return ",".join(cell + "\t" for cell in cells)


ROWS = [
    row(
        "2025011522001400000001",
        "T1",
        "交易",
        "2025-01-15 08:00:00",
        "2025-01-15 08:00:05",
        "100.00",
        "100.00",
        fee="-0.60",
    ),
    row(
        "2025011522001400000002",
        "T2",
        "交易",
        "2025-01-15 09:00:00",
        "2025-01-15 09:00:03",
        "200.00",
        "200.00",
        fee="-1.20",
    ),
    row(
        "2025011022001400000077",
        "T77",
        "退款",
        "2025-01-10 12:00:00",
        "2025-01-15 11:00:00",
        "-25.00",
        "-25.00",
        "RF20250115000001",
        "0.15",
    ),
]
FOOTER = [
    "#交易合计：2笔，商家实收共300.00元，商家优惠共0.00元",
    "#退款合计：1笔，商家实收退款共-25.00元，商家优惠退款共0.00元",
]


def statement(rows=ROWS, footer=FOOTER, date="2025年01月15日", end=True) -> bytes:
    lines = [
        "#支付宝业务明细查询",
        "#账号：[20881021778468800156]",
        f"#起始日期：[{date} 00:00:00]   终止日期：[2025年01月16日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        HEADER,
        *rows,
    ]
    if end:
        lines += [
            "#-----------------------------------------业务明细列表结束------------------------------------",
            *footer,
            "#导出时间：[2025年01月16日 09:26:25]",
        ]
    return ("\r\n".join(lines) + "\r\n").encode("gbk")


EXPECTED_LINES = [
    StatementLine(
        "alipay",
        "2025-01-15",
        "2025011522001400000001",
        "payment",
        10000,
        60,
        "success",
        1736899205000,
        "",
        "T1",
    ),
    StatementLine(
        "alipay",
        "2025-01-15",
        "2025011522001400000002",
        "payment",
        20000,
        120,
        "success",
        1736902803000,
        "",
        "T2",
    ),
    StatementLine(
        "alipay",
        "2025-01-15",
        "2025011022001400000077:RF20250115000001",
        "refund",
        2500,
        15,
        "success",
        1736910000000,
        "2025011022001400000077",
        "T77",
    ),
]


def test_statement_in_gbk_with_chinese_text(alipay):
    data = statement()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # really GBK, not UTF-8
    assert list(alipay.parse_statement(data)) == EXPECTED_LINES
    assert list(alipay.parse_statement(data, business_date="2025-01-15")) == EXPECTED_LINES


def test_refund_keys_match_the_notifications(alipay, channel_key):
    params = refunded(trade_no="2025011022001400000077", out_biz_no="RF20250115000001")
    refund = alipay.parse_notification({}, form(sign_params(channel_key, params)))
    assert refund.channel_refund_id == EXPECTED_LINES[2].channel_txn_id


def test_older_total_wording(alipay):
    footer = [
        "#交易合计：2笔，商家实收：300.00元，商家优惠：0.00元",
        "#退款合计：1笔，商家实收：-25.00元，商家优惠：0.00元",
    ]
    assert list(alipay.parse_statement(statement(footer=footer))) == EXPECTED_LINES


@pytest.mark.parametrize(
    "footer",
    [
        ["#交易合计：3笔，商家实收共300.00元，商家优惠共0.00元", FOOTER[1]],
        ["#交易合计：2笔，商家实收共300.01元，商家优惠共0.00元", FOOTER[1]],
        [FOOTER[0], "#退款合计：1笔，商家实收退款共-24.00元，商家优惠退款共0.00元"],
        [FOOTER[0]],
    ],
)
def test_broken_totals_are_detected(alipay, footer):
    with pytest.raises(SummaryMismatch):
        list(alipay.parse_statement(statement(footer=footer)))


def test_truncated_statement_is_detected(alipay):
    with pytest.raises(SummaryMismatch):
        list(alipay.parse_statement(statement(end=False)))


def test_statement_date_must_agree(alipay):
    with pytest.raises(StatementInvalid):
        list(alipay.parse_statement(statement(), business_date="2025-01-14"))


def test_statement_errors(alipay):
    utf8 = statement().decode("gbk").encode("utf-8")
    bad_rows = [
        [ROWS[0].replace("交易", "转账", 1)],
        [ROWS[0].replace("100.00\t", "100.001\t", 1)],
        [ROWS[2].replace("RF20250115000001", "")],
        [ROWS[0] + ",extra"],
        [ROWS[0].replace("2025-01-15 08:00:05", "2025/01/15 08:00:05")],
    ]
    for data in (
        utf8,
        b"",
        statement(date="2025年13月15日"),
        *(statement(rows=rows) for rows in bad_rows),
    ):
        with pytest.raises(StatementInvalid):
            list(alipay.parse_statement(data))
