"""UploadOffline: sales a terminal approved while the host was unreachable, applied exactly once each.

Records arrive one by one on a client stream; each carries its own MAC (docs/pos-protocol.md §9.3).
They are decided in chunks: classification in Python, then every accepted sale of the chunk as one
forced `debit_batch` in the core, then the chunk's records handed to the journal writer — all
without an `await`, like an online decision, so the core's entries and the business records commit
together. An offline sale is never declined for funds (the fuel is sold): it may take the account
below zero, which is recorded, flagged for review and hotlists the account's cards until a top-up
clears the debt.

Risk bounds (docs/pos-protocol.md §9.3), all decided from memory: the floor limit (the card's own
as of the terminal's hotlist version, else the station's, else the network's), offline sales of one
card on one terminal per calendar day (counted in `SwitchState.offline_day_counts`, rebuilt at start
by switch/recovery.py), and per upload stream the count and total of what it applies (`UploadTally`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fuelswitch.v1 import pos_pb2

from core import Status
from switch import cardnumbers, hotlist, sm3
from switch import policy as P
from switch.journal import Record
from switch.keyring import Keyring
from switch.products import PRODUCTS
from switch.state import Card, PosMessage, Sale, Station, SwitchState

METHOD = "UploadOffline"
MAC_TRAILER = b"\x7a\x40"  # field 15, wire type 2, length 64
MAC_HEX_LEN = 64
CHUNK_RECORDS = 256  # records decided at once: bounds how long one chunk holds the event loop
HOLD_ID_DIGITS_MAX = 18  # hold ids are positive int64: anything longer is not one of ours
NEGATIVE_REVIEW = "offline sale took the account below zero"
DAY_MS = 24 * 3600 * 1000
UTC8_MS = 8 * 3600 * 1000
# Oldest sale an upload may bring: the per-card-per-day counts are rebuilt for this long at start.
OFFLINE_AGE_MS_MAX = 7 * DAY_MS


def offline_day(time_ms: int) -> int:
    """The calendar day (UTC+8) of a sale, as days since 1970-01-01: what max_per_card_per_day counts in."""
    return (time_ms + UTC8_MS) // DAY_MS


@dataclass(frozen=True)
class OfflineConfig:
    """The network's offline limits; a station may override all but max_age_ms (`for_station`)."""

    floor_limit: int = 30_000  # fen per sale
    max_count: int = 200  # sales one upload stream may apply (what a terminal may hold un-uploaded)
    max_total: int = 2_000_000  # fen one upload stream may apply
    max_age_ms: int = 3 * DAY_MS
    max_per_card_per_day: int = 2  # per card, terminal and calendar day (UTC+8) of the sale

    def __post_init__(self) -> None:
        if not 0 < self.max_age_ms <= OFFLINE_AGE_MS_MAX:
            raise ValueError(f"max_age_ms must be 1..{OFFLINE_AGE_MS_MAX}")

    def for_station(self, station: Station | None) -> OfflineConfig:
        """The limits a station's terminals work with: its own where set, these otherwise."""
        if station is None:
            return self
        own = {name: value for name, value in (
            ("floor_limit", station.offline_floor_limit), ("max_count", station.offline_max_count),
            ("max_total", station.offline_max_total), ("max_per_card_per_day", station.offline_max_per_card_per_day),
        ) if value is not None}
        return dataclasses.replace(self, **own) if own else self

    def message(self) -> pos_pb2.OfflineLimits:
        return pos_pb2.OfflineLimits(floor_limit=self.floor_limit, max_count=self.max_count,
                                     max_total=self.max_total, max_age_ms=self.max_age_ms,
                                     max_per_card_per_day=self.max_per_card_per_day)


@dataclass
class UploadTally:
    """What one upload stream has applied so far: checked against max_count and max_total."""

    count: int = 0
    total: int = 0


class RecordRefused(ValueError):
    """The record's framing or MAC is wrong: the whole stream ends (UNAUTHENTICATED / INVALID_ARGUMENT)."""


