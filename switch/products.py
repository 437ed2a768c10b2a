"""Fuel products known out of the box (CONTRACT.md) and the default list prices.

Per-station price tables with effective times come with the pump-lifecycle work; until then every
station sells at these list prices (fen per litre, or per kg / m³ for LNG / CNG).
"""

from __future__ import annotations

LIST_PRICE_FEN_PER_L: dict[str, int] = {
    "92": 738,
    "95": 786,
    "98": 886,
    "0": 712,
    "-10": 755,
    "E92": 731,
    "LNG": 520,
    "CNG": 385,
}
PRODUCTS = frozenset(LIST_PRICE_FEN_PER_L)


def amount_for_volume(volume_ml: int, unit_price: int) -> int:
    """Fen for a volume at a unit price, rounded half up (the pump's own rounding)."""
    return (volume_ml * unit_price + 500) // 1000


def ceil_amount_for_volume(volume_ml: int, unit_price: int) -> int:
    """Fen to hold for a preset volume: rounded up, so the preset can always be delivered."""
    return -(-volume_ml * unit_price // 1000)
