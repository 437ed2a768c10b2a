"""The operations a load mix draws from, each checked against the lane's model of its card.

Every handler gets the lane's context and one card the lane owns (no other call touches that card
while it runs), predicts the answer from the model, makes the calls, compares, and updates the
model. It returns True when the model predicted a decline and got it. Errors (gRPC failures,
unexpected response codes) and mismatches (wrong values in an expected answer) go to the lane's
stats; the card is then retired, since the model no longer knows its state.

| name | calls | checked |
| --- | --- | --- |
| auth_complete | Authorize, Complete | 00/51, approved, available; settled, balance, available |
| cancel | Authorize, Cancel | as above; Cancel 00 and the balance untouched (seen by the next call) |
| purchase | Purchase | 00/51; balance after the sale |
| inquiry | BalanceInquiry | balance and available equal the model |
| topup | CardAdmin TopUp on the card's own account | balance and available after the credit |
| offline | UploadOffline of 1–3 sales of this card | per record applied/rejected with the code the station's limits predict |

Adding an operation (e.g. a streaming forecourt session): write `async def handler(context, card)
-> bool` in any module, decorate it with `@operation("name")` (`prepare=` for per-run setup such as
extra stubs, kept in `Kit.extras`), and import that module at the bottom of this one. `--mix`
accepts every registered name; only `auth_complete` also runs against the naive baseline.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from fuelswitch.v1 import admin_pb2, pos_pb2

from loadtest.provision import Operator
from loadtest.terminal import Terminal, TerminalError
from loadtest.workload import (
    AUTH_COMPLETE,
    DEFAULT_UNIT_PRICE_FEN,
    LoadOptions,
    _Card,
    _describe,
    _pair,
    _Stats,
)
from switch.offline import offline_day

Handler = Callable[["LaneContext", _Card], Awaitable[bool]]
Prepare = Callable[["Kit", grpc.aio.Channel, Sequence[Terminal], LoadOptions], Awaitable[None]]

TOPUP_MIN_FEN = 100
TOPUP_MAX_FEN = 50_000
OFFLINE_RECORDS_MAX = 3  # per upload: far below any station's per-stream max_count
OFFLINE_MIN_FEN = 100
OFFLINE_MAX_FEN = 5_000
OFFLINE_SALE_AGE_MS = 60_000  # the sale happened a minute before the upload
HOTLIST_PAGES_MAX = 1_000


@dataclass(frozen=True)
class Registered:
    handler: Handler
    prepare: Prepare | None = None


HANDLERS: dict[str, Registered] = {}
BASELINE_OPERATIONS = frozenset({AUTH_COMPLETE})  # all the naive baseline implements


def operation(name: str, *, prepare: Prepare | None = None) -> Callable[[Handler], Handler]:
    """Register `handler` under `name` for `--mix` (see the module docstring)."""

    def register(handler: Handler) -> Handler:
        if name in HANDLERS:
            raise ValueError(f"operation {name!r} is registered twice")
        HANDLERS[name] = Registered(handler, prepare)
        return handler

    return register


@dataclass(frozen=True)
class OfflineLimits:
    """What the terminal learnt from SyncHotlist: its station's limits and the hotlist version."""

    floor_limit: int
    max_count: int
    max_total: int
    max_per_card_per_day: int
    hotlist_version: int


@dataclass
class Kit:
    """What the operations of one client process share: stubs and per-terminal facts."""

    options: LoadOptions
    admin: Operator | None = None
    offline: dict[str, OfflineLimits] = field(default_factory=dict)  # by terminal id
    extras: dict[str, Any] = field(default_factory=dict)  # for operations registered elsewhere

    def lane(
        self, terminal: Terminal, rng: random.Random, pump: int, number: int, stats: _Stats
    ) -> LaneContext:
        return LaneContext(self, terminal, rng, pump, number, stats)

    async def run(self, name: str, context: LaneContext, card: _Card) -> bool:
        return await HANDLERS[name].handler(context, card)


@dataclass
class LaneContext:
    kit: Kit
    terminal: Terminal
    rng: random.Random
    pump: int
    number: int
    stats: _Stats
    references: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def options(self) -> LoadOptions:
        return self.kit.options

    def where(self, card: _Card) -> str:
        return f"{self.terminal.terminal_id} card …{card.pan[-4:]}"

    def failed(self, card: _Card, kind: str, text: str) -> None:
        self.stats.problem(kind, f"{self.where(card)} {text}")
        card.retired = True