def split_record(raw: bytes) -> tuple[bytes, str]:
    """(the record's bytes without its MAC, the MAC) of B ‖ 7A 40 ‖ 64 hex characters."""
    if len(raw) < len(MAC_TRAILER) + MAC_HEX_LEN or raw[-MAC_HEX_LEN - 2:-MAC_HEX_LEN] != MAC_TRAILER:
        raise RecordRefused("the record's mac must be its last field (7A 40 then 64 hex characters)")
    try:
        return raw[:-MAC_HEX_LEN - 2], raw[-MAC_HEX_LEN:].decode("ascii")
    except UnicodeDecodeError:
        raise RecordRefused("the record's mac is not hex") from None


def sale_digest(record: pos_pb2.OfflineTransaction) -> bytes:
    """What makes a record "the same sale": everything but the upload time and the MAC."""
    copy = pos_pb2.OfflineTransaction()
    copy.CopyFrom(record)
    copy.header.terminal_time_ms = 0
    copy.mac = ""
    return sm3.sm3(copy.SerializeToString(deterministic=True))


@dataclass
class Chunk:
    """One chunk's outcome: a result per record, and what to commit."""

    results: list[pos_pb2.OfflineRecordResult] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)


@dataclass
class _Sale:
    at: int  # index of its result
    record: pos_pb2.OfflineTransaction
    digest: bytes
    card: Card
    txn_id: int
    day_key: tuple[str, int, int]  # (terminal, card, day) it counts in for max_per_card_per_day


_REASONS = {
    P.INVALID_AMOUNT: "amount must be more than 0",
    P.INVALID_CARD: "unknown card",
}


def decide_chunk(state: SwitchState, keyring: Keyring, terminal_id: str, station_id: str, now_ms: int,
                 config: OfflineConfig, records: list[pos_pb2.OfflineTransaction],
                 tally: UploadTally | None = None) -> Chunk:
    """Synchronous on purpose: see the module docstring. `config` is the network's limits (the station's
    own are applied here); `tally` is the upload stream's so far (a fresh one when None)."""
    limits = config.for_station(state.stations.get(station_id))
    tally = UploadTally() if tally is None else tally
    day_counts = state.offline_day_counts
    day_counts.prune(offline_day(now_ms - limits.max_age_ms))  # older sales are rejected (12) before counting
    counts = day_counts.counts
    chunk = Chunk()
    sales: list[_Sale] = []
    in_chunk: dict[int, bytes] = {}
    for record in records:
        stan, digest = record.header.stan, sale_digest(record)
        key = (terminal_id, stan)
        seen = state.messages.get(key)
        if seen is not None or stan in in_chunk:
            chunk.results.append(_repeat(seen, stan, digest, in_chunk.get(stan)))
            continue
        in_chunk[stan] = digest
        code, card, reason = _check(state, keyring, now_ms, limits, record)
        if code is None and card is not None:
            hold_id = _own_hold(state, record, card)
            duplicate = _completed_hold(state, record, hold_id)
            if duplicate is not None:
                chunk.results.append(_result(stan, "duplicate", P.APPROVED, "the hold was completed online",
                                             duplicate))
                continue
            day_key = (terminal_id, card.card_id, offline_day(record.transaction_time_ms))
            day_count = counts.get(day_key, 0)
            code, reason = _bounds(limits, tally, day_count, record.amount)
            if code is None:
                if hold_id is not None:  # the sale is applied: its hold (if still open) is released
                    state.ledger.void(hold_id)
                counts[day_key] = day_count + 1
                tally.count += 1
                tally.total += record.amount
                sales.append(_Sale(len(chunk.results), record, digest, card, state.ids.take(), day_key))
                chunk.results.append(pos_pb2.OfflineRecordResult())  # filled in below
                continue
        code = code or P.INVALID_CARD
        result = _result(stan, "rejected", code, reason or _REASONS.get(code, "rejected"))
        chunk.results.append(result)
        _remember(state, chunk, terminal_id, stan, digest, result, "", 0, now_ms)
    if sales:
        _apply(state, keyring, terminal_id, station_id, now_ms, sales, chunk, tally)
    return chunk


