"""Rebuild the in-memory state from PostgreSQL (at start, and after a failed commit)."""

from __future__ import annotations

import asyncpg

from core import HoldState, Kind, Ledger, Status
from switch.hotlist import Entry
from switch.offline import DAY_MS, OFFLINE_AGE_MS_MAX, offline_day
from switch.protocol import STAN_RETENTION_MS
from switch.state import (
    AccountMeta,
    Card,
    ChannelTxn,
    IdAllocator,
    PosMessage,
    Sale,
    Station,
    SwitchState,
    Terminal,
)

LEDGER_SHARDS = 64
SALE_KINDS = ("complete", "purchase", "offline_sale")


async def load_state(conn: asyncpg.Connection, now_ms: int) -> SwitchState:
    """Everything committed, nothing else: accounts, holds, movements, cards, network, recent messages."""
    next_seq = await conn.fetchval("SELECT coalesce(max(seq), 0) + 1 FROM journal")
    ledger = Ledger(shards=LEDGER_SHARDS, next_seq=next_seq)
    max_id = 0
    state = SwitchState(ledger=ledger, ids=IdAllocator(1))

    for r in await conn.fetch("SELECT account_id, kind, holder_name, balance, overdraft, opening, created_ms FROM accounts"):
        ledger.restore_account(r["account_id"], r["balance"], r["overdraft"], r["opening"])
        state.accounts[r["account_id"]] = AccountMeta(r["account_id"], r["kind"], r["holder_name"], r["created_ms"])
        max_id = max(max_id, r["account_id"])

    for r in await conn.fetch("SELECT hold_id, account_ids, amounts, posted, expires_at, state, status FROM holds"):
        legs = list(zip(r["account_ids"], r["amounts"], strict=True))
        ledger.restore_hold(r["hold_id"], legs, r["expires_at"], HoldState(r["state"]), r["posted"], Status(r["status"]))
        max_id = max(max_id, r["hold_id"])

    for r in await conn.fetch("SELECT txn_id, kind, account_id, amount, forced, status FROM movements"):
        ledger.restore_txn(r["txn_id"], Kind(r["kind"]), r["account_id"], r["amount"], r["forced"], Status(r["status"]))
        max_id = max(max_id, r["txn_id"])

    for r in await conn.fetch("SELECT * FROM cards"):
        state.add_card(Card(
            r["card_id"], r["account_id"], bytes(r["pan_index"]), bytes(r["pan_enc"]), r["masked_pan"],
            bytes(r["pvv"]), r["pvk_version"], r["pin_tries"], r["state"], r["per_txn_limit"],
            r["partial_allowed"], r["expiry"], r["parent_card_id"], r["created_ms"], r["offline_floor_limit"],
        ))
        max_id = max(max_id, r["card_id"])

    for r in await conn.fetch("SELECT station_id, name, region, latitude, longitude, station_class, offline_floor_limit,"
                              " offline_max_count, offline_max_total, offline_max_per_card_per_day FROM stations"):
        state.stations[r["station_id"]] = Station(
            r["station_id"], r["name"], r["region"], r["latitude"], r["longitude"], r["station_class"],
            r["offline_floor_limit"], r["offline_max_count"], r["offline_max_total"], r["offline_max_per_card_per_day"],
        )
    for r in await conn.fetch("SELECT terminal_id, station_id, public_key, state, state_reason FROM terminals"):
        state.terminals[r["terminal_id"]] = Terminal(r["terminal_id"], r["station_id"], r["public_key"], r["state"],
                                                     r["state_reason"])

    for r in await conn.fetch("SELECT station_id, product_code, effective_ms, unit_price FROM station_prices"):
        state.prices.set(r["station_id"], r["product_code"], r["unit_price"], r["effective_ms"])
    for r in await conn.fetch("SELECT * FROM hotlist ORDER BY version"):
        state.hotlist.add(Entry(r["version"], r["card_id"], r["pan_sm3"], r["masked_pan"], r["response_code"],
                                r["removed"], r["floor_limit"]))
    await _load_offline_day_counts(conn, state, now_ms)

    rows = await conn.fetch(
        "SELECT terminal_id, stan, method, request_digest, response, effect_kind, effect_ref, reversed"
        " FROM pos_messages WHERE recorded_ms >= $1",
        now_ms - STAN_RETENTION_MS,
    )
    for r in rows:
        digest = bytes(r["request_digest"]) if r["request_digest"] is not None else None
        response = bytes(r["response"]) if r["response"] is not None else None
        state.messages[(r["terminal_id"], r["stan"])] = PosMessage(
            r["method"], digest, response, r["effect_kind"], r["effect_ref"], r["reversed"]
        )

    rows = await conn.fetch(
        "SELECT transaction_id, kind, account_id, card_id, terminal_id, station_id, amount, original_id, reference"
        " FROM transactions ORDER BY transaction_id"
    )
    for r in rows:
        max_id = max(max_id, r["transaction_id"])
        _replay_transaction(state, r)
    await _load_clearing(conn, state)
    state.ids = IdAllocator(max_id + 1)
    return state


