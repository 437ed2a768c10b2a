"""CardAdmin over gRPC: accounts, cards, top-ups, stations and terminals, behind the operator token.

Like the POS path, each mutation changes memory and hands its records to the journal writer without
an `await` in between, and answers only after the commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
import grpc
from fuelswitch.v1 import admin_pb2
from fuelswitch.v1.common_pb2 import ProductPrice

from core import Status
from switch import cardnumbers, pinblock
from switch.app import App
from switch.config import STATION_CLASS_RE
from switch.errors import OperatorError, RequestInvalid, parsing
from switch.journal import Record
from switch.offline import OfflineConfig, list_account, relist
from switch.operator_auth import require_operator
from switch.policy import AMOUNT_MAX_FEN, CST
from switch.products import PRODUCTS
from switch.state import (
    ACCOUNT_KINDS,
    TERMINAL_STATES,
    AccountMeta,
    Card,
    Station,
    Terminal,
)

SERVICE = "fuelswitch.v1.CardAdmin"
PAN_PREFIX = "900001"  # this network's issuer identification number (19-digit PANs)
CARD_VALIDITY_YEARS = 5
PUBLIC_KEY_RE = re.compile(r"^04[0-9a-fA-F]{128}$")
PIN_RE = re.compile(r"^[0-9]{4,6}$")
EXPIRY_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 500
TOPUP_MAX_FEN = AMOUNT_MAX_FEN * 10  # ¥1,000,000 in one top-up
UNIT_PRICE_MAX_FEN = 100_000  # ¥1,000 per litre: anything above is a typo
# Bounds of the offline limits an operator may set (admin.proto OfflineLimitSettings).
OFFLINE_COUNT_MAX = 1_000_000  # max_count, max_per_card_per_day
OFFLINE_TOTAL_MAX_FEN = 10**13  # max_total
# ListTransactions' balance_change: the sign each kind moves the account's balance by. A POS
# reversal's sign depends on what it undid (a hold moves nothing), so it is left at 0.
_BALANCE_SIGNS = {"complete": -1, "purchase": -1, "offline_sale": -1, "refund": 1, "topup": 1,
                  "channel_refund": -1, "channel_reversal": -1}
STATE_CHANGES = {
    "active": {"frozen", "lost", "closed"},
    "frozen": {"active", "lost", "closed"},
    "lost": {"closed"},
    "expired": {"closed"},
    "closed": set(),
}


def luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def pan_for(card_id: int) -> str:
    body = PAN_PREFIX + f"{card_id:012d}"
    return body + luhn_digit(body)


def _id(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RequestInvalid(f"{what} must be a decimal id") from None
    if value <= 0:
        raise RequestInvalid(f"{what} must be positive")
    return value


class CardAdmin:
    def __init__(self, app: App, operator_token: str) -> None:
        self.app = app
        self._token = operator_token.encode()

    def authorize(self, context: grpc.aio.ServicerContext) -> None:
        require_operator(context, self._token)

    def _writable(self) -> None:
        """Memory may be changed, or read as committed: not while a rebuild runs (it is pre-failure then)."""
        if not self.app.available:
            raise OperatorError(grpc.StatusCode.UNAVAILABLE, "the switch is recovering; retry")

    # -- accounts ---------------------------------------------------------------------

    async def create_account(self, req: admin_pb2.CreateAccountRequest, _: Any) -> admin_pb2.Account:
        if req.kind not in ACCOUNT_KINDS:
            raise RequestInvalid(f"kind must be one of {', '.join(ACCOUNT_KINDS)}")
        if len(req.holder_name) > 200:
            raise RequestInvalid("holder_name is longer than 200 characters")
        self._writable()
        state, now = self.app.state, self.app.clock_ms()
        account_id = state.ids.take()
        if state.ledger.open_account(account_id, 0) is not Status.OK:
            raise OperatorError(grpc.StatusCode.INTERNAL, "could not open the account")
        state.accounts[account_id] = AccountMeta(account_id, req.kind, req.holder_name, now)
        await self.app.commit([("account", (account_id, req.kind, req.holder_name, 0, 0, now))])
        return self._account(account_id)

    async def get_account(self, req: admin_pb2.GetAccountRequest, _: Any) -> admin_pb2.Account:
        self._writable()
        return self._account(self._known_account(req.account_id))

    def _known_account(self, text: str) -> int:
        account_id = _id(text, "account_id")
        if account_id not in self.app.state.accounts:
            raise OperatorError(grpc.StatusCode.NOT_FOUND, f"account {account_id} not found")
        return account_id

    def _account(self, account_id: int) -> admin_pb2.Account:
        state = self.app.state
        meta = state.accounts[account_id]
        balance, held = state.ledger.balance(account_id)
        cards = [str(c.card_id) for c in state.cards.values() if c.account_id == account_id]
        return admin_pb2.Account(
            account_id=str(account_id), kind=meta.kind, balance=balance, held=held, available=balance - held,
            points=0, tier="standard", holder_name=meta.holder_name, created_at_ms=meta.created_ms, card_ids=cards,
        )

    async def top_up(self, req: admin_pb2.TopUpRequest, _: Any) -> admin_pb2.TopUpResponse:
        account_id = self._known_account(req.account_id)
        if not 0 < req.amount <= TOPUP_MAX_FEN:
            raise RequestInvalid(f"amount must be 1..{TOPUP_MAX_FEN} fen")
        if not req.reference or len(req.reference) > 64:
            raise RequestInvalid("reference is required (at most 64 characters); it makes the top-up idempotent")
        self._writable()
        state = self.app.state
        previous = state.topups.get(req.reference)
        if previous is not None:
            if previous[1:] != (account_id, req.amount):
                raise OperatorError(grpc.StatusCode.ALREADY_EXISTS, "reference already used for another top-up")
            return self._topup_response(account_id, previous[0])
        txn_id = state.ids.take()
        status = state.ledger.credit(txn_id, account_id, req.amount)
        if status is not Status.OK:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"top-up refused: {status.name}")
        state.topups[req.reference] = (txn_id, account_id, req.amount)
        now = self.app.clock_ms()
        row = (txn_id, "topup", account_id, None, None, None, None, req.amount, 0, "", 0, None, req.reference, "00", now)
        # A top-up that settles an offline debt takes the account's cards off the hotlist.
        await self.app.commit([("transaction", row), *list_account(state, self.app.keyring, account_id, now)])
        return self._topup_response(account_id, txn_id)

    def _topup_response(self, account_id: int, txn_id: int) -> admin_pb2.TopUpResponse:
        balance, held = self.app.state.ledger.balance(account_id)
        return admin_pb2.TopUpResponse(balance=balance, available=balance - held, transaction_id=str(txn_id))

    # -- cards --------------------------------------------------------------------------

    async def issue_card(self, req: admin_pb2.IssueCardRequest, _: Any) -> admin_pb2.Card:
        account_id = self._known_account(req.account_id)
        if not PIN_RE.match(req.pin):
            raise RequestInvalid("pin must be 4 to 6 digits")
        if req.expiry and not EXPIRY_RE.match(req.expiry):
            raise RequestInvalid("expiry must be YYYY-MM")
        limit = req.per_transaction_limit or req.controls.per_transaction_limit
        if not 0 <= limit <= AMOUNT_MAX_FEN:
            raise RequestInvalid(f"per_transaction_limit must be 0..{AMOUNT_MAX_FEN} fen")
        parent = self._card(req.parent_card_id) if req.parent_card_id else None
        if parent is not None and parent.account_id != account_id:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, "a sub card spends from its parent's account")
        self._writable()
        state, now = self.app.state, self.app.clock_ms()
        card_id = state.ids.take()
        pan = pan_for(card_id)
        keyring = self.app.keyring
        pvk_version, pvk = keyring.current("pvk")
        card = Card(
            card_id, account_id, cardnumbers.pan_index(keyring, pan), cardnumbers.encrypt(keyring, pan),
            cardnumbers.mask_pan(pan), pinblock.pin_verification_value(pvk, pan, req.pin), pvk_version, 0, "active",
            limit, req.partial_allowed or req.controls.partial_allowed, req.expiry or _default_expiry(now),
            parent.card_id if parent else None, now,
        )
        state.add_card(card)
        await self.app.commit([("card", card.row())])
        return _card_message(card, full_pan=pan)

    async def get_card(self, req: admin_pb2.GetCardRequest, _: Any) -> admin_pb2.Card:
        self._writable()
        return _card_message(self._card(req.card_id))

    def _card(self, text: str) -> Card:
        card = self.app.state.cards.get(_id(text, "card_id"))
        if card is None:
            raise OperatorError(grpc.StatusCode.NOT_FOUND, f"card {text} not found")
        return card

    async def set_card_state(self, req: admin_pb2.SetCardStateRequest, _: Any) -> admin_pb2.Card:
        card = self._card(req.card_id)
        if req.state not in STATE_CHANGES:
            raise RequestInvalid(f"state must be one of {', '.join(STATE_CHANGES)}")
        if req.state != card.state and req.state not in STATE_CHANGES[card.state]:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"a {card.state} card cannot become {req.state}")
        self._writable()
        card.state = req.state
        await self.app.commit([("card", card.row()),
                               *relist(self.app.state, self.app.keyring, card, self.app.clock_ms())])
        return _card_message(card)

    async def set_card_offline_limit(self, req: admin_pb2.SetCardOfflineLimitRequest, _: Any) -> admin_pb2.Card:
        card = self._card(req.card_id)
        limit = req.floor_limit if req.HasField("floor_limit") else None
        if limit is not None and not 0 <= limit <= AMOUNT_MAX_FEN:
            raise RequestInvalid(f"floor_limit must be 0..{AMOUNT_MAX_FEN} fen (0 = never offline)")
        self._writable()
        card.offline_floor_limit = limit
        # Terminals learn it from SyncHotlist: an entry without a decline code carries the card's limit.
        await self.app.commit([("card", card.row()),
                               *relist(self.app.state, self.app.keyring, card, self.app.clock_ms())])
        return _card_message(card)

    async def reset_pin(self, req: admin_pb2.ResetPinRequest, _: Any) -> admin_pb2.Card:
        card = self._card(req.card_id)
        if not PIN_RE.match(req.pin):
            raise RequestInvalid("pin must be 4 to 6 digits")
        self._writable()
        keyring = self.app.keyring
        card.pvk_version, pvk = keyring.current("pvk")
        card.pvv = pinblock.pin_verification_value(pvk, cardnumbers.decrypt(keyring, card.pan_enc), req.pin)
        card.pin_tries = 0
        await self.app.commit([("card", card.row())])
        return _card_message(card)

    async def list_transactions(self, req: admin_pb2.ListTransactionsRequest, _: Any) -> admin_pb2.ListTransactionsResponse:
        if not req.account_id and not req.card_id:
            raise RequestInvalid("account_id or card_id is required")
        # Newest first; the page token is the last transaction id of the previous page.
        where = ["transaction_id < $1"]
        args: list[object] = [int(req.page_token) if req.page_token.isdigit() else 2**63 - 1]
        for column, value in (("account_id", req.account_id), ("card_id", req.card_id)):
            if value:
                args.append(_id(value, column))
                where.append(f"{column} = ${len(args)}")
        if req.station_id:
            args.append(req.station_id)
            where.append(f"station_id = ${len(args)}")
        if req.from_time_ms:
            args.append(req.from_time_ms)
            where.append(f"recorded_ms >= ${len(args)}")
        if req.to_time_ms:
            args.append(req.to_time_ms)
            where.append(f"recorded_ms < ${len(args)}")
        if req.kinds:
            args.append(list(req.kinds))
            where.append(f"kind = ANY(${len(args)}::text[])")
        limit = min(req.limit or LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)
        sql = f"SELECT * FROM transactions WHERE {' AND '.join(where)} ORDER BY transaction_id DESC LIMIT {limit + 1}"
        async with self.app.pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        page, more = rows[:limit], len(rows) > limit
        return admin_pb2.ListTransactionsResponse(
            transactions=[self._transaction(r) for r in page],
            next_page_token=str(page[-1]["transaction_id"]) if more and page else "",
        )

    def _transaction(self, r: asyncpg.Record) -> admin_pb2.Transaction:
        card = self.app.state.cards.get(r["card_id"]) if r["card_id"] else None
        sign = _BALANCE_SIGNS.get(r["kind"], 0)
        return admin_pb2.Transaction(
            transaction_id=str(r["transaction_id"]), kind=r["kind"], account_id=str(r["account_id"]),
            card_id=str(r["card_id"] or ""), masked_pan=card.masked_pan if card else "", amount=r["amount"],
            balance_change=sign * r["amount"], product_code=r["product_code"], volume_ml=r["volume_ml"],
            unit_price=r["unit_price"], station_id=r["station_id"] or "", terminal_id=r["terminal_id"] or "",
            stan=r["stan"] or 0, time_ms=r["recorded_ms"],
            original_transaction_id=str(r["original_id"] or ""), reference=r["reference"] or "",
        )

    # -- network ------------------------------------------------------------------------

    async def register_station(self, req: admin_pb2.RegisterStationRequest, _: Any) -> admin_pb2.Station:
        if not req.station_id or len(req.station_id) > 64 or not req.name:
            raise RequestInvalid("station_id (at most 64 characters) and name are required")
        if not (-90 <= req.latitude <= 90 and -180 <= req.longitude <= 180):
            raise RequestInvalid("latitude/longitude out of range")
        if req.station_class and not STATION_CLASS_RE.match(req.station_class):
            raise RequestInvalid("station_class must be 1-32 characters a-z, 0-9, '_' or '-'")
        prices = _checked_prices(req.prices)
        self._writable()
        previous = self.app.state.stations.get(req.station_id)
        station = Station(req.station_id, req.name, req.region, req.latitude, req.longitude)
        if previous is not None:  # re-registering keeps the class (unless given) and the offline limits
            station = dataclasses.replace(previous, name=req.name, region=req.region, latitude=req.latitude,
                                          longitude=req.longitude)
        station.station_class = req.station_class or station.station_class
        self.app.state.stations[station.station_id] = station
        await self.app.commit([("station", station.row()), *self._set_prices(station.station_id, prices)])
        return self._station_message(station)

    async def set_station_offline_limits(self, req: admin_pb2.SetStationOfflineLimitsRequest,
                                         _: Any) -> admin_pb2.Station:
        station = self._station(req.station_id)
        limits = req.limits

        def value(name: str, maximum: int) -> int | None:
            if not limits.HasField(name):
                return None  # the network default
            number = int(getattr(limits, name))
            if not 0 <= number <= maximum:
                raise RequestInvalid(f"{name} must be 0..{maximum}")
            return number

        own = (value("floor_limit", AMOUNT_MAX_FEN), value("max_count", OFFLINE_COUNT_MAX),
               value("max_total", OFFLINE_TOTAL_MAX_FEN), value("max_per_card_per_day", OFFLINE_COUNT_MAX))
        self._writable()
        updated = dataclasses.replace(station, offline_floor_limit=own[0], offline_max_count=own[1],
                                      offline_max_total=own[2], offline_max_per_card_per_day=own[3])
        self.app.state.stations[station.station_id] = updated  # terminals get it at their next SyncHotlist
        await self.app.commit([("station", updated.row())])
        return self._station_message(updated)

    async def list_stations(self, req: admin_pb2.ListStationsRequest, _: Any) -> admin_pb2.ListStationsResponse:
        stations = sorted(self.app.state.stations.values(), key=lambda st: st.station_id)
        return admin_pb2.ListStationsResponse(stations=[
            self._station_message(st) for st in stations
            if not req.station_class or st.station_class == req.station_class
        ])

    def _station(self, station_id: str) -> Station:
        station = self.app.state.stations.get(station_id)
        if station is None:
            raise OperatorError(grpc.StatusCode.NOT_FOUND, f"station {station_id} is not registered")
        return station

    async def set_station_prices(self, req: admin_pb2.SetStationPricesRequest, _: Any) -> admin_pb2.Station:
        station = self._station(req.station_id)
        prices = _checked_prices(req.prices)
        if not prices:
            raise RequestInvalid("prices must name at least one product")
        self._writable()
        await self.app.commit(self._set_prices(station.station_id, prices))
        return self._station_message(station)

    def _set_prices(self, station_id: str, prices: list[tuple[str, int, int]]) -> list[Record]:
        now = self.app.clock_ms()
        rows: list[Record] = []
        for product, price, effective in prices:
            effective = effective or now  # "at once" is recorded as now, so the schedule stays in time order
            self.app.state.prices.set(station_id, product, price, effective)
            rows.append(("price", (station_id, product, effective, price)))
        return rows

    def _station_message(self, station: Station) -> admin_pb2.Station:
        config = self.app.config
        prices = self.app.state.prices.current(station.station_id, self.app.clock_ms())
        effective = config.offline.for_station(station)
        return admin_pb2.Station(
            station_id=station.station_id, name=station.name, region=station.region,
            latitude=station.latitude, longitude=station.longitude,
            prices=[ProductPrice(product_code=p, unit_price=u) for p, u in prices],
            station_class=station.station_class,
            offline_limits=admin_pb2.OfflineLimitSettings(
                floor_limit=station.offline_floor_limit, max_count=station.offline_max_count,
                max_total=station.offline_max_total, max_per_card_per_day=station.offline_max_per_card_per_day),
            effective_offline_limits=_limit_settings(effective),
            hold_ttl_s=config.hold_ttl_ms_for(station.station_class) // 1000,
        )

    async def register_terminal(self, req: admin_pb2.RegisterTerminalRequest, _: Any) -> admin_pb2.Terminal:
        if not req.terminal_id or len(req.terminal_id) > 64:
            raise RequestInvalid("terminal_id is required (at most 64 characters)")
        if not PUBLIC_KEY_RE.match(req.public_key):
            raise RequestInvalid("public_key must be 130 hex characters: 04 || x || y")
        if req.station_id not in self.app.state.stations:
            raise OperatorError(grpc.StatusCode.FAILED_PRECONDITION, f"station {req.station_id} is not registered")
        self._writable()
        terminal = Terminal(req.terminal_id, req.station_id, req.public_key.lower())
        previous = self.app.state.terminals.get(terminal.terminal_id)
        if previous is not None:
            # Re-registering does not lift a suspension or revocation: that takes SetTerminalState.
            terminal.state, terminal.state_reason = previous.state, previous.state_reason
            if previous.public_key != terminal.public_key:
                self.app.sessions.end_terminal(terminal.terminal_id)  # a new key ends the old session at once
        self.app.state.terminals[terminal.terminal_id] = terminal
        await self.app.commit([("terminal", terminal.row())])
        return _terminal_message(terminal)

    async def set_terminal_state(self, req: admin_pb2.SetTerminalStateRequest, _: Any) -> admin_pb2.Terminal:
        terminal = self.app.state.terminals.get(req.terminal_id)
        if terminal is None:
            raise OperatorError(grpc.StatusCode.NOT_FOUND, f"terminal {req.terminal_id} is not registered")
        if req.state not in TERMINAL_STATES:
            raise RequestInvalid(f"state must be one of {', '.join(TERMINAL_STATES)}")
        self._writable()
        terminal.state, terminal.state_reason = req.state, "" if req.state == "active" else req.reason
        if req.state != "active":
            self.app.sessions.end_terminal(terminal.terminal_id)  # its session dies now, not at expiry
        self.app.abuse_reset(terminal.terminal_id)
        await self.app.commit([("terminal", terminal.row())])
        return _terminal_message(terminal)


def _checked_prices(prices: Iterable[ProductPrice]) -> list[tuple[str, int, int]]:
    checked = []
    for price in prices:
        if price.product_code not in PRODUCTS:
            raise RequestInvalid(f"unknown product {price.product_code!r}")
        if not 0 <= price.unit_price <= UNIT_PRICE_MAX_FEN or price.effective_from_ms < 0:
            raise RequestInvalid(f"unit_price must be 0..{UNIT_PRICE_MAX_FEN} fen per litre (0 stops the sale)")
        checked.append((price.product_code, price.unit_price, price.effective_from_ms))
    return checked


def _limit_settings(limits: OfflineConfig) -> admin_pb2.OfflineLimitSettings:
    return admin_pb2.OfflineLimitSettings(floor_limit=limits.floor_limit, max_count=limits.max_count,
                                          max_total=limits.max_total,
                                          max_per_card_per_day=limits.max_per_card_per_day)


def _terminal_message(terminal: Terminal) -> admin_pb2.Terminal:
    return admin_pb2.Terminal(terminal_id=terminal.terminal_id, station_id=terminal.station_id,
                              public_key=terminal.public_key, state=terminal.state,
                              state_reason=terminal.state_reason)


def _default_expiry(now_ms: int) -> str:
    now = dt.datetime.fromtimestamp(now_ms / 1000, CST)
    return f"{now.year + CARD_VALIDITY_YEARS:04d}-{now.month:02d}"


def _card_message(card: Card, full_pan: str = "") -> admin_pb2.Card:
    """`full_pan` only when the card was just issued: the one response that carries the number."""
    return admin_pb2.Card(
        card_id=str(card.card_id), pan=full_pan, masked_pan=card.masked_pan, state=card.state,
        account_id=str(card.account_id), parent_card_id=str(card.parent_card_id or ""), expiry=card.expiry,
        controls=admin_pb2.CardControls(per_transaction_limit=card.per_txn_limit,
                                        partial_allowed=card.partial_allowed),
        issued_at_ms=card.created_ms, pin_locked=card.pin_tries >= 3,
        offline_floor_limit=card.offline_floor_limit,
    )


ROUTES: dict[str, tuple[str, Any]] = {
    "CreateAccount": ("create_account", admin_pb2.CreateAccountRequest),
    "GetAccount": ("get_account", admin_pb2.GetAccountRequest),
    "TopUp": ("top_up", admin_pb2.TopUpRequest),
    "IssueCard": ("issue_card", admin_pb2.IssueCardRequest),
    "GetCard": ("get_card", admin_pb2.GetCardRequest),
    "SetCardState": ("set_card_state", admin_pb2.SetCardStateRequest),
    "ResetPin": ("reset_pin", admin_pb2.ResetPinRequest),
    "ListTransactions": ("list_transactions", admin_pb2.ListTransactionsRequest),
    "RegisterStation": ("register_station", admin_pb2.RegisterStationRequest),
    "RegisterTerminal": ("register_terminal", admin_pb2.RegisterTerminalRequest),
    "SetTerminalState": ("set_terminal_state", admin_pb2.SetTerminalStateRequest),
    "SetStationPrices": ("set_station_prices", admin_pb2.SetStationPricesRequest),
    "SetStationOfflineLimits": ("set_station_offline_limits", admin_pb2.SetStationOfflineLimitsRequest),
    "SetCardOfflineLimit": ("set_card_offline_limit", admin_pb2.SetCardOfflineLimitRequest),
    "ListStations": ("list_stations", admin_pb2.ListStationsRequest),
}


def method_handlers(admin: CardAdmin, guard: Callable[..., Any]) -> grpc.GenericRpcHandler:
    """Every route checks the operator token first, inside the error map."""
    handlers = {}
    for method, (attr, request_type) in ROUTES.items():
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            guard(_with_token(admin, parsing(request_type, getattr(admin, attr)))),  # raw bytes: parsed after the token
            response_serializer=lambda m: m.SerializeToString(),
        )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _with_token(admin: CardAdmin, handler: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        admin.authorize(context)
        return await handler(request, context)

    checked.__name__ = handler.__name__
    return checked