async def prepare(
    channel: grpc.aio.Channel, terminals: Sequence[Terminal], options: LoadOptions
) -> Kit:
    """Run the `prepare` step of every operation in the mix once for this client process."""
    assert options.mix is not None
    kit = Kit(options)
    for name in options.mix.names:
        registered = HANDLERS[name]
        if registered.prepare is not None:
            await registered.prepare(kit, channel, terminals, options)
    return kit


# ---------------------------------------------------------------------- operations


@operation(AUTH_COMPLETE)
async def auth_complete(context: LaneContext, card: _Card) -> bool:
    return await _pair(
        context.terminal, card, context.rng, context.pump, context.options, context.stats
    )


@operation("cancel")
async def cancel(context: LaneContext, card: _Card) -> bool:
    return await _pair(
        context.terminal,
        card,
        context.rng,
        context.pump,
        context.options,
        context.stats,
        then_cancel=True,
    )


@operation("purchase")
async def purchase(context: LaneContext, card: _Card) -> bool:
    options = context.options
    amount = context.rng.randint(options.amount_min_fen, options.amount_max_fen)
    volume = amount * 1000 // DEFAULT_UNIT_PRICE_FEN
    expected = "00" if amount <= card.balance else "51"
    started = time.perf_counter_ns()
    try:
        sent = await context.terminal.purchase(
            card.pan, card.pin, amount, options.product_code, volume, DEFAULT_UNIT_PRICE_FEN
        )
    except (grpc.aio.AioRpcError, TerminalError) as exc:
        context.failed(card, "error", f"Purchase: {_describe(exc)}")
        return False
    context.stats.latency(started)
    reply = sent.response
    if reply.response_code != expected:
        context.failed(
            card,
            "error",
            f"Purchase {amount} stan {sent.stan}: {reply.response_code} ({reply.message}), "
            f"model expected {expected} (balance {card.balance})",
        )
        return False
    if expected == "51":
        context.stats.declines += 1
        return True
    balance = card.balance - amount
    if reply.balance != balance or not reply.transaction_id:
        context.failed(
            card,
            "mismatch",
            f"Purchase {amount} stan {sent.stan}: balance {reply.balance}/{balance}, "
            f"transaction {reply.transaction_id!r}",
        )
    card.balance = balance
    return False


@operation("inquiry")
async def inquiry(context: LaneContext, card: _Card) -> bool:
    started = time.perf_counter_ns()
    try:
        sent = await context.terminal.balance_inquiry(card.pan, card.pin)
    except (grpc.aio.AioRpcError, TerminalError) as exc:
        context.failed(card, "error", f"BalanceInquiry: {_describe(exc)}")
        return False
    context.stats.latency(started)
    reply = sent.response
    if reply.response_code != "00":
        context.failed(
            card,
            "error",
            f"BalanceInquiry stan {sent.stan}: {reply.response_code} ({reply.message}), "
            "model expected 00",
        )
    elif (reply.balance, reply.available) != (card.balance, card.balance):
        context.failed(
            card,
            "mismatch",
            f"BalanceInquiry stan {sent.stan}: balance {reply.balance}/{card.balance}, "
            f"available {reply.available}/{card.balance}",
        )
    return False


async def _prepare_admin(
    kit: Kit, channel: grpc.aio.Channel, terminals: Sequence[Terminal], options: LoadOptions
) -> None:
    if not options.operator_token:
        raise ValueError("the topup operation needs the operator token (CardAdmin)")
    kit.admin = Operator(channel, options.operator_token)


@operation("topup", prepare=_prepare_admin)
async def topup(context: LaneContext, card: _Card) -> bool:
    assert context.kit.admin is not None
    if not card.account_id:
        raise ValueError("the topup operation needs the cards' account ids (provisioned cards)")
    amount = context.rng.randint(TOPUP_MIN_FEN, TOPUP_MAX_FEN)
    reference = f"loadtest-{context.options.run_tag}-{context.number}-{next(context.references)}"
    started = time.perf_counter_ns()
    try:
        reply = await context.kit.admin.call(
            "TopUp",
            admin_pb2.TopUpRequest(account_id=card.account_id, amount=amount, reference=reference),
        )
    except grpc.aio.AioRpcError as exc:
        context.failed(card, "error", f"TopUp {amount} {reference}: {_describe(exc)}")
        return False
    context.stats.latency(started)
    balance = card.balance + amount
    if (reply.balance, reply.available) != (balance, balance) or not reply.transaction_id:
        context.failed(
            card,
            "mismatch",
            f"TopUp {amount} {reference}: balance {reply.balance}/{balance}, available "
            f"{reply.available}/{balance}, transaction {reply.transaction_id!r}",
        )
    card.balance = balance
    return False


