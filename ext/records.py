"""The normalized records every adapter produces, and their clearing.proto messages.

A record is a value: the same native notification always gives an equal record, so a replayed or
retried notification reaches Clearing with the same key and content and is reported "duplicate".
Field meanings and units are those of proto/fuelswitch/v1/clearing.proto: amounts int64 fen,
times ms since the epoch UTC, business dates 'YYYY-MM-DD' in UTC+8.

The error hierarchy (ext.errors) and money helpers (ext.money) are re-exported here because
callers of the records need them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from fuelswitch.v1 import clearing_pb2

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
from ext.money import fen_to_yuan, parse_fen, parse_padded_fen, yuan_to_fen

__all__ = [
    "CHANNELS",
    "AmountInvalid",
    "ChannelError",
    "NotificationIgnored",
    "NotificationInvalid",
    "Payment",
    "Refund",
    "SignatureInvalid",
    "StatementInvalid",
    "StatementLine",
    "SummaryMismatch",
    "TimeInvalid",
    "UnknownChannel",
    "fen_to_yuan",
    "parse_fen",
    "parse_padded_fen",
    "yuan_to_fen",
]

CHANNELS: Final = ("wechat", "alipay", "unionpay", "ecny")
KINDS: Final = ("payment", "refund")
STATUSES: Final = ("success", "failed")
# The longest key is Alipay's refund id, trade_no ':' out_request_no (64 + 1 + 64 characters).
ID_LEN_MAX_CHARS = 160
INT64_MAX = 2**63 - 1

Kind = Literal["payment", "refund"]
Status = Literal["success", "failed"]


@dataclass(frozen=True, slots=True)
class Payment:
    """A successful top-up payment: credit `account_id` once (SubmitPaymentRequest)."""

    channel: str
    channel_txn_id: str
    account_id: str
    amount: int
    fee: int
    paid_at_ms: int
    merchant_order_id: str = ""
    station_id: str = ""

    def __post_init__(self) -> None:
        _check_channel(self.channel)
        _check_id("channel_txn_id", self.channel_txn_id)
        _check_id("account_id", self.account_id)
        _check_amount("amount", self.amount, positive=True)
        _check_amount("fee", self.fee, positive=False)
        _check_amount("paid_at_ms", self.paid_at_ms, positive=True)
        _check_id("merchant_order_id", self.merchant_order_id, required=False)
        _check_id("station_id", self.station_id, required=False)

    def to_proto(self) -> clearing_pb2.SubmitPaymentRequest:
        return clearing_pb2.SubmitPaymentRequest(
            channel=self.channel,
            channel_txn_id=self.channel_txn_id,
            account_id=self.account_id,
            amount=self.amount,
            fee=self.fee,
            paid_at_ms=self.paid_at_ms,
            merchant_order_id=self.merchant_order_id,
            station_id=self.station_id,
        )


@dataclass(frozen=True, slots=True)
class Refund:
    """A successful refund of the payment `channel_txn_id` (SubmitRefundRequest).

    The adapter produces it whether or not the payment was ever seen: ordering and the
    "original not found" decision belong to the Clearing service.
    """

    channel: str
    channel_refund_id: str
    channel_txn_id: str
    amount: int
    fee: int
    refunded_at_ms: int

    def __post_init__(self) -> None:
        _check_channel(self.channel)
        _check_id("channel_refund_id", self.channel_refund_id)
        _check_id("channel_txn_id", self.channel_txn_id)
        _check_amount("amount", self.amount, positive=True)
        _check_amount("fee", self.fee, positive=False)
        _check_amount("refunded_at_ms", self.refunded_at_ms, positive=True)

    def to_proto(self) -> clearing_pb2.SubmitRefundRequest:
        return clearing_pb2.SubmitRefundRequest(
            channel=self.channel,
            channel_txn_id=self.channel_refund_id,
            original_channel_txn_id=self.channel_txn_id,
            amount=self.amount,
            refunded_at_ms=self.refunded_at_ms,
            fee_refunded=self.fee,
        )


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One payment or refund line of a channel's daily statement (StatementLine message).

    `amount` and `fee` are magnitudes: a refund line's amount is the money returned and its fee
    the fee the channel gave back, whatever sign the native file prints.
    """

    channel: str
    business_date: str
    channel_txn_id: str
    kind: Kind
    amount: int
    fee: int
    status: Status
    time_ms: int
    original_channel_txn_id: str = ""
    merchant_order_id: str = ""

    def __post_init__(self) -> None:
        # Cheap checks only: this runs a million times per large statement.
        if self.kind not in KINDS or self.status not in STATUSES:
            raise ValueError(
                f"kind/status must be in {KINDS}/{STATUSES}: {self.kind}/{self.status}"
            )
        if not self.channel_txn_id or (self.kind == "refund") != bool(self.original_channel_txn_id):
            raise ValueError(f"ids do not fit a {self.kind} line: {self.channel_txn_id!r}")
        if not (0 <= self.amount <= INT64_MAX and 0 <= self.fee <= INT64_MAX):
            raise ValueError(f"amount/fee out of range on {self.channel_txn_id!r}")

    def to_proto(self) -> clearing_pb2.StatementLine:
        return clearing_pb2.StatementLine(
            channel=self.channel,
            business_date=self.business_date,
            channel_txn_id=self.channel_txn_id,
            kind=self.kind,
            amount=self.amount,
            fee=self.fee,
            status=self.status,
            time_ms=self.time_ms,
            original_channel_txn_id=self.original_channel_txn_id,
            merchant_order_id=self.merchant_order_id,
        )


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, not {channel!r}")


def _check_id(name: str, value: str, *, required: bool = True) -> None:
    if not isinstance(value, str) or len(value) > ID_LEN_MAX_CHARS or not value.isprintable():
        raise ValueError(f"{name} must be printable text of at most {ID_LEN_MAX_CHARS} characters")
    if required and not value:
        raise ValueError(f"{name} is required")


def _check_amount(name: str, value: int, *, positive: bool) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, not {type(value).__name__}")
    if not (1 if positive else 0) <= value <= INT64_MAX:
        raise ValueError(f"{name} out of range: {value}")