def _replay_transaction(state: SwitchState, r: asyncpg.Record) -> None:
    """Rebuild the refund, reversal and completion bookkeeping from one business record."""
    txn_id, kind, original = r["transaction_id"], r["kind"], r["original_id"]
    if kind == "authorize":
        state.hold_cards[txn_id] = (r["card_id"], r["terminal_id"])
    elif kind in SALE_KINDS:
        state.sales[txn_id] = Sale(txn_id, r["account_id"], r["card_id"], r["station_id"] or "", r["amount"])
        if kind == "complete":
            state.completions[original] = txn_id
    elif kind == "refund" and original in state.sales:
        state.sales[original].refunded += r["amount"]
        state.refunds[txn_id] = (r["account_id"], r["amount"], original)
    elif kind == "reversal":
        if original in state.sales:  # a reversed purchase
            state.sales[original].refunded += r["amount"]
        elif original in state.refunds:  # a reversed refund
            sale_id = state.refunds[original][2]
            state.sales[sale_id].refunded -= r["amount"]
    elif kind == "topup" and r["reference"]:
        state.topups[r["reference"]] = (txn_id, r["account_id"], r["amount"])


async def _load_offline_day_counts(conn: asyncpg.Connection, state: SwitchState, now_ms: int) -> None:
    """Offline sales per (terminal, card, day) for every day an upload may still reach (max_per_card_per_day)."""
    first_day = offline_day(now_ms - OFFLINE_AGE_MS_MAX)
    rows = await conn.fetch(
        "SELECT terminal_id, card_id, sale_time_ms FROM transactions"
        " WHERE sale_time_ms >= $1 AND kind = 'offline_sale'",
        now_ms - OFFLINE_AGE_MS_MAX - DAY_MS,
    )
    counts = state.offline_day_counts
    counts.kept_from_day = first_day
    for r in rows:
        key = (r["terminal_id"], r["card_id"], offline_day(r["sale_time_ms"]))
        if key[2] >= first_day:
            counts.counts[key] = counts.counts.get(key, 0) + 1


async def _load_clearing(conn: asyncpg.Connection, state: SwitchState) -> None:
    """The exactly-once map of channel payments/refunds, their refund sums, and decided discrepancies."""
    rows = await conn.fetch(
        "SELECT channel, channel_txn_id, kind, account_id, amount, transaction_id, original_txn_id, station_id,"
        " reversed_amount, reversal_id FROM channel_transactions"
    )
    txns = state.channel_txns
    for r in rows:
        txns[(r["channel"], r["channel_txn_id"])] = ChannelTxn(
            r["kind"], r["account_id"], r["amount"], r["transaction_id"], r["original_txn_id"] or "",
            r["station_id"], reversed=r["reversed_amount"], reversal_id=r["reversal_id"] or 0,
        )
    for (channel, channel_txn_id), txn in txns.items():
        if txn.kind == "refund":
            txns[(channel, txn.original)].refunded += txn.amount
            # Its reference is taken, as a payment's is (by _replay_transaction): an operator TopUp
            # reusing it is refused rather than failing the commit on the unique index.
            state.topups[f"{channel}:{channel_txn_id}"] = (txn.transaction_id, txn.account_id, -txn.amount)
    for r in await conn.fetch("SELECT run_id, channel_txn_id FROM reconciliation_resolutions"):
        state.resolutions.add((r["run_id"], r["channel_txn_id"]))

