"""China Standard Time (UTC+8, no daylight saving) <-> ms since the epoch UTC.

Every channel writes local Beijing times without an offset; the normalized records carry UTC ms
and business dates in UTC+8 (clearing.proto). Parsing is on a hot path (1M statement lines), so the
fixed layouts are matched by one ASCII pattern and the date part's epoch is cached.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta

from ext.errors import TimeInvalid

__all__ = [
    "TimeInvalid",
    "business_date",
    "compact_ms",
    "dashed_ms",
    "date_of_ms",
    "day_start_ms",
    "month_day_ms",
    "rfc3339_ms",
]

CST_OFFSET_MS = 8 * 3600 * 1000
DAY_MS = 24 * 3600 * 1000
# A channel time outside this range is garbage, not a transaction.
YEAR_MIN = 2000
YEAR_MAX = 2099

_DASHED_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,3}))?",
    re.ASCII,
)
_MONTH_DAY_RE = re.compile(r"([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})", re.ASCII)
_COMPACT_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})", re.ASCII)
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)


def dashed_ms(text: str) -> int:
    """'2025-01-15 10:00:00' or with milliseconds '...:00.320' (Alipay gmt_refund), Beijing -> ms UTC."""
    match = _DASHED_RE.fullmatch(text)
    if match is None:
        raise TimeInvalid(f"not a 'YYYY-MM-DD hh:mm:ss' time: {text!r}")
    *parts, fraction = match.groups()
    ms = _from_parts(text, *parts)
    return ms if fraction is None else ms + int(fraction.ljust(3, "0"))


def month_day_ms(text: str, reference_ms: int) -> int:
    """'0115100000' (MMDDhhmmss, UnionPay traceTime) -> ms UTC, in the year nearest `reference_ms`.

    The field has no year; the transaction happened within days of the reference (the order's
    txnTime, the statement's settlement date), which settles the year across New Year.
    """
    match = _MONTH_DAY_RE.fullmatch(text)
    if match is None:
        raise TimeInvalid(f"not an 'MMDDhhmmss' time: {text!r}")
    year = int(date_of_ms(reference_ms)[:4])
    candidates = []
    for candidate in (year - 1, year, year + 1):
        try:
            candidates.append(_from_parts(text, f"{candidate:04d}", *match.groups()))
        except TimeInvalid:
            continue  # 29 February of a common year
    if not candidates:
        raise TimeInvalid(f"not a real time: {text!r}")
    return min(candidates, key=lambda ms: abs(ms - reference_ms))


def compact_ms(text: str) -> int:
    """'20250115100000' (Beijing, WeChat time_end, UnionPay txnTime) -> ms UTC."""
    match = _COMPACT_RE.fullmatch(text)
    if match is None:
        raise TimeInvalid(f"not a 'YYYYMMDDhhmmss' time: {text!r}")
    return _from_parts(text, *match.groups())


def rfc3339_ms(text: str) -> int:
    """'2025-01-15T10:00:00+08:00' (WeChat API v3) -> ms UTC; the offset is required."""
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise TimeInvalid(f"not an RFC 3339 time with offset: {text!r}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TimeInvalid(f"not a real time: {text!r}") from exc
    _check_year(moment.year, text)
    # fromisoformat keeps sub-seconds; the records are ms, truncated like the channels' own.
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return delta // timedelta(milliseconds=1)


def business_date(text: str) -> str:
    """Validate a 'YYYY-MM-DD' business date and return it unchanged."""
    match = _DATE_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise TimeInvalid(f"not a 'YYYY-MM-DD' date: {text!r}")
    _day_start_ms(*match.groups())
    return text


def date_of_ms(ms: int) -> str:
    """The Beijing calendar date of an instant, 'YYYY-MM-DD'."""
    return (datetime(1970, 1, 1) + timedelta(milliseconds=ms + CST_OFFSET_MS)).date().isoformat()


def day_start_ms(day: str) -> int:
    """Midnight Beijing of a 'YYYY-MM-DD' date, ms UTC."""
    match = _DATE_RE.fullmatch(day)
    if match is None:
        raise TimeInvalid(f"not a 'YYYY-MM-DD' date: {day!r}")
    return _day_start_ms(*match.groups())


def _from_parts(text: str, year: str, month: str, day: str, hh: str, mm: str, ss: str) -> int:
    hours, minutes, seconds = int(hh), int(mm), int(ss)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimeInvalid(f"not a real time of day: {text!r}")
    return _day_start_ms(year, month, day) + ((hours * 60 + minutes) * 60 + seconds) * 1000


@functools.lru_cache(maxsize=4096)
def _day_start_ms(year: str, month: str, day: str) -> int:
    try:
        calendar_day = date(int(year), int(month), int(day))
    except ValueError as exc:
        raise TimeInvalid(f"not a real date: {year}-{month}-{day}") from exc
    _check_year(calendar_day.year, f"{year}-{month}-{day}")
    return (calendar_day - date(1970, 1, 1)).days * DAY_MS - CST_OFFSET_MS


def _check_year(year: int, text: str) -> None:
    if not YEAR_MIN <= year <= YEAR_MAX:
        raise TimeInvalid(f"year outside {YEAR_MIN}..{YEAR_MAX}: {text!r}")
