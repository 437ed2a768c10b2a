"""What the host answers to each POS request: card policy, then the core, then the records to commit.

Every function here is synchronous on purpose: the decision, the core call and the hand-over of its
records to the journal writer happen without an `await` in between, so no other request can see a
half-made decision. The caller (pos_service) answers only after the records are committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fuelswitch.v1 import pos_pb2

from core import Status
from switch import cardnumbers, pinblock
from switch import policy as P
from switch.journal import Record
from switch.keyring import Keyring
from switch.prices import amount_matches
from switch.products import PRODUCTS, ceil_amount_for_volume
from switch.state import Card, PosMessage, Sale, SwitchState


@dataclass(frozen=True)
class Ctx:
    state: SwitchState
    terminal_id: str
    station_id: str
    stan: int
    pin_key: bytes
    keyring: Keyring
    now_ms: int
    hold_ttl_ms: int


@dataclass
class Outcome:
    response: Any  # a pos_pb2 response message
    records: list[Record] = field(default_factory=list)
    effect_kind: str = ""  # what a later Reverse of this STAN must undo
    effect_ref: int = 0


def _available(ctx: Ctx, account_id: int) -> tuple[int, int]:
    balance, held = ctx.state.ledger.balance(account_id)
    return balance, balance - held


def _txn_row(ctx: Ctx, txn_id: int, kind: str, card: Card | None, account_id: int, amount: int, code: str,
             *, volume_ml: int = 0, product: str = "", unit_price: int = 0, original: int | None = None) -> Record:
    return ("transaction", (
        txn_id, kind, account_id, card.card_id if card else None, ctx.terminal_id, ctx.station_id, ctx.stan,
        amount, volume_ml, product, unit_price, original, None, code, ctx.now_ms,
    ))


def _card_checks(ctx: Ctx, pan: str, pin_block: bytes, records: list[Record]) -> tuple[str | None, Card | None]:
    """Card known and usable, PIN right. Appends the card's new try counter to records if it changed."""
    card = ctx.state.cards_by_index.get(cardnumbers.pan_index(ctx.keyring, pan))
    code = P.card_state_code(card, ctx.now_ms)
    if code is not None or card is None:
        return code, card
    pin = P.check_pin(card, pan, ctx.keyring.get("pvk", card.pvk_version), ctx.pin_key, pin_block)
    changed = pin.tries_changed
    if pin.code is None and card.pvk_version != ctx.keyring.current("pvk")[0]:
        # The PIN was just proven: re-derive its check value under the newest PIN-verification key.
        card.pvk_version, pvk = ctx.keyring.current("pvk")
        card.pvv = pinblock.pin_verification_value(pvk, pan, pinblock.decrypt_pin(ctx.pin_key, pin_block, pan))
        changed = True
    if changed:
        records.append(("card", card.row()))
    return pin.code, card


def authorize(ctx: Ctx, req: pos_pb2.AuthorizeRequest) -> Outcome:
    records: list[Record] = []
    decline = pos_pb2.AuthorizeResponse
    if req.product_code not in PRODUCTS:
        return Outcome(decline(response_code=P.INVALID_TRANSACTION, message=f"unknown product {req.product_code!r}"[:120]))
    unit_price = ctx.state.prices.price(ctx.station_id, req.product_code, ctx.now_ms)
    if unit_price == 0:
        return Outcome(decline(response_code=P.INVALID_TRANSACTION, message="product not sold at this station"))
    requested = req.amount
    if requested == 0 and req.preset_volume_ml > 0:
        requested = ceil_amount_for_volume(req.preset_volume_ml, unit_price)
    if not 0 < requested <= P.AMOUNT_MAX_FEN:
        return Outcome(decline(response_code=P.INVALID_AMOUNT, message="amount must be 1..10000000 fen"))
    code, card = _card_checks(ctx, req.pan, req.pin_block, records)
    if code is not None or card is None:
        return Outcome(decline(response_code=code or P.INVALID_CARD, message="declined"), records)
    _, available = _available(ctx, card.account_id)
    code, amount = P.approved_amount(requested, available, card, req.partial_allowed)
    if amount == 0:  # a 51 tells the terminal what is available (pos.proto)
        shown = available if code == P.INSUFFICIENT_FUNDS else 0
        return Outcome(decline(response_code=code, message="declined", available_balance=shown), records)
    hold_id = ctx.state.ids.take()
    expires_at = ctx.now_ms + ctx.hold_ttl_ms
    status = ctx.state.ledger.hold(hold_id, [(card.account_id, amount)], expires_at)
    if status is not Status.OK:  # funds moved since the check cannot happen on one loop; kept as a guard
        code = P.INSUFFICIENT_FUNDS if status is Status.INSUFFICIENT_FUNDS else P.SYSTEM_MALFUNCTION
        return Outcome(decline(response_code=code, message=status.name), records)
    ctx.state.hold_cards[hold_id] = (card.card_id, ctx.terminal_id)
    records.append(_txn_row(ctx, hold_id, "authorize", card, card.account_id, amount, code,
                            product=req.product_code, unit_price=unit_price))
    _, available = _available(ctx, card.account_id)
    response = pos_pb2.AuthorizeResponse(
        response_code=code, message="approved" if code == P.APPROVED else "partially approved",
        hold_id=str(hold_id), approved_amount=amount, available_balance=available,
        approval_code=f"{hold_id % 1_000_000:06d}", expires_at_ms=expires_at,
        approved_volume_ml=amount * 1000 // unit_price, unit_price=unit_price,
    )
    return Outcome(response, records, "hold", hold_id)


