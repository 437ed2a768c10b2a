"""The switch's in-memory state: the ledger plus what policy needs to decide without a database trip.

PostgreSQL is the source of truth; `switch.recovery.load_state` rebuilds all of this from it at start
and after a failed commit, so memory always equals what is committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core import Ledger
from switch.hotlist import Hotlist
from switch.prices import PriceTable
from switch.sessions import SessionTable

CARD_STATES = ("active", "frozen", "lost", "closed", "expired")
TERMINAL_STATES = ("active", "suspended", "revoked")
ACCOUNT_KINDS = ("personal", "family", "fleet")


@dataclass
class AccountMeta:
    account_id: int
    kind: str
    holder_name: str
    created_ms: int


@dataclass
class Card:
    """A card as policy sees it. The PAN itself is not kept: requests bring it, `pan_index` finds the card."""

    card_id: int
    account_id: int
    pan_index: bytes  # keyed SM3 of the PAN (switch.cardnumbers)
    pan_enc: bytes  # SM4-GCM ciphertext of the PAN
    masked_pan: str
    pvv: bytes
    pvk_version: int  # the PIN-verification key version `pvv` was made with
    pin_tries: int
    state: str
    per_txn_limit: int  # fen; 0 = none
    partial_allowed: bool
    expiry: str  # YYYY-MM
    parent_card_id: int | None
    created_ms: int
    offline_floor_limit: int | None = None  # fen; None = the station's; 0 = never approved offline

    def row(self) -> tuple[object, ...]:
        return (
            self.card_id, self.account_id, self.pan_index, self.pan_enc, self.masked_pan, self.pvv,
            self.pvk_version, self.pin_tries, self.state, self.per_txn_limit, self.partial_allowed,
            self.expiry, self.parent_card_id, self.created_ms, self.offline_floor_limit,
        )


DEFAULT_STATION_CLASS = "standard"


@dataclass
class Station:
    station_id: str
    name: str
    region: str
    latitude: float
    longitude: float
    station_class: str = DEFAULT_STATION_CLASS  # chooses the hold lifetime (AppConfig.hold_ttl_ms_by_class)
    # The station's own offline limits (docs/pos-protocol.md §9); None = the network default.
    offline_floor_limit: int | None = None
    offline_max_count: int | None = None
    offline_max_total: int | None = None
    offline_max_per_card_per_day: int | None = None

    def row(self) -> tuple[object, ...]:
        return (self.station_id, self.name, self.region, self.latitude, self.longitude, self.station_class,
                self.offline_floor_limit, self.offline_max_count, self.offline_max_total,
                self.offline_max_per_card_per_day)


@dataclass
class Terminal:
    terminal_id: str
    station_id: str
    public_key: str
    state: str = "active"  # active | suspended | revoked
    state_reason: str = ""

    def row(self) -> tuple[object, ...]:
        return (self.terminal_id, self.station_id, self.public_key, self.state, self.state_reason)


@dataclass
class PosMessage:
    """What a terminal was told for one STAN (or that the STAN was reversed before it arrived)."""

    method: str
    request_digest: bytes | None  # None: reversed before use
    response: bytes | None
    effect_kind: str = ""  # hold | debit | credit | ''
    effect_ref: int = 0
    reversed: bool = False


@dataclass
class IdAllocator:
    """One int64 id space for holds, movements, cards and accounts: ids never collide across kinds."""

    next_id: int

    def take(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value


@dataclass
class SwitchState:
    ledger: Ledger
    ids: IdAllocator
    accounts: dict[int, AccountMeta] = field(default_factory=dict)
    cards: dict[int, Card] = field(default_factory=dict)
    cards_by_index: dict[bytes, Card] = field(default_factory=dict)  # pan_index -> card
    stations: dict[str, Station] = field(default_factory=dict)
    terminals: dict[str, Terminal] = field(default_factory=dict)
    messages: dict[tuple[str, int], PosMessage] = field(default_factory=dict)
    topups: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # reference -> (txn, account, amount)
    sales: dict[int, Sale] = field(default_factory=dict)  # refundable transactions by id
    refunds: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # refund id -> (account, amount, sale)
    hold_cards: dict[int, tuple[int, str]] = field(default_factory=dict)  # hold id -> (card id, terminal id)
    completions: dict[int, int] = field(default_factory=dict)  # hold id -> its sale's transaction id
    hotlist: Hotlist = field(default_factory=Hotlist)
    # Offline sales applied per (terminal id, card id, calendar day UTC+8 of the sale): what
    # max_per_card_per_day is checked against (switch/offline.py); rebuilt at start for the days an
    # upload may still reach.
    offline_day_counts: OfflineDayCounts = field(default_factory=lambda: OfflineDayCounts({}))
    prices: PriceTable = field(default_factory=PriceTable)
    sessions: SessionTable = field(default_factory=SessionTable)
    # Clearing: every channel payment/refund that moved money, by (channel, channel_txn_id).
    channel_txns: dict[tuple[str, str], ChannelTxn] = field(default_factory=dict)
    resolutions: set[tuple[int, str]] = field(default_factory=set)  # (reconcile run, channel_txn_id) decided

    def add_card(self, card: Card) -> None:
        self.cards[card.card_id] = card
        self.cards_by_index[card.pan_index] = card


@dataclass
class OfflineDayCounts:
    """Offline sales applied per (terminal, card, day); days before `kept_from_day` are dropped."""

    counts: dict[tuple[str, int, int], int]
    kept_from_day: int = 0

    def prune(self, first_day: int) -> None:
        """Forget days before `first_day` (no upload can add to them any more): keeps the map bounded."""
        if first_day > self.kept_from_day:
            self.counts = {key: n for key, n in self.counts.items() if key[2] >= first_day}
            self.kept_from_day = first_day


@dataclass
class Sale:
    """A posted sale (complete or purchase) that a refund may draw on."""

    transaction_id: int
    account_id: int
    card_id: int
    station_id: str
    amount: int
    refunded: int = 0


@dataclass(slots=True)
class ChannelTxn:
    """A channel payment or refund that moved money: what a repeat of its key is compared with.

    Fee, times and merchant order live in `channel_transactions` only: they are not part of the
    content a repeat must match, and a million of these must stay small in memory.
    """

    kind: str  # payment | refund
    account_id: int
    amount: int  # fen
    transaction_id: int  # the core movement and the `transactions` row
    original: str = ""  # refund: the payment's channel_txn_id
    station_id: str = ""
    refunded: int = 0  # payment: fen refunded so far
    reversed: int = 0  # payment: fen taken back by an operator's reversal (nothing is refundable after)
    reversal_id: int = 0  # payment: the reversal's movement id

    @property
    def refundable(self) -> int:
        return self.amount - self.refunded - self.reversed
