"""The hotlist terminals use offline: versioned changes, so a terminal downloads only what changed.

Every change (a card leaves the usable states, comes back, or its account goes negative and later
recovers) is one entry with the next version. Entries name cards by SM3 of the PAN (the protocol
lets a terminal hash a PAN without any key); it is computed from the encrypted PAN when the card is
listed, and only listed cards ever have one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from switch import policy as P
from switch.sm3 import sm3

PAGE_ENTRIES_MAX = 5_000
# Why a card is on the hotlist, as the decline code a terminal uses offline.
STATE_CODES = {"lost": P.LOST_CARD, "frozen": P.RESTRICTED_CARD, "closed": P.INVALID_CARD, "expired": P.EXPIRED_CARD}
NEGATIVE_CODE = P.INSUFFICIENT_FUNDS  # the account owes money from offline sales


@dataclass(frozen=True)
class Entry:
    version: int
    card_id: int
    pan_sm3: str
    masked_pan: str
    code: str  # "" with removed
    removed: bool

    def row(self, now_ms: int) -> tuple[object, ...]:
        return (self.version, self.card_id, self.pan_sm3, self.masked_pan, self.code, self.removed, now_ms)


def pan_sm3(pan: str) -> str:
    return sm3(pan.encode()).hex()


@dataclass
class Page:
    entries: list[Entry]
    version: int
    full_snapshot: bool
    more: bool


@dataclass
class Hotlist:
    log: list[Entry] = field(default_factory=list)  # every change, by version
    listed: dict[int, Entry] = field(default_factory=dict)  # card id -> its entry while listed
    history: dict[int, list[Entry]] = field(default_factory=dict)  # card id -> its changes, by version

    @property
    def version(self) -> int:
        return self.log[-1].version if self.log else 0

    def add(self, entry: Entry) -> None:
        self.log.append(entry)
        self.history.setdefault(entry.card_id, []).append(entry)
        if entry.removed:
            self.listed.pop(entry.card_id, None)
        else:
            self.listed[entry.card_id] = entry

    def change(self, card_id: int, pan_hash: str, masked_pan: str, code: str | None) -> Entry | None:
        """List the card with `code`, or take it off with None; None when nothing changes."""
        current = self.listed.get(card_id)
        if code is None and current is None or current is not None and current.code == code:
            return None
        entry = Entry(self.version + 1, card_id, pan_hash, masked_pan, code or "", code is None)
        self.add(entry)
        return entry

    def code_at(self, card_id: int, version: int) -> str | None:
        """The card's hotlist code as of `version` (what a terminal holding that version knew)."""
        code = None
        for entry in self.history.get(card_id, ()):
            if entry.version > version:
                break
            code = None if entry.removed else entry.code
        return code

    def page(self, since_version: int, limit: int = PAGE_ENTRIES_MAX) -> Page:
        if since_version <= 0 or since_version > self.version:
            # A first sync, or a version this host never gave out: start again from a full list.
            snapshot = sorted(self.listed.values(), key=lambda e: e.version)
            chunk = snapshot[:limit]
            more = len(snapshot) > limit
            version = chunk[-1].version if more else self.version
            return Page(chunk, version, True, more)
        start = bisect.bisect_right(self.log, since_version, key=lambda e: e.version)
        chunk = self.log[start:start + limit]
        more = start + limit < len(self.log)
        return Page(chunk, chunk[-1].version if chunk else since_version, False, more)