def _check(state: SwitchState, keyring: Keyring, now_ms: int, limits: OfflineConfig,
           record: pos_pb2.OfflineTransaction) -> tuple[str | None, Card | None, str]:
    """The §9.3 rules about the record itself, in the documented order: (code, card, reason), code
    None when they pass."""
    if record.amount <= 0:
        return P.INVALID_AMOUNT, None, ""
    if record.product_code not in PRODUCTS:
        return P.INVALID_TRANSACTION, None, "unknown product"
    if now_ms - record.transaction_time_ms > limits.max_age_ms:
        return P.INVALID_TRANSACTION, None, "sale older than max_age_ms"
    card = state.cards_by_index.get(cardnumbers.pan_index(keyring, record.pan))
    if card is None:
        return P.INVALID_CARD, None, ""
    entry = state.hotlist.entry_at(card.card_id, record.hotlist_version)  # what the terminal knew
    if entry is not None and entry.code:
        return entry.code, card, "card on the hotlist"
    floor_limit = limits.floor_limit
    if entry is not None and entry.floor_limit is not None:
        floor_limit = entry.floor_limit  # the card's own, in place of the station's or the network's
    if record.amount > floor_limit:
        return P.EXCEEDS_LIMIT, card, f"amount above the offline floor limit ({floor_limit} fen)"
    return None, card, ""


def _bounds(limits: OfflineConfig, tally: UploadTally, day_count: int, amount: int) -> tuple[str | None, str]:
    """The §9.3 bounds on how much is sold offline, in the documented order: (code, reason)."""
    if day_count >= limits.max_per_card_per_day:
        return P.EXCEEDS_FREQUENCY, f"card's offline sales on this terminal that day exceed {limits.max_per_card_per_day}"
    if tally.count >= limits.max_count:
        return P.EXCEEDS_FREQUENCY, f"more than max_count ({limits.max_count}) offline sales in one upload"
    if tally.total + amount > limits.max_total:
        return P.EXCEEDS_LIMIT, f"offline sales in one upload above max_total ({limits.max_total} fen)"
    return None, ""


def _own_hold(state: SwitchState, record: pos_pb2.OfflineTransaction, card: Card) -> int | None:
    """The record's `hold_id` if it names a hold placed on this card; None otherwise (ignored, so a
    record cannot release another card's hold)."""
    text = record.hold_id
    if not (text.isascii() and text.isdigit() and len(text) <= HOLD_ID_DIGITS_MAX):
        return None
    hold_id = int(text)
    owner = state.hold_cards.get(hold_id)
    return hold_id if owner is not None and owner[0] == card.card_id else None


def _completed_hold(state: SwitchState, record: pos_pb2.OfflineTransaction, hold_id: int | None) -> int | None:
    """With its own `hold_id`: the sale's id if that hold was completed online for this amount."""
    if hold_id is None:
        return None
    completed = state.completions.get(hold_id)
    if completed is not None and state.sales[completed].amount == record.amount:
        return completed
    return None