def _own_hold(ctx: Ctx, hold_text: str) -> tuple[str | None, int]:
    """The hold id if it names a hold this terminal made; else the decline code."""
    try:
        hold_id = int(hold_text)
    except ValueError:
        return P.ORIGINAL_NOT_FOUND, 0
    owner = ctx.state.hold_cards.get(hold_id)
    if owner is None:
        return P.ORIGINAL_NOT_FOUND, 0
    if owner[1] != ctx.terminal_id:
        return P.INVALID_TRANSACTION, 0
    return None, hold_id


_SETTLE_CODES = {
    Status.HOLD_NOT_FOUND: P.ORIGINAL_NOT_FOUND,
    Status.HOLD_SETTLED: P.DUPLICATE,
    Status.HOLD_VOIDED: P.INVALID_TRANSACTION,
    Status.HOLD_EXPIRED: P.INVALID_TRANSACTION,
    Status.SETTLE_EXCEEDS_HOLD: P.INVALID_AMOUNT,
}


def complete(ctx: Ctx, req: pos_pb2.CompleteRequest) -> Outcome:
    reply = pos_pb2.CompleteResponse
    code, hold_id = _own_hold(ctx, req.hold_id)
    if code is not None:
        return Outcome(reply(response_code=code, message="no such hold for this terminal"))
    if req.amount < 0 or req.volume_ml < 0 or req.unit_price < 0:
        return Outcome(reply(response_code=P.INVALID_AMOUNT, message="amounts must not be negative"))
    card_id, _ = ctx.state.hold_cards[hold_id]
    card = ctx.state.cards[card_id]
    previous = ctx.state.completions.get(hold_id)
    if previous is not None and ctx.state.sales[previous].amount == req.amount:
        balance, available = _available(ctx, card.account_id)  # same completion again: the first result
        return Outcome(reply(response_code=P.APPROVED, message="already completed", transaction_id=str(previous),
                             settled_amount=req.amount, balance=balance, available=available))
    status = ctx.state.ledger.settle(hold_id, req.amount, ctx.now_ms)
    station_price = ctx.state.prices.price(ctx.station_id, req.product_code, ctx.now_ms)
    review = _price_review(req, station_price)
    advice = False
    txn_id = 0
    if status is Status.HOLD_EXPIRED and previous is None:
        # The fuel is in the tank: a completion after expiry is an advice, posted as a forced debit
        # up to what the hold reserved, and flagged so that someone looks at it.
        info = ctx.state.ledger.get_hold(hold_id)
        reserved = sum(amount for _, amount in info.legs) if info is not None else 0
        if req.amount > reserved:
            return Outcome(reply(response_code=P.INVALID_AMOUNT, message="more than the expired hold reserved"))
        if req.amount > 0:
            txn_id = ctx.state.ids.take()
            ctx.state.ledger.debit(txn_id, card.account_id, req.amount, force=True)
        review = "; ".join(filter(None, ("completed after the hold expired", review)))
        advice = True
    elif status is not Status.OK:
        return Outcome(reply(response_code=_SETTLE_CODES.get(status, P.SYSTEM_MALFUNCTION), message=status.name))
    balance, available = _available(ctx, card.account_id)
    if req.amount == 0:  # nothing fuelled: works as a cancel
        return Outcome(reply(response_code=P.APPROVED, message="completed for 0", balance=balance, available=available))
    txn_id = txn_id or ctx.state.ids.take()
    ctx.state.completions[hold_id] = txn_id
    ctx.state.sales[txn_id] = Sale(txn_id, card.account_id, card.card_id, ctx.station_id, req.amount)
    records = [_txn_row(ctx, txn_id, "complete", card, card.account_id, req.amount, P.APPROVED,
                        volume_ml=req.volume_ml, product=req.product_code, unit_price=req.unit_price,
                        original=hold_id)]
    if review:
        records.append(("review", (txn_id, review)))
    text = ("accepted as advice" if advice else "completed") + (f"; flagged for review: {review}" if review else "")
    response = reply(response_code=P.APPROVED, message=text,
                     transaction_id=str(txn_id), settled_amount=req.amount, balance=balance, available=available,
                     list_price=station_price)
    return Outcome(response, records, "debit", txn_id)


