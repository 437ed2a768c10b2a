"""UploadOffline: sales a terminal approved while the host was unreachable, applied exactly once each.

Records arrive one by one on a client stream; each carries its own MAC (docs/pos-protocol.md §9.3).
They are decided in chunks: classification in Python, then every accepted sale of the chunk as one
forced `debit_batch` in the core, then the chunk's records handed to the journal writer — all
without an `await`, like an online decision, so the core's entries and the business records commit
together. An offline sale is never declined for funds (the fuel is sold): it may take the account
below zero, which is recorded, flagged for review and hotlists the account's cards until a top-up
clears the debt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fuelswitch.v1 import pos_pb2

from core import Status
from switch import cardnumbers, hotlist, sm3
from switch import policy as P
from switch.journal import Record
from switch.keyring import Keyring
from switch.products import PRODUCTS
from switch.state import Card, PosMessage, Sale, SwitchState

METHOD = "UploadOffline"
MAC_TRAILER = b"\x7a\x40"  # field 15, wire type 2, length 64
MAC_HEX_LEN = 64
CHUNK_RECORDS = 256  # records decided at once: bounds how long one chunk holds the event loop
NEGATIVE_REVIEW = "offline sale took the account below zero"


@dataclass(frozen=True)
class OfflineConfig:
    floor_limit: int = 30_000  # fen per sale
    max_count: int = 200
    max_total: int = 2_000_000
    max_age_ms: int = 3 * 24 * 3600 * 1000
    max_per_card_per_day: int = 2

    def message(self) -> pos_pb2.OfflineLimits:
        return pos_pb2.OfflineLimits(floor_limit=self.floor_limit, max_count=self.max_count,
                                     max_total=self.max_total, max_age_ms=self.max_age_ms,
                                     max_per_card_per_day=self.max_per_card_per_day)


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


def decide_chunk(state: SwitchState, keyring: Keyring, terminal_id: str, station_id: str, now_ms: int,
                 config: OfflineConfig, records: list[pos_pb2.OfflineTransaction]) -> Chunk:
    """Synchronous on purpose: see the module docstring."""
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
        code, card = _check(state, keyring, now_ms, config, record)
        if code is None and card is not None:
            duplicate = _completed_hold(state, record)
            if duplicate is not None:
                chunk.results.append(_result(stan, "duplicate", P.APPROVED, "the hold was completed online",
                                             duplicate))
                continue
            sales.append(_Sale(len(chunk.results), record, digest, card, state.ids.take()))
            chunk.results.append(pos_pb2.OfflineRecordResult())  # filled in below
            continue
        result = _result(stan, "rejected", code or P.INVALID_CARD, "rejected")
        chunk.results.append(result)
        _remember(state, chunk, terminal_id, stan, digest, result, "", 0, now_ms)
    if sales:
        _apply(state, keyring, terminal_id, station_id, now_ms, sales, chunk)
    return chunk


def _check(state: SwitchState, keyring: Keyring, now_ms: int, config: OfflineConfig,
           record: pos_pb2.OfflineTransaction) -> tuple[str | None, Card | None]:
    """The §9.3 rules, in the documented order; (None, card) when the sale is to be applied."""
    if record.amount <= 0:
        return P.INVALID_AMOUNT, None
    if record.product_code not in PRODUCTS or now_ms - record.transaction_time_ms > config.max_age_ms:
        return P.INVALID_TRANSACTION, None
    card = state.cards_by_index.get(cardnumbers.pan_index(keyring, record.pan))
    if card is None:
        return P.INVALID_CARD, None
    listed = state.hotlist.code_at(card.card_id, record.hotlist_version)
    if listed is not None:
        return listed, card
    if record.amount > config.floor_limit:
        return P.EXCEEDS_LIMIT, card
    return None, card


def _completed_hold(state: SwitchState, record: pos_pb2.OfflineTransaction) -> int | None:
    """With `hold_id`: release the hold if still open; the sale's id if it was completed for this amount."""
    if not record.hold_id.isdigit():
        return None
    hold_id = int(record.hold_id)
    completed = state.completions.get(hold_id)
    if completed is not None and state.sales[completed].amount == record.amount:
        return completed
    state.ledger.void(hold_id)  # an open hold is released; any other state is left as it is
    return None


def _apply(state: SwitchState, keyring: Keyring, terminal_id: str, station_id: str, now_ms: int,
           sales: list[_Sale], chunk: Chunk) -> None:
    statuses = state.ledger.debit_batch([(s.txn_id, s.card.account_id, s.record.amount) for s in sales],
                                        force=True)
    went_negative: set[int] = set()
    for sale, status in zip(sales, statuses, strict=True):
        record, stan = sale.record, sale.record.header.stan
        if status not in (Status.OK, Status.OK_NEGATIVE):
            result = _result(stan, "rejected", P.SYSTEM_MALFUNCTION, status.name)
            chunk.results[sale.at] = result
            _remember(state, chunk, terminal_id, stan, sale.digest, result, "", 0, now_ms)
            continue
        negative = status is Status.OK_NEGATIVE
        account = sale.card.account_id
        state.sales[sale.txn_id] = Sale(sale.txn_id, account, sale.card.card_id, station_id, record.amount)
        original = int(record.hold_id) if record.hold_id.isdigit() else None
        chunk.records.append(("transaction", (
            sale.txn_id, "offline_sale", account, sale.card.card_id, terminal_id, station_id, stan, record.amount,
            record.volume_ml, record.product_code, record.unit_price, original, None, P.APPROVED, now_ms,
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
    balance, _ = state.ledger.balance(account_id)
    code = hotlist.NEGATIVE_CODE if balance < 0 else None
    rows: list[Record] = []
    for card in state.cards.values():
        if card.account_id != account_id:
            continue
        current = state.hotlist.listed.get(card.card_id)
        if code is None and (current is None or current.code != hotlist.NEGATIVE_CODE):
            continue  # listed for another reason (lost, frozen, ...): not ours to remove
        entry = state.hotlist.change(card.card_id, hotlist.pan_sm3(cardnumbers.decrypt(keyring, card.pan_enc)),
                                     card.masked_pan, code)
        if entry is not None:
            rows.append(("hotlist", entry.row(now_ms)))
    return rows


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