def _apply(state: SwitchState, keyring: Keyring, terminal_id: str, station_id: str, now_ms: int,
           sales: list[_Sale], chunk: Chunk, tally: UploadTally) -> None:
    statuses = state.ledger.debit_batch([(s.txn_id, s.card.account_id, s.record.amount) for s in sales],
                                        force=True)
    went_negative: set[int] = set()
    counts = state.offline_day_counts.counts
    for sale, status in zip(sales, statuses, strict=True):
        record, stan = sale.record, sale.record.header.stan
        if status not in (Status.OK, Status.OK_NEGATIVE):
            result = _result(stan, "rejected", P.SYSTEM_MALFUNCTION, status.name)
            chunk.results[sale.at] = result
            _remember(state, chunk, terminal_id, stan, sale.digest, result, "", 0, now_ms)
            counts[sale.day_key] -= 1  # not applied after all: it does not count
            tally.count -= 1
            tally.total -= record.amount
            continue
        negative = status is Status.OK_NEGATIVE
        account = sale.card.account_id
        state.sales[sale.txn_id] = Sale(sale.txn_id, account, sale.card.card_id, station_id, record.amount)
        original = _own_hold(state, record, sale.card)
        chunk.records.append(("offline_sale", (
            sale.txn_id, "offline_sale", account, sale.card.card_id, terminal_id, station_id, stan, record.amount,
            record.volume_ml, record.product_code, record.unit_price, original, None, P.APPROVED, now_ms,
            record.transaction_time_ms,
        )))
        if negative:
            chunk.records.append(("review", (sale.txn_id, NEGATIVE_REVIEW)))
            went_negative.add(account)
        result = _result(stan, "applied", P.APPROVED, "applied" + (" (account below zero)" if negative else ""),
                         sale.txn_id, flagged=negative)
        chunk.results[sale.at] = result
        _remember(state, chunk, terminal_id, stan, sale.digest, result, "debit", sale.txn_id, now_ms)
    for account in went_negative:
        chunk.records.extend(list_account(state, keyring, account, now_ms))


def list_account(state: SwitchState, keyring: Keyring, account_id: int, now_ms: int) -> list[Record]:
    """Hotlist the account's cards while it is below zero, and take them off once it is not."""
    rows: list[Record] = []
    for card in state.cards.values():
        if card.account_id == account_id:
            rows.extend(relist(state, keyring, card, now_ms))
    return rows


def relist(state: SwitchState, keyring: Keyring, card: Card, now_ms: int) -> list[Record]:
    """Bring the card's hotlist entry up to date: its state's decline code, else a debt's ("51"), and its
    own offline floor limit; off the list when none applies. The rows to commit (none if nothing changed)."""
    code = hotlist.STATE_CODES.get(card.state)
    if code is None and state.ledger.balance(card.account_id)[0] < 0:
        code = hotlist.NEGATIVE_CODE
    if not state.hotlist.differs(card.card_id, code, card.offline_floor_limit):
        return []
    current = state.hotlist.listed.get(card.card_id)
    pan_hash = current.pan_sm3 if current is not None else hotlist.pan_sm3(cardnumbers.decrypt(keyring, card.pan_enc))
    entry = state.hotlist.change(card.card_id, pan_hash, card.masked_pan, code, card.offline_floor_limit)
    return [] if entry is None else [("hotlist", entry.row(now_ms))]


def _remember(state: SwitchState, chunk: Chunk, terminal_id: str, stan: int, digest: bytes,
              result: pos_pb2.OfflineRecordResult, effect_kind: str, effect_ref: int, now_ms: int) -> None:
    """The STAN is used: a repeat of this record gets this result; another message with it gets 94."""
    body = result.SerializeToString()
    state.messages[(terminal_id, stan)] = PosMessage(METHOD, digest, body, effect_kind, effect_ref)
    chunk.records.append(("message", (terminal_id, stan, METHOD, digest, body, effect_kind, effect_ref, False,
                                      now_ms)))


def _repeat(seen: PosMessage | None, stan: int, digest: bytes, in_chunk: bytes | None) -> pos_pb2.OfflineRecordResult:
    same = seen is not None and seen.method == METHOD and seen.request_digest == digest and seen.response
    if same and seen is not None and seen.response is not None:
        first = pos_pb2.OfflineRecordResult.FromString(seen.response)
        if first.status == "applied":
            first.status, first.message = "duplicate", "applied before; nothing changed"
        return first
    if seen is None and in_chunk == digest:
        return _result(stan, "duplicate", P.APPROVED, "sent twice in this upload")
    return _result(stan, "rejected", P.DUPLICATE, "STAN already used for another message")


def _result(stan: int, status: str, code: str, message: str, txn_id: int | None = None, *,
            flagged: bool = False) -> pos_pb2.OfflineRecordResult:
    return pos_pb2.OfflineRecordResult(stan=stan, status=status, response_code=code, message=message,
                                       transaction_id=str(txn_id) if txn_id else "", flagged=flagged)
