"""The account (and station) a top-up is for, carried through the channel and back.

Each channel echoes one merchant field unchanged in its notification: WeChat `attach`, Alipay
`passback_params`, UnionPay `reqReserved`, e-CNY `attach`. fuelswitch puts
``fs1.<account_id>.<station_id>`` there when it creates the order (station may be empty). Only
URL-unreserved ASCII is used, so no channel re-encodes it, and the whole value stays under WeChat's
127-byte limit for `attach`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ext.errors import NotificationInvalid

PREFIX = "fs1"
ID_LEN_MAX_CHARS = 40
_ID = rf"[A-Za-z0-9_-]{{1,{ID_LEN_MAX_CHARS}}}"
_ATTACH_RE = re.compile(rf"{PREFIX}\.({_ID})\.((?:{_ID})?)", re.ASCII)


class Attach(NamedTuple):
    account_id: str
    station_id: str


def encode_attach(account_id: str, station_id: str = "") -> str:
    """The value to send as the channel's pass-through field when creating an order."""
    text = f"{PREFIX}.{account_id}.{station_id}"
    if _ATTACH_RE.fullmatch(text) is None:
        raise ValueError(f"account/station ids must be 1..{ID_LEN_MAX_CHARS} of [A-Za-z0-9_-]")
    return text


def decode_attach(text: str | None) -> Attach:
    """Account and station from a notification's pass-through field."""
    match = _ATTACH_RE.fullmatch(text or "")
    if match is None:
        raise NotificationInvalid(f"pass-through field is not a fuelswitch attach: {text!r}")
    return Attach(match.group(1), match.group(2))