def _price_review(req: pos_pb2.CompleteRequest, station_price: int) -> str:
    """A completion is never declined over its price (the fuel is sold); a mismatch is flagged instead."""
    if not amount_matches(req.amount, req.volume_ml, req.unit_price):
        return "amount differs from litres × unit price"
    if req.unit_price and station_price and req.unit_price != station_price:
        return "unit price differs from the station's price"
    return ""


def cancel(ctx: Ctx, req: pos_pb2.CancelRequest) -> Outcome:
    code, hold_id = _own_hold(ctx, req.hold_id)
    if code is not None:
        return Outcome(pos_pb2.CancelResponse(response_code=code, message="no such hold for this terminal"))
    status = ctx.state.ledger.void(hold_id)
    if status in (Status.OK, Status.HOLD_EXPIRED):
        return Outcome(pos_pb2.CancelResponse(response_code=P.APPROVED, message="hold released"))
    return Outcome(pos_pb2.CancelResponse(response_code=P.INVALID_TRANSACTION, message=status.name))


def purchase(ctx: Ctx, req: pos_pb2.PurchaseRequest) -> Outcome:
    records: list[Record] = []
    reply = pos_pb2.PurchaseResponse
    if req.product_code and req.product_code not in PRODUCTS:
        return Outcome(reply(response_code=P.INVALID_TRANSACTION, message="unknown product"))
    if not 0 < req.amount <= P.AMOUNT_MAX_FEN or req.volume_ml < 0:
        return Outcome(reply(response_code=P.INVALID_AMOUNT, message="amount must be 1..10000000 fen"))
    code, card = _card_checks(ctx, req.pan, req.pin_block, records)
    if code is not None or card is None:
        return Outcome(reply(response_code=code or P.INVALID_CARD, message="declined"), records)
    _, available = _available(ctx, card.account_id)
    code, amount = P.approved_amount(req.amount, available, card, partial_requested=False)
    if amount == 0:
        return Outcome(reply(response_code=code, message="declined"), records)
    txn_id = ctx.state.ids.take()
    status = ctx.state.ledger.debit(txn_id, card.account_id, amount)
    if status is not Status.OK:
        return Outcome(reply(response_code=P.INSUFFICIENT_FUNDS, message=status.name), records)
    ctx.state.sales[txn_id] = Sale(txn_id, card.account_id, card.card_id, ctx.station_id, amount)
    records.append(_txn_row(ctx, txn_id, "purchase", card, card.account_id, amount, P.APPROVED,
                            volume_ml=req.volume_ml, product=req.product_code, unit_price=req.unit_price))
    balance, _ = _available(ctx, card.account_id)
    response = reply(response_code=P.APPROVED, message="approved", transaction_id=str(txn_id), balance=balance,
                     approval_code=f"{txn_id % 1_000_000:06d}")
    return Outcome(response, records, "debit", txn_id)


def refund(ctx: Ctx, req: pos_pb2.RefundRequest) -> Outcome:
    reply = pos_pb2.RefundResponse
    try:
        sale = ctx.state.sales.get(int(req.original_transaction_id))
    except ValueError:
        sale = None
    if sale is None:
        return Outcome(reply(response_code=P.ORIGINAL_NOT_FOUND, message="unknown original transaction"))
    if sale.station_id != ctx.station_id:
        return Outcome(reply(response_code=P.NOT_PERMITTED, message="refunds are made at the selling station"))
    if not 0 < req.amount <= sale.amount - sale.refunded:
        return Outcome(reply(response_code=P.INVALID_AMOUNT, message="more than the sale's unrefunded amount"))
    txn_id = ctx.state.ids.take()
    status = ctx.state.ledger.credit(txn_id, sale.account_id, req.amount)
    if status is not Status.OK:
        return Outcome(reply(response_code=P.SYSTEM_MALFUNCTION, message=status.name))
    sale.refunded += req.amount
    ctx.state.refunds[txn_id] = (sale.account_id, req.amount, sale.transaction_id)
    card = ctx.state.cards.get(sale.card_id)
    records = [_txn_row(ctx, txn_id, "refund", card, sale.account_id, req.amount, P.APPROVED,
                        original=sale.transaction_id)]
    balance, _ = _available(ctx, sale.account_id)
    return Outcome(reply(response_code=P.APPROVED, message="refunded", transaction_id=str(txn_id), balance=balance),
                   records, "credit", txn_id)


