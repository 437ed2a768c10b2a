"""Card policy: which cards may transact, PIN verification with lockout, amount limits.

Declines are values (ISO 8583 field 39 codes), not exceptions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from switch import pinblock

if TYPE_CHECKING:  # state imports the hotlist, which uses these codes
    from switch.state import Card

PIN_TRIES_MAX = 3  # wrong PINs before the card is locked (75)
AMOUNT_MAX_FEN = 10_000_000  # ¥100,000: larger amounts are refused as invalid (13)
CST = dt.timezone(dt.timedelta(hours=8))  # card expiry is by China Standard Time

APPROVED = "00"
PARTIAL = "10"
INVALID_TRANSACTION = "12"
INVALID_AMOUNT = "13"
INVALID_CARD = "14"
ORIGINAL_NOT_FOUND = "25"
LOST_CARD = "41"
INSUFFICIENT_FUNDS = "51"
EXPIRED_CARD = "54"
INCORRECT_PIN = "55"
NOT_PERMITTED = "57"
EXCEEDS_LIMIT = "61"
RESTRICTED_CARD = "62"
EXCEEDS_FREQUENCY = "65"
PIN_TRIES_EXCEEDED = "75"
ISSUER_UNAVAILABLE = "91"
DUPLICATE = "94"
SYSTEM_MALFUNCTION = "96"

STATE_CODES = {"lost": LOST_CARD, "frozen": RESTRICTED_CARD, "closed": INVALID_CARD, "expired": EXPIRED_CARD}


def card_state_code(card: Card | None, now_ms: int) -> str | None:
    """The decline for a card that may not transact now, or None."""
    if card is None:
        return INVALID_CARD
    code = STATE_CODES.get(card.state)
    if code is not None:
        return code
    if expired(card.expiry, now_ms):
        return EXPIRED_CARD
    if card.pin_tries >= PIN_TRIES_MAX:
        return PIN_TRIES_EXCEEDED
    return None


def expired(expiry: str, now_ms: int) -> bool:
    """A card is valid through the last day of its expiry month (YYYY-MM, China Standard Time)."""
    year, month = int(expiry[:4]), int(expiry[5:7])
    now = dt.datetime.fromtimestamp(now_ms / 1000, CST)
    return (now.year, now.month) > (year, month)


@dataclass(frozen=True)
class PinResult:
    code: str | None  # None: PIN correct
    tries_changed: bool  # the card's try counter changed and must be persisted


def check_pin(card: Card, pan: str, pvk: bytes, pin_key: bytes, pin_block: bytes) -> PinResult:
    """Verify the encrypted PIN block; count wrong PINs and lock at PIN_TRIES_MAX.

    A block that does not decode as format 0 is refused (55) without counting a try: it is a
    terminal fault, not a guess.
    """
    if not pin_block:
        return PinResult(INCORRECT_PIN, False)
    try:
        pin = pinblock.decrypt_pin(pin_key, pin_block, pan)
    except pinblock.PinBlockError:
        return PinResult(INCORRECT_PIN, False)
    if pinblock.verify_pin(pvk, pan, pin, card.pvv):
        changed = card.pin_tries != 0
        card.pin_tries = 0
        return PinResult(None, changed)
    card.pin_tries += 1
    return PinResult(PIN_TRIES_EXCEEDED if card.pin_tries >= PIN_TRIES_MAX else INCORRECT_PIN, True)


def approved_amount(requested: int, available: int, card: Card, partial_requested: bool) -> tuple[str, int]:
    """Apply the per-transaction limit and the funds check, with partial approval where allowed."""
    partial = partial_requested and card.partial_allowed
    amount = requested
    if card.per_txn_limit and amount > card.per_txn_limit:
        if not partial:
            return EXCEEDS_LIMIT, 0
        amount = card.per_txn_limit
    if amount > available:
        if not partial or available <= 0:
            return INSUFFICIENT_FUNDS, 0
        amount = available
    return (PARTIAL if amount < requested else APPROVED), amount
