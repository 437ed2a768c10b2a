"""Per-station prices with effective times, falling back to the network's list prices.

A price set for a station takes effect at its `effective_from_ms` (0 = at once) and stays until a
later one; unit price 0 from some time on means the station stops selling the product then.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from switch.products import LIST_PRICE_FEN_PER_L, PRODUCTS, amount_for_volume

# Amount vs litres × price: rounding to the fen is allowed, nothing more (docs/pos-protocol.md §8.2).
AMOUNT_TOLERANCE_FEN = 1


@dataclass
class PriceTable:
    # station -> product -> [(effective_from_ms, unit_price)] sorted by time
    _schedules: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)

    def set(self, station_id: str, product_code: str, unit_price: int, effective_from_ms: int) -> None:
        schedule = self._schedules.setdefault(station_id, {}).setdefault(product_code, [])
        at = bisect.bisect_left(schedule, (effective_from_ms, -1))
        if at < len(schedule) and schedule[at][0] == effective_from_ms:
            schedule[at] = (effective_from_ms, unit_price)  # the same moment again: the newer setting wins
        else:
            schedule.insert(at, (effective_from_ms, unit_price))

    def price(self, station_id: str, product_code: str, now_ms: int) -> int:
        """Fen per litre at `now_ms`; 0 when the product is not sold there."""
        schedule = self._schedules.get(station_id, {}).get(product_code)
        if schedule:
            at = bisect.bisect_right(schedule, (now_ms, 2**62)) - 1
            if at >= 0:
                return schedule[at][1]
        return LIST_PRICE_FEN_PER_L.get(product_code, 0)

    def current(self, station_id: str, now_ms: int) -> list[tuple[str, int]]:
        """Every product sold at the station now, with its price."""
        prices = ((product, self.price(station_id, product, now_ms)) for product in sorted(PRODUCTS))
        return [(product, price) for product, price in prices if price > 0]

    def schedule(self, station_id: str) -> list[tuple[str, int, int]]:
        """(product, unit_price, effective_from_ms) of every setting made for the station."""
        return [(product, price, at) for product, entries in sorted(self._schedules.get(station_id, {}).items())
                for at, price in entries]


def amount_matches(amount: int, volume_ml: int, unit_price: int) -> bool:
    """amount ≈ litres × price, to the fen; unknown volume or price cannot be checked."""
    if not volume_ml or not unit_price:
        return True
    return abs(amount_for_volume(volume_ml, unit_price) - amount) <= AMOUNT_TOLERANCE_FEN
