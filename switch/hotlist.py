"""The hotlist terminals use offline: versioned changes, so a terminal downloads only what changed.

Every change (a card leaves the usable states, comes back, its account goes negative and later
recovers, or its own offline floor limit is set or cleared) is one entry with the next version. An
entry is the card's whole offline record: a decline code, or none ("") with the card's own floor
limit, or `removed` when neither applies any more (docs/pos-protocol.md §9.1). Entries name cards
by SM3 of the PAN (the protocol lets a terminal hash a PAN without any key); it is computed from the
encrypted PAN when the card is listed, and only listed cards ever have one.
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
    code: str  # the decline code; "" when removed, or when the entry only carries floor_limit
    removed: bool
    floor_limit: int | None = None  # the card's own offline floor limit at this version; None = none

    def row(self, now_ms: int) -> tuple[object, ...]:
        return (self.version, self.card_id, self.pan_sm3, self.masked_pan, self.code, self.removed, now_ms,
                self.floor_limit)

    @property
    def wire_floor_limit(self) -> int:
        """HotlistEntry.floor_limit: meaningful only on an entry that declines nothing."""
        if self.code or self.removed or self.floor_limit is None:
            return 0
        return self.floor_limit


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

    def differs(self, card_id: int, code: str | None, floor_limit: int | None) -> bool:
        """Whether listing the card as (`code`, `floor_limit`) would change anything."""
        current = self.listed.get(card_id)
        if current is None:
            return code is not None or floor_limit is not None
        return current.code != (code or "") or current.floor_limit != floor_limit

    def change(self, card_id: int, pan_hash: str, masked_pan: str, code: str | None,
               floor_limit: int | None = None) -> Entry | None:
        """List the card with its decline `code` and/or its own `floor_limit`, or take it off when both
        are None; None when nothing changes."""
        if not self.differs(card_id, code, floor_limit):
            return None
        removed = code is None and floor_limit is None
        entry = Entry(self.version + 1, card_id, pan_hash, masked_pan, code or "", removed,
                      None if removed else floor_limit)
        self.add(entry)
        return entry

    def entry_at(self, card_id: int, version: int) -> Entry | None:
        """The card's entry as of `version` (what a terminal holding that version knew); None if unlisted."""
        found = None
        for entry in self.history.get(card_id, ()):
            if entry.version > version:
                break
            found = None if entry.removed else entry
        return found

    def code_at(self, card_id: int, version: int) -> str | None:
        """The card's decline code as of `version`; None when it was not declined then."""
        entry = self.entry_at(card_id, version)
        return entry.code or None if entry is not None else None  # "": listed for its floor limit only

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