def balance_inquiry(ctx: Ctx, req: pos_pb2.BalanceInquiryRequest) -> Outcome:
    records: list[Record] = []
    code, card = _card_checks(ctx, req.pan, req.pin_block, records)
    if code is not None or card is None:
        return Outcome(pos_pb2.BalanceInquiryResponse(response_code=code or P.INVALID_CARD, message="declined"), records)
    balance, available = _available(ctx, card.account_id)
    return Outcome(pos_pb2.BalanceInquiryResponse(
        response_code=P.APPROVED, message="ok", balance=balance, available=available, masked_pan=card.masked_pan,
    ), records)


def reverse(ctx: Ctx, req: pos_pb2.ReverseRequest) -> Outcome:
    """Undo the effect of the terminal's message with `original_stan`, or bar that STAN if it never came."""
    reply = pos_pb2.ReverseResponse
    key = (ctx.terminal_id, req.original_stan)
    if req.original_stan == 0 or req.original_stan == ctx.stan:
        return Outcome(reply(response_code=P.INVALID_TRANSACTION, message="original_stan must name another message"))
    original = ctx.state.messages.get(key)
    if original is None:
        # The reversal beat its original: remember the STAN so the original is refused (94) if it comes.
        ctx.state.messages[key] = PosMessage("", None, None, reversed=True)
        return Outcome(reply(response_code=P.APPROVED, message="reversal recorded; original barred"),
                       [_message_row(ctx, key, ctx.state.messages[key])])
    if original.reversed:
        return Outcome(reply(response_code=P.APPROVED, message="already reversed"))
    code, records = _undo(ctx, original)
    if code != P.APPROVED:
        return Outcome(reply(response_code=code, message="cannot be reversed"))
    original.reversed = True
    records.append(_message_row(ctx, key, original))
    return Outcome(reply(response_code=P.APPROVED, message="reversed"), records)


def _undo(ctx: Ctx, original: PosMessage) -> tuple[str, list[Record]]:
    ledger = ctx.state.ledger
    if original.effect_kind == "":
        # A declined request or an inquiry moved nothing; completions and cancels are not reversible.
        not_reversible = original.method in ("Complete", "Cancel", "Reverse")
        return (P.INVALID_TRANSACTION if not_reversible else P.APPROVED), []
    if original.effect_kind == "hold":
        status = ledger.void(original.effect_ref)
        return (P.APPROVED if status in (Status.OK, Status.HOLD_EXPIRED) else P.INVALID_TRANSACTION), []
    if original.effect_kind == "debit":  # a purchase: give the money back, unless refunds already began
        sale = ctx.state.sales.get(original.effect_ref)
        if sale is None or sale.refunded != 0:
            return P.INVALID_TRANSACTION, []
        txn_id = ctx.state.ids.take()
        ledger.credit(txn_id, sale.account_id, sale.amount)
        sale.refunded = sale.amount
        card = ctx.state.cards.get(sale.card_id)
        return P.APPROVED, [_txn_row(ctx, txn_id, "reversal", card, sale.account_id, sale.amount, P.APPROVED,
                                     original=sale.transaction_id)]
    if original.effect_kind == "credit":  # a refund: take it back (forced: the money may be spent)
        refund = ctx.state.refunds.get(original.effect_ref)
        if refund is None:
            return P.INVALID_TRANSACTION, []
        account_id, amount, sale_id = refund
        txn_id = ctx.state.ids.take()
        ledger.debit(txn_id, account_id, amount, force=True)
        sale = ctx.state.sales.get(sale_id)
        if sale is not None:
            sale.refunded -= amount
        card = ctx.state.cards.get(sale.card_id) if sale else None
        return P.APPROVED, [_txn_row(ctx, txn_id, "reversal", card, account_id, amount, P.APPROVED,
                                     original=original.effect_ref)]
    return P.INVALID_TRANSACTION, []


def _message_row(ctx: Ctx, key: tuple[str, int], message: PosMessage) -> Record:
    return ("message", (key[0], key[1], message.method, message.request_digest, message.response,
                        message.effect_kind, message.effect_ref, message.reversed, ctx.now_ms))