async def _prepare_offline(
    kit: Kit, channel: grpc.aio.Channel, terminals: Sequence[Terminal], options: LoadOptions
) -> None:
    """Each terminal syncs its hotlist once: the station's offline limits and the version."""
    for terminal in terminals:
        version = 0
        for _ in range(HOTLIST_PAGES_MAX):
            reply = (await terminal.sync_hotlist(version)).response
            if reply.response_code != "00":
                raise RuntimeError(
                    f"{terminal.terminal_id} SyncHotlist: {reply.response_code} ({reply.message})"
                )
            version = reply.version
            if not reply.more:
                break
        limits = reply.offline_limits
        kit.offline[terminal.terminal_id] = OfflineLimits(
            limits.floor_limit,
            limits.max_count,
            limits.max_total,
            limits.max_per_card_per_day,
            version,
        )


@operation("offline", prepare=_prepare_offline)
async def offline(context: LaneContext, card: _Card) -> bool:
    """Upload 1–3 offline sales of this card; predict each record's result from the limits.

    Amounts are kept within the card's balance (a forced debit below zero would put the card on
    the hotlist, which is a different scenario); a card too poor for even one sale is read back
    with BalanceInquiry instead.
    """
    limits = context.kit.offline[context.terminal.terminal_id]
    rng = context.rng
    amounts = [
        rng.randint(OFFLINE_MIN_FEN, OFFLINE_MAX_FEN)
        for _ in range(rng.randint(1, OFFLINE_RECORDS_MAX))
    ]
    while amounts and sum(amounts) > card.balance:
        amounts.pop()
    if not amounts:
        return await inquiry(context, card)
    sale_time_ms = context.terminal.now_ms() - OFFLINE_SALE_AGE_MS
    day = offline_day(sale_time_ms)
    records = [
        pos_pb2.OfflineTransaction(
            pan=card.pan,
            amount=amount,
            volume_ml=amount * 1000 // DEFAULT_UNIT_PRICE_FEN,
            product_code=context.options.product_code,
            unit_price=DEFAULT_UNIT_PRICE_FEN,
            transaction_time_ms=sale_time_ms,
            hotlist_version=limits.hotlist_version,
            pump=context.pump,
        )
        for amount in amounts
    ]
    expected = _predict_offline(card, day, amounts, limits)
    started = time.perf_counter_ns()
    try:
        reply = await context.terminal.upload_offline(records)
    except (grpc.aio.AioRpcError, TerminalError) as exc:
        context.failed(card, "error", f"UploadOffline {amounts}: {_describe(exc)}")
        return False
    context.stats.latency(started)
    got = [(r.status, r.response_code) for r in reply.results]
    if reply.response_code != "00" or got != expected:
        context.failed(
            card,
            "error",
            f"UploadOffline {amounts}: {reply.response_code} ({reply.message}) results {got}, "
            f"model expected {expected}",
        )
        return False
    applied = [a for a, (status, _) in zip(amounts, expected, strict=True) if status == "applied"]
    for result, (status, _) in zip(reply.results, expected, strict=True):
        if status == "applied" and (result.flagged or not result.transaction_id):
            context.failed(
                card,
                "mismatch",
                f"UploadOffline stan {result.stan}: flagged {result.flagged}, "
                f"transaction {result.transaction_id!r}",
            )
    if (reply.applied, reply.rejected, reply.duplicate) != (len(applied), len(amounts) - len(applied), 0):
        context.failed(
            card,
            "mismatch",
            f"UploadOffline totals applied/rejected/duplicate {reply.applied}/{reply.rejected}/"
            f"{reply.duplicate}, model {len(applied)}/{len(amounts) - len(applied)}/0",
        )
    card.balance -= sum(applied)
    card.offline_per_day[day] += len(applied)
    context.stats.declines += len(amounts) - len(applied)
    return not applied


def _predict_offline(
    card: _Card, day: int, amounts: list[int], limits: OfflineLimits
) -> list[tuple[str, str]]:
    """docs/pos-protocol.md §9.3, rows 7 and 9–12 (the others cannot occur for these records)."""
    results = []
    applied_today = card.offline_per_day[day]
    stream_count = stream_total = 0
    for amount in amounts:
        if amount > limits.floor_limit:
            results.append(("rejected", "61"))
        elif applied_today >= limits.max_per_card_per_day or stream_count >= limits.max_count:
            results.append(("rejected", "65"))
        elif stream_total + amount > limits.max_total:
            results.append(("rejected", "61"))
        else:
            results.append(("applied", "00"))
            applied_today += 1
            stream_count += 1
            stream_total += amount
    return results


# Operations defined in other modules register themselves when imported: import them here, after
# everything above exists (they import `operation` from this module), e.g. a streaming forecourt
# session as `stream`.
