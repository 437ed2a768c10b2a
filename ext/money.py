"""Exact money conversions between the channels' notations and int fen. Never a float.

Channels send yuan as decimal strings ("12.30", Alipay and statements) or fen as digit strings
(WeChat `total_fee`, UnionPay `txnAmt`). The syntax is checked by a strict ASCII pattern first
(no sign unless allowed, no exponent, no spaces, no leading zeros, no '1.' or '.5'); the value is
then plain decimal arithmetic on the digits, with Decimal as the reference it is tested against.
"""

from __future__ import annotations

import re

from ext.errors import AmountInvalid

INT64_MAX = 2**63 - 1
# 10**17 yuan is above int64 fen already; longer integer parts are garbage, not money.
YUAN_INTEGER_DIGITS_MAX = 17
FEN_DIGITS_MAX = 19
# WeChat statements print fees with five decimals ("0.01000"); more is never money.
YUAN_PLACES_MAX = 5

_YUAN_RE = re.compile(
    rf"(-?)(0|[1-9][0-9]{{0,{YUAN_INTEGER_DIGITS_MAX - 1}}})(?:\.([0-9]{{1,{YUAN_PLACES_MAX}}}))?",
    re.ASCII,
)
_FEN_RE = re.compile(rf"0|[1-9][0-9]{{0,{FEN_DIGITS_MAX - 1}}}", re.ASCII)


def yuan_to_fen(text: str, *, negative_ok: bool = False, places_max: int = 2) -> int:
    """'12.30' -> 1230. Digits past the second place must be zeros and at most `places_max`.

    After the pattern has fixed the syntax the value is exactly integer(whole) * 100 + the first two
    places, computed on ints: this is on the statement hot path, where Decimal costs three times
    as much. tests/ext/test_records.py checks it against Decimal.
    """
    match = _YUAN_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise AmountInvalid(f"not a yuan amount: {text!r}")
    sign, whole, places = match.groups()
    if places is None:
        fen = int(whole) * 100
    else:
        if len(places) > places_max:
            raise AmountInvalid(f"more than {places_max} decimal places: {text!r}")
        if len(places) > 2 and places[2:].strip("0"):
            raise AmountInvalid(f"not a whole number of fen: {text!r}")
        fen = int(whole) * 100 + int(places[:2]) * (10 if len(places) == 1 else 1)
    if sign:
        if not negative_ok:
            raise AmountInvalid(f"negative amount not allowed here: {text!r}")
        fen = -fen
    if fen > INT64_MAX or fen < -INT64_MAX:
        raise AmountInvalid(f"amount out of int64 range: {text!r}")
    return fen


def fen_to_yuan(fen: int) -> str:
    """1230 -> '12.30', -1 -> '-0.01': the exact inverse of yuan_to_fen on two places."""
    if not isinstance(fen, int) or isinstance(fen, bool) or abs(fen) > INT64_MAX:
        raise AmountInvalid(f"not an int64 fen amount: {fen!r}")
    whole, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole}.{cents:02d}"


def parse_fen(text: str) -> int:
    """'1230' -> 1230: an unsigned decimal fen count without leading zeros."""
    if not isinstance(text, str) or _FEN_RE.fullmatch(text) is None:
        raise AmountInvalid(f"not a fen amount: {text!r}")
    return _in_range(int(text), text)


def parse_padded_fen(text: str) -> int:
    """'000000001230' -> 1230: the zero-padded fixed-width fen fields of file formats."""
    if (
        not (isinstance(text, str) and text.isascii() and text.isdigit())
        or len(text) > FEN_DIGITS_MAX
    ):
        raise AmountInvalid(f"not a zero-padded fen amount: {text!r}")
    return _in_range(int(text), text)


def _in_range(fen: int, text: str) -> int:
    if abs(fen) > INT64_MAX:
        raise AmountInvalid(f"amount out of int64 range: {text!r}")
    return fen
