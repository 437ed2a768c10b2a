"""Normalized records, money conversion, Beijing time, the attach field and the error hierarchy."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ext import attach, beijing
from ext.errors import (
    AmountInvalid,
    ChannelError,
    NotificationIgnored,
    NotificationInvalid,
    SignatureInvalid,
    StatementInvalid,
    SummaryMismatch,
    TimeInvalid,
    UnknownChannel,
)
from ext.records import (
    Payment,
    Refund,
    StatementLine,
    fen_to_yuan,
    parse_fen,
    parse_padded_fen,
    yuan_to_fen,
)

FEN_MAX_TESTED = 10**9 * 100  # 10^9 yuan


# ---------------------------------------------------------------- yuan <-> fen


@given(st.integers(min_value=1, max_value=FEN_MAX_TESTED))
def test_every_fen_value_round_trips(fen):
    text = f"{fen // 100}.{fen % 100:02d}"  # written independently of fen_to_yuan
    assert yuan_to_fen(text) == fen
    assert fen_to_yuan(fen) == text


@given(st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False))
def test_yuan_to_fen_agrees_with_decimal(value):
    text = f"{value:.2f}"
    assert yuan_to_fen(text) == int(Decimal(text) * 100)
    assert yuan_to_fen(text.rstrip("0").rstrip(".") or "0") == int(Decimal(text) * 100)


@given(st.integers(min_value=-FEN_MAX_TESTED, max_value=FEN_MAX_TESTED))
def test_signed_amounts_round_trip_where_allowed(fen):
    assert yuan_to_fen(fen_to_yuan(fen), negative_ok=True) == fen


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("0.1", 10),
        ("12.30", 1230),
        ("12.3", 1230),
        ("12", 1200),
        ("0", 0),
        ("0.01", 1),
        ("100000000.00", 10**10),
    ],
)
def test_exact_conversions(text, fen):
    assert yuan_to_fen(text) == fen


@pytest.mark.parametrize(
    "text",
    [
        "1.005",
        "0.001",
        "",
        " 1",
        "1 ",
        "+1",
        "1e3",
        "1E2",
        "1.",
        ".5",
        "01",
        "00.10",
        "1,000",
        "NaN",
        "Infinity",
        "１２",
        "1.2.3",
        "0x10",
        "1_000",
        "--1",
        "١",
        "12.30\n",
        "92233720368547758.08",
        "1" * 18,
    ],
)
def test_garbage_is_refused(text):
    with pytest.raises(AmountInvalid):
        yuan_to_fen(text)


def test_refuses_non_strings():
    with pytest.raises(AmountInvalid):
        yuan_to_fen(1.5)  # type: ignore[arg-type]
    with pytest.raises(AmountInvalid):
        fen_to_yuan(True)


def test_negatives_only_where_allowed():
    with pytest.raises(AmountInvalid):
        yuan_to_fen("-0.01")
    assert yuan_to_fen("-0.01", negative_ok=True) == -1
    assert fen_to_yuan(-1) == "-0.01"


def test_extra_places_must_be_zeros():
    assert yuan_to_fen("0.01000", places_max=5) == 1
    assert yuan_to_fen("-7.79000", negative_ok=True, places_max=5) == -779
    with pytest.raises(AmountInvalid):
        yuan_to_fen("0.05940", places_max=5)  # a fraction of a fen is not money we can book
    with pytest.raises(AmountInvalid):
        yuan_to_fen("0.010000", places_max=5)


def test_fen_strings():
    assert parse_fen("1230") == 1230
    assert parse_fen("0") == 0
    assert parse_padded_fen("000000001230") == 1230
    for text in ["01", "-1", "1.0", "", " 1", "１", "1e3", "99999999999999999999"]:
        with pytest.raises(AmountInvalid):
            parse_fen(text)
    with pytest.raises(AmountInvalid):
        parse_padded_fen("00000000123 ")


# ---------------------------------------------------------------- Beijing time


def test_beijing_times():
    assert beijing.dashed_ms("2000-01-01 08:00:00") == 946684800000
    assert beijing.compact_ms("20250115100000") == 1736906400000
    assert beijing.dashed_ms("2025-01-15 10:00:00.320") == 1736906400320
    assert beijing.rfc3339_ms("2025-01-15T10:00:00+08:00") == 1736906400000
    assert beijing.rfc3339_ms("2025-01-15T02:00:00Z") == 1736906400000
    assert beijing.date_of_ms(1736906400000) == "2025-01-15"
    assert beijing.date_of_ms(beijing.day_start_ms("2025-01-15") - 1) == "2025-01-14"


def test_month_day_times_take_the_nearest_year():
    new_year = beijing.dashed_ms("2025-01-01 09:00:00")
    assert beijing.month_day_ms("1231235959", new_year) == beijing.dashed_ms("2024-12-31 23:59:59")
    assert beijing.month_day_ms("0101000001", new_year) == beijing.dashed_ms("2025-01-01 00:00:01")
    assert beijing.month_day_ms(
        "0229120000", beijing.dashed_ms("2025-03-01 00:00:00")
    ) == beijing.dashed_ms("2024-02-29 12:00:00")


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-30 10:00:00",
        "2025-01-15 24:00:00",
        "2025-01-15T10:00:00",
        "20250115",
        "1899-01-01 00:00:00",
    ],
)
def test_bad_times_are_refused(text):
    with pytest.raises(beijing.TimeInvalid):
        beijing.dashed_ms(text)


def test_rfc3339_needs_an_offset():
    with pytest.raises(beijing.TimeInvalid):
        beijing.rfc3339_ms("2025-01-15T10:00:00")


# ---------------------------------------------------------------- attach


def test_attach_round_trip():
    assert attach.decode_attach(attach.encode_attach("1001", "S-01")) == ("1001", "S-01")
    assert attach.decode_attach("fs1.1001.") == ("1001", "")
    for bad in [None, "", "1001", "fs1..S1", "fs2.1001.S1", "fs1.10 01.S1", "fs1.1001.S1.x"]:
        with pytest.raises(NotificationInvalid):
            attach.decode_attach(bad)
    with pytest.raises(ValueError):
        attach.encode_attach("a.b")


# ---------------------------------------------------------------- records


PAYMENT = Payment("wechat", "4200000001", "1001", 10000, 60, 1736906400000, "TOPUP-1", "S01")
REFUND = Refund("alipay", "2025011522001:R1", "2025011522001", 2500, 0, 1736910000000)


def test_payment_to_proto():
    message = PAYMENT.to_proto()
    assert (message.channel, message.channel_txn_id, message.account_id) == (
        "wechat",
        "4200000001",
        "1001",
    )
    assert (message.amount, message.fee, message.paid_at_ms) == (10000, 60, 1736906400000)
    assert (message.merchant_order_id, message.station_id) == ("TOPUP-1", "S01")


def test_refund_to_proto_keys_on_the_refund_id():
    message = REFUND.to_proto()
    assert message.channel_txn_id == "2025011522001:R1"
    assert message.original_channel_txn_id == "2025011522001"
    assert (message.amount, message.fee_refunded, message.refunded_at_ms) == (
        2500,
        0,
        1736910000000,
    )


def test_statement_line_to_proto():
    line = StatementLine(
        "unionpay", "2025-01-15", "Q2", "refund", 500, 3, "success", 17, "Q1", "O1"
    )
    message = line.to_proto()
    assert (message.kind, message.original_channel_txn_id, message.status) == (
        "refund",
        "Q1",
        "success",
    )
    assert (message.business_date, message.amount, message.fee, message.time_ms) == (
        "2025-01-15",
        500,
        3,
        17,
    )


def test_records_are_values():
    assert PAYMENT == dataclasses.replace(PAYMENT)
    assert len({PAYMENT, dataclasses.replace(PAYMENT)}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAYMENT.amount = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0},
        {"amount": -1},
        {"fee": -1},
        {"channel": "paypal"},
        {"channel_txn_id": ""},
        {"account_id": ""},
        {"amount": 10.0},
        {"amount": True},
        {"paid_at_ms": 0},
        {"amount": 2**63},
        {"merchant_order_id": "x" * 161},
        {"station_id": "a\nb"},
    ],
)
def test_invalid_payments_are_refused(change):
    with pytest.raises(ValueError):
        dataclasses.replace(PAYMENT, **change)


def test_invalid_refunds_and_lines_are_refused():
    with pytest.raises(ValueError):
        dataclasses.replace(REFUND, channel_txn_id="")
    with pytest.raises(ValueError):
        StatementLine("ecny", "2025-01-15", "E2", "refund", 1, 0, "success", 0)  # no original
    with pytest.raises(ValueError):
        StatementLine(
            "ecny", "2025-01-15", "E1", "payment", 1, 0, "success", 0, "E0"
        )  # original on a payment
    with pytest.raises(ValueError):
        StatementLine("ecny", "2025-01-15", "E1", "payment", 1, 0, "pending", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StatementLine("ecny", "2025-01-15", "E1", "payment", -1, 0, "success", 0)


def test_error_hierarchy():
    for error in (
        SignatureInvalid,
        NotificationInvalid,
        NotificationIgnored,
        StatementInvalid,
        AmountInvalid,
        TimeInvalid,
        UnknownChannel,
    ):
        assert issubclass(error, ChannelError)
    assert issubclass(SummaryMismatch, StatementInvalid)
    assert str(StatementInvalid("bad", line_no=3)) == "line 3: bad"
    assert NotificationIgnored("unpaid", native_status="NOTPAY").native_status == "NOTPAY"
