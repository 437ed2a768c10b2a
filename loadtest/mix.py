"""The operation mix of a load run: `auth_complete=70,purchase=10,...` parsed into weights.

A `Mix` is a small frozen value (it travels to client processes): integer weights per operation
name, drawn from each lane's own seeded random generator, so a seed replays the same sequence of
operations. Which names exist is decided by the registry in `loadtest.operations`; this module
only parses and draws.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

WEIGHT_MAX = 1_000_000


class MixError(ValueError):
    """A --mix value that cannot be used (unknown name, bad weight, nothing to run)."""


@dataclass(frozen=True)
class Mix:
    """Operation names with positive integer weights, in the order given."""

    weights: tuple[tuple[str, int], ...]
    _cumulative: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.weights:
            raise MixError("the mix is empty: give at least one operation a weight above 0")
        total = 0
        cumulative = []
        for _, weight in self.weights:
            total += weight
            cumulative.append(total)
        object.__setattr__(self, "_cumulative", tuple(cumulative))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.weights)

    @property
    def total(self) -> int:
        return self._cumulative[-1]

    def pick(self, rng: random.Random) -> str:
        """One operation name, with probability weight / total."""
        at = rng.randrange(self.total)
        return self.weights[bisect.bisect_right(self._cumulative, at)][0]

    def only(self, names: Iterable[str]) -> bool:
        """True when every operation of the mix is one of `names`."""
        allowed = set(names)
        return all(name in allowed for name in self.names)

    def __str__(self) -> str:
        return ",".join(f"{name}={weight}" for name, weight in self.weights)


def parse_mix(text: str, known: Iterable[str]) -> Mix:
    """`name=weight,...` → Mix. Names must be in `known`; weights are integers 0..1,000,000
    (0 leaves the operation out); a name may appear once."""
    known = tuple(known)
    weights: dict[str, int] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, equals, value = item.partition("=")
        name = name.strip()
        if name not in known:
            raise MixError(f"unknown operation {name!r} in --mix (known: {', '.join(known)})")
        if name in weights:
            raise MixError(f"operation {name!r} appears twice in --mix")
        if not equals:
            raise MixError(f"--mix item {item!r} needs a weight: {name}=WEIGHT")
        try:
            weight = int(value)
        except ValueError:
            raise MixError(f"weight of {name!r} must be an integer, got {value.strip()!r}") from None
        if not 0 <= weight <= WEIGHT_MAX:
            raise MixError(f"weight of {name!r} must be 0..{WEIGHT_MAX}, got {weight}")
        weights[name] = weight
    return Mix(tuple((name, weight) for name, weight in weights.items() if weight > 0))
