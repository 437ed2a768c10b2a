"""A self-checking Authorize + Complete load runner (TigerBeetle VOPR style).

Every virtual terminal signs on, then loops: authorize a random amount on one of ITS OWN cards,
complete for a random smaller amount, and check each reply against its own model of that card's
balance. Each card is used by exactly one lane (one call in flight at a time), so the model is
exact: the expected response code, approved amount, available balance, settled amount and balance
after every call are known before the reply arrives.

Assumptions about the target: each card spends from an account of its own that holds exactly
`CardSpec.balance_fen` with no open holds when the run starts, and nothing else touches these
cards during the run. Every lane finishes its current pair after the deadline, so a clean run
leaves no open holds behind (the next run may reuse the cards with the balances it reports in
`LoadResult.final_balances`).

- `in_flight` is the total number of calls outstanding: that many lanes. Lanes are spread over
  the first min(len(terminals), in_flight) terminals round-robin; the cards of a terminal are split
  among its lanes, so at least `in_flight` cards are needed.
- `processes > 1` runs the terminals in that many spawned client processes (uvloop each),
  synchronised by a barrier after sign-on; their HdrHistograms travel back encoded and are merged.
  `processes == 1` runs in the calling event loop.
- Latency is recorded per RPC in microseconds (sign-on excluded). Errors are gRPC errors, bad
  response MACs and unexpected response codes; mismatches are wrong values in an expected answer.
  A card with an error or a mismatch is retired (the model no longer knows its state).
- `LoadOptions.mix` (a `loadtest.mix.Mix`) replaces the plain Authorize+Complete pair by a weighted
  choice of operations per step (`loadtest.operations`: cancel, purchase, inquiry, top-up, offline
  upload), each checked against the same model. `LoadOptions.audit` ends every lane with a
  BalanceInquiry per card (not counted in the figures), so that drift no reply exposed is caught.
- `progress` (a callable) receives a `Progress` snapshot about once a second, also from client
  processes, for a live display.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import grpc
import grpc.aio
from hdrh.histogram import HdrHistogram

from loadtest.terminal import CALL_TIMEOUT_S, Terminal, TerminalError, luhn_check_digit
from switch import sm2

if TYPE_CHECKING:
    from loadtest.mix import Mix

LATENCY_MIN_US = 1
LATENCY_MAX_US = 60_000_000  # one minute; a slower reply is clamped into the top bucket
LATENCY_SIGNIFICANT_DIGITS = 3
PROBLEMS_MAX = 20  # first problems kept verbatim; the rest are only counted
SIGNON_TIMEOUT_S = 120.0  # all terminals of all processes must have signed on by then
SIGNONS_IN_FLIGHT_MAX = 8  # SM2 costs ~20 ms per sign-on on each side: do not queue past timeouts
PUMPS_MAX = 99
DEFAULT_UNIT_PRICE_FEN = 738  # ¥7.38/L when the host reports no list price
VOLUME_MIN_ML = 1_000
AUTH_COMPLETE = "auth_complete"  # the operation the plain workload repeats (and the baseline serves)


class TerminalSpec(NamedTuple):
    terminal_id: str
    private_key_hex: str
    public_key_hex: str


class CardSpec(NamedTuple):
    pan: str
    pin: str
    balance_fen: int


class TerminalLike(Protocol):
    """Anything with TerminalSpec's attributes (a TerminalSpec, or a terminal record of a test)."""

    @property
    def terminal_id(self) -> str: ...
    @property
    def private_key_hex(self) -> str: ...
    @property
    def public_key_hex(self) -> str: ...


class CardLike(Protocol):
    """Anything with CardSpec's attributes (e.g. loadtest.provision.CardSpec)."""

    @property
    def pan(self) -> str: ...
    @property
    def pin(self) -> str: ...
    @property
    def balance_fen(self) -> int: ...


@dataclass(frozen=True)
class LoadOptions:
    """Knobs of one run beyond the required arguments (all amounts in fen)."""

    product_code: str = "92"
    amount_min_fen: int = 1_000
    amount_max_fen: int = 30_000
    channels_per_process: int = 1
    signon_timeout_s: float = SIGNON_TIMEOUT_S
    call_timeout_s: float = CALL_TIMEOUT_S
    require_response_mac: bool = True
    mix: Mix | None = None  # None: Authorize+Complete only (the baseline's whole protocol)
    operator_token: str = ""  # CardAdmin token, needed by the "topup" operation
    audit: bool = False  # a final BalanceInquiry per card (targets that implement it)
    progress_interval_s: float = 1.0
    run_tag: str = ""  # makes top-up references unique per run (a replay must not hit old ones)


@dataclass(frozen=True)
class Progress:
    """A live snapshot of a run, summed over all client processes."""

    elapsed_s: float
    rpcs: int
    errors: int
    mismatches: int
    histogram: HdrHistogram


@dataclass
class LoadResult:
    target: str
    seed: int
    processes: int
    in_flight: int
    terminals: int
    cards: int
    duration_s: float  # measured: from the start signal until the last lane finished
    rpcs: int
    pairs: int
    declines: int  # expected declines (51 predicted by the model)
    errors: int
    mismatches: int
    rpc_per_s: float
    pairs_per_s: float
    latency_ms: dict[str, float]
    problems: list[str]
    final_balances: dict[str, int] = field(repr=False)
    histogram: HdrHistogram = field(repr=False)
    operations: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> count, declined
    timeline: list[int] = field(default_factory=list, repr=False)  # RPCs completed per 1 s bucket
    audited: int = 0  # cards whose final balance was read back and matched

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "seed": self.seed,
            "processes": self.processes,
            "in_flight": self.in_flight,
            "terminals": self.terminals,
            "cards": self.cards,
            "duration_s": round(self.duration_s, 3),
            "rpcs": self.rpcs,
            "pairs": self.pairs,
            "declines": self.declines,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "rpc_per_s": round(self.rpc_per_s, 1),
            "pairs_per_s": round(self.pairs_per_s, 1),
            "latency_ms": self.latency_ms,
            "operations": self.operations,
            "audited": self.audited,
            "problems": self.problems,
        }


# ---------------------------------------------------------------------- test data


def make_terminals(count: int, prefix: str = "LT") -> list[TerminalSpec]:
    """`count` terminals with fresh SM2 key pairs, ids prefix + 5 digits."""
    specs = []
    for number in range(1, count + 1):
        private, public = sm2.generate_keypair()
        specs.append(TerminalSpec(f"{prefix}{number:05d}", private, public))
    return specs


def make_cards(
    count: int, balance_fen: int, *, seed: int = 0, first_serial: int = 1, issuer: str = "900001"
) -> list[CardSpec]:
    """`count` 19-digit Luhn-valid PANs (issuer ‖ 12-digit serial ‖ check) with seeded PINs."""
    rng = random.Random(seed)
    cards = []
    for serial in range(first_serial, first_serial + count):
        body = f"{issuer}{serial:012d}"
        cards.append(
            CardSpec(body + luhn_check_digit(body), f"{rng.randrange(10**6):06d}", balance_fen)
        )
    return cards


# ---------------------------------------------------------------------- the plan


@dataclass
class _Card:
    pan: str
    pin: str
    balance: int  # the model: what the account must hold (no holds between pairs)
    retired: bool = False
    account_id: str = ""  # for CardAdmin calls (top-ups); "" when the caller did not provide it
    offline_per_day: Counter[int] = field(default_factory=Counter)  # applied offline sales by day


@dataclass(frozen=True)
class _Lane:
    number: int
    terminal: int  # index into the terminal list
    cards: tuple[CardLike, ...]


def _plan(
    terminals: Sequence[TerminalLike], cards: Sequence[CardLike], in_flight: int
) -> list[_Lane]:
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    if not terminals:
        raise ValueError("at least one terminal is needed")
    if len(cards) < in_flight:
        raise ValueError(
            f"need at least in_flight={in_flight} cards (one per lane), got {len(cards)}"
        )
    used = min(len(terminals), in_flight)
    lanes_of: list[list[int]] = [[] for _ in range(used)]
    for lane in range(in_flight):
        lanes_of[lane % used].append(lane)
    cards_of: dict[int, list[CardLike]] = {lane: [] for lane in range(in_flight)}
    per_terminal: list[list[CardLike]] = [[] for _ in range(used)]
    for index, card in enumerate(cards):
        per_terminal[index % used].append(card)
    for terminal, its_cards in enumerate(per_terminal):
        its_lanes = lanes_of[terminal]
        for index, card in enumerate(its_cards):
            cards_of[its_lanes[index % len(its_lanes)]].append(card)
    return [_Lane(lane, lane % used, tuple(cards_of[lane])) for lane in range(in_flight)]


# ---------------------------------------------------------------------- one process


class _Stats:
    def __init__(self) -> None:
        self.rpcs = 0
        self.pairs = 0
        self.declines = 0
        self.errors = 0
        self.mismatches = 0
        self.problems: list[str] = []
        self.histogram = HdrHistogram(LATENCY_MIN_US, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
        self.operations: Counter[str] = Counter()
        self.operation_declines: Counter[str] = Counter()
        self.timeline: list[int] = []
        self.audited = 0
        self.started_ns = time.perf_counter_ns()  # reset at the start signal

    def latency(self, started_ns: int) -> None:
        self.rpcs += 1
        now = time.perf_counter_ns()
        elapsed_us = (now - started_ns) // 1_000
        self.histogram.record_value(min(max(elapsed_us, LATENCY_MIN_US), LATENCY_MAX_US))
        second = (now - self.started_ns) // 1_000_000_000
        while len(self.timeline) <= second:
            self.timeline.append(0)
        self.timeline[second] += 1

    def problem(self, kind: str, text: str) -> None:
        if kind == "error":
            self.errors += 1
        else:
            self.mismatches += 1
        if len(self.problems) < PROBLEMS_MAX:
            self.problems.append(f"{kind}: {text}")

    def to_wire(self) -> dict[str, Any]:
        return {
            "rpcs": self.rpcs,
            "pairs": self.pairs,
            "declines": self.declines,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "problems": self.problems,
            "histogram": self.histogram.encode(),
            "operations": dict(self.operations),
            "operation_declines": dict(self.operation_declines),
            "timeline": self.timeline,
            "audited": self.audited,
        }

    def progress_wire(self) -> dict[str, Any]:
        return {
            "elapsed_s": (time.perf_counter_ns() - self.started_ns) / 1e9,
            "rpcs": self.rpcs,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "histogram": self.histogram.encode(),
        }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


async def _pair(
    terminal: Terminal,
    card: _Card,
    rng: random.Random,
    pump: int,
    options: LoadOptions,
    stats: _Stats,
    *,
    then_cancel: bool = False,
) -> bool:
    """One Authorize (+ Complete, or Cancel, when approved), every reply checked against the model.

    Returns True when the model predicted a decline (51) and got it.
    """
    amount = rng.randint(options.amount_min_fen, options.amount_max_fen)
    expected = "00" if amount <= card.balance else "51"
    where = f"{terminal.terminal_id} card …{card.pan[-4:]}"
    started = time.perf_counter_ns()
    try:
        sent = await terminal.authorize(card.pan, card.pin, amount, options.product_code, pump)
    except (grpc.aio.AioRpcError, TerminalError) as exc:
        stats.problem("error", f"{where} Authorize: {_describe(exc)}")
        card.retired = True
        return False
    stats.latency(started)
    auth = sent.response
    if auth.response_code != expected:
        stats.problem(
            "error",
            f"{where} Authorize stan {sent.stan}: {auth.response_code} "
            f"({auth.message}), model expected {expected}",
        )
        card.retired = True
        if auth.response_code not in ("00", "10"):
            return False
    elif expected == "51":
        stats.declines += 1
        if auth.available_balance != card.balance:
            stats.problem(
                "mismatch", f"{where} 51 available {auth.available_balance} != {card.balance}"
            )
            card.retired = True
        return True
    elif (auth.approved_amount, auth.available_balance) != (
        amount,
        card.balance - amount,
    ) or not auth.hold_id:
        stats.problem(
            "mismatch",
            f"{where} Authorize stan {sent.stan}: approved "
            f"{auth.approved_amount}/{amount}, available {auth.available_balance}/"
            f"{card.balance - amount}, hold {auth.hold_id!r}",
        )
        card.retired = True
    if then_cancel:
        await _cancel(terminal, card, auth.hold_id, stats)
        return False
    await _complete(
        terminal, card, rng, auth.hold_id, auth.approved_amount, auth.unit_price, options, stats
    )
    return False


async def _cancel(terminal: Terminal, card: _Card, hold_id: str, stats: _Stats) -> None:
    """Void the hold: "00", and the model's balance is untouched (the hold is released)."""
    where = f"{terminal.terminal_id} card …{card.pan[-4:]}"
    started = time.perf_counter_ns()
    try:
        sent = await terminal.cancel(hold_id)
    except (grpc.aio.AioRpcError, TerminalError) as exc:
        stats.problem("error", f"{where} Cancel {hold_id}: {_describe(exc)}")
        card.retired = True
        return
    stats.latency(started)
    if sent.response.response_code != "00":
        stats.problem(
            "error",
            f"{where} Cancel {hold_id} stan {sent.stan}: {sent.response.response_code} "
            f"({sent.response.message}), model expected 00",
        )
        card.retired = True


async def _complete(
    terminal: Terminal,
    card: _Card,
    rng: random.Random,
    hold_id: str,
    held: int,
    unit_price: int,
    options: LoadOptions,
    stats: _Stats,
) -> None:
    price = unit_price or DEFAULT_UNIT_PRICE_FEN
    volume_max = max(1, held * 1000 // price)
    volume = rng.randint(min(VOLUME_MIN_ML, volume_max), volume_max)
    # Round half up; never above `held`, since volume × price ≤ held × 1000.
    amount = (volume * price + 500) // 1000
    where = f"{terminal.terminal_id} card …{card.pan[-4:]}"
    started = time.perf_counter_ns()
    try:
        sent = await terminal.complete(hold_id, amount, volume, options.product_code, price)
    except (grpc.aio.AioRpcError, TerminalError) as exc:
        stats.problem("error", f"{where} Complete {hold_id}: {_describe(exc)}")
        card.retired = True
        return
    stats.latency(started)
    done = sent.response
    if done.response_code != "00":
        stats.problem(
            "error",
            f"{where} Complete {hold_id} stan {sent.stan}: "
            f"{done.response_code} ({done.message}), model expected 00",
        )
        card.retired = True
        return
    settled = amount - done.discount_amount
    balance = card.balance - settled
    if (done.settled_amount, done.balance, done.available) != (
        settled,
        balance,
        balance,
    ) or not done.transaction_id:
        stats.problem(
            "mismatch",
            f"{where} Complete {hold_id} stan {sent.stan}: settled "
            f"{done.settled_amount}/{settled}, balance {done.balance}/{balance}, available "
            f"{done.available}/{balance}, transaction {done.transaction_id!r}",
        )
        card.retired = True
    card.balance = balance
    stats.pairs += 1


async def _run_lane(
    lane: _Lane,
    terminal: Terminal,
    cards: list[_Card],
    seed: int,
    deadline: float,
    options: LoadOptions,
    stats: _Stats,
    kit: Any = None,
) -> None:
    """Steps until the deadline: a card, then (with a mix) an operation, both drawn from the seed."""
    rng = random.Random(f"{seed}:{lane.number}")
    pump = lane.number % PUMPS_MAX + 1
    context = kit.lane(terminal, rng, pump, lane.number, stats) if kit is not None else None
    while time.monotonic() < deadline:
        live = [card for card in cards if not card.retired]
        if not live:
            break
        card = rng.choice(live)
        if context is None:
            name = AUTH_COMPLETE
            declined = await _pair(terminal, card, rng, pump, options, stats)
        else:
            assert options.mix is not None
            name = options.mix.pick(rng)
            declined = await kit.run(name, context, card)
        stats.operations[name] += 1
        if declined:
            stats.operation_declines[name] += 1
    if options.audit:
        await _audit(terminal, cards, stats)


async def _audit(terminal: Terminal, cards: list[_Card], stats: _Stats) -> None:
    """Read back every card the model still knows: balance and available must equal the model."""
    for card in cards:
        if card.retired:
            continue
        where = f"{terminal.terminal_id} card …{card.pan[-4:]}"
        try:
            sent = await terminal.balance_inquiry(card.pan, card.pin)
        except (grpc.aio.AioRpcError, TerminalError) as exc:
            stats.problem("error", f"{where} audit BalanceInquiry: {_describe(exc)}")
            continue
        reply = sent.response
        if reply.response_code != "00":
            stats.problem(
                "error", f"{where} audit BalanceInquiry: {reply.response_code} ({reply.message})"
            )
        elif (reply.balance, reply.available) != (card.balance, card.balance):
            stats.problem(
                "mismatch",
                f"{where} audit: balance {reply.balance}/{card.balance}, available "
                f"{reply.available}/{card.balance}",
            )
        else:
            stats.audited += 1


async def _report_progress(
    stats: _Stats, report: Callable[[dict[str, Any]], None], interval_s: float
) -> None:
    """Hand a snapshot to `report` every interval (a display clock, not synchronisation)."""
    while True:
        await asyncio.sleep(interval_s)
        report(stats.progress_wire())


async def _run_share(
    target: str,
    terminals: dict[int, TerminalLike],
    lanes: list[_Lane],
    duration_s: float,
    seed: int,
    options: LoadOptions,
    wait_for_start: Any = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Sign on this share's terminals, wait for the start signal, run its lanes."""
    stats = _Stats()
    channels = [
        grpc.aio.insecure_channel(target) for _ in range(max(1, options.channels_per_process))
    ]
    reporter: asyncio.Task[None] | None = None
    try:
        clients = {
            index: Terminal(
                channels[position % len(channels)],
                spec.terminal_id,
                spec.private_key_hex,
                spec.public_key_hex,
                require_response_mac=options.require_response_mac,
                timeout_s=options.call_timeout_s,
            )
            for position, (index, spec) in enumerate(sorted(terminals.items()))
        }
        gate = asyncio.Semaphore(SIGNONS_IN_FLIGHT_MAX)

        async def sign_on(client: Terminal) -> None:
            async with gate:
                await client.sign_on()

        results = await asyncio.gather(
            *(sign_on(c) for c in clients.values()), return_exceptions=True
        )
        for client, result in zip(clients.values(), results, strict=True):
            if isinstance(result, BaseException):
                stats.problem("error", f"{client.terminal_id} SignOn: {_describe(result)}")
        kit = None
        if options.mix is not None:
            from loadtest import operations  # imports this module: load it only when needed

            kit = await operations.prepare(
                channels[0], [c for c in clients.values() if c.signed_on], options
            )
        if wait_for_start is not None:
            await wait_for_start()
        models = {
            lane.number: [
                _Card(c.pan, c.pin, c.balance_fen, account_id=getattr(c, "account_id", ""))
                for c in lane.cards
            ]
            for lane in lanes
        }
        started = time.monotonic()
        stats.started_ns = time.perf_counter_ns()
        if report is not None:
            reporter = asyncio.create_task(
                _report_progress(stats, report, options.progress_interval_s)
            )
        deadline = started + duration_s
        await asyncio.gather(
            *(
                _run_lane(
                    lane,
                    clients[lane.terminal],
                    models[lane.number],
                    seed,
                    deadline,
                    options,
                    stats,
                    kit,
                )
                for lane in lanes
                if clients[lane.terminal].signed_on
            )
        )
        elapsed = time.monotonic() - started
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        for channel in channels:
            await channel.close()
    wire = stats.to_wire()
    wire["elapsed_s"] = elapsed
    wire["balances"] = {card.pan: card.balance for cards in models.values() for card in cards}
    return wire


def _child_main(
    number: int,
    target: str,
    terminals: dict[int, TerminalLike],
    lanes: list[_Lane],
    duration_s: float,
    seed: int,
    options: LoadOptions,
    barrier: Any,
    results: Any,
    live: bool = False,
) -> None:
    """Entry point of one spawned client process: its own uvloop event loop."""
    import uvloop

    async def wait_for_start() -> None:
        await asyncio.get_running_loop().run_in_executor(
            None, barrier.wait, options.signon_timeout_s
        )

    def report(snapshot: dict[str, Any]) -> None:
        results.put((number, PROGRESS_MESSAGE, snapshot))

    try:
        wire = uvloop.run(
            _run_share(
                target,
                terminals,
                lanes,
                duration_s,
                seed,
                options,
                wait_for_start,
                report if live else None,
            )
        )
        results.put((number, wire))
    except BaseException:
        barrier.abort()  # do not leave the other processes waiting for us
        results.put((number, {"failure": traceback.format_exc()}))


# ---------------------------------------------------------------------- the runner


async def run_pos_load(
    target: str,
    terminals: Sequence[TerminalLike],
    cards: Sequence[CardLike],
    duration_s: float,
    in_flight: int,
    seed: int,
    *,
    processes: int = 1,
    options: LoadOptions | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> LoadResult:
    """Run the self-checking load against `target` (HOST:PORT).

    `progress`, if given, is called about every `options.progress_interval_s` with a snapshot.
    """
    options = options or LoadOptions()
    lanes = _plan(terminals, cards, in_flight)
    used = sorted({lane.terminal for lane in lanes})
    processes = max(1, min(processes, len(used)))
    shares: list[tuple[dict[int, TerminalLike], list[_Lane]]] = []
    for number in range(processes):
        mine = {t for t in used if t % processes == number}
        shares.append(
            ({t: terminals[t] for t in mine}, [lane for lane in lanes if lane.terminal in mine])
        )
    if processes == 1:
        report = None
        if progress is not None:
            report = lambda snapshot: progress(_progress([snapshot]))  # noqa: E731
        wires = [await _run_share(target, *shares[0], duration_s, seed, options, None, report)]
    else:
        wires = await _run_processes(target, shares, duration_s, seed, options, progress)
    return _merge(target, seed, processes, in_flight, len(used), len(cards), wires)


PROGRESS_MESSAGE = "progress"


def _progress(snapshots: Sequence[dict[str, Any]]) -> Progress:
    """One snapshot summed from the latest of each process (histograms travel encoded)."""
    histogram = HdrHistogram(LATENCY_MIN_US, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
    for snapshot in snapshots:
        histogram.decode_and_add(snapshot["histogram"])
    return Progress(
        elapsed_s=max(s["elapsed_s"] for s in snapshots),
        rpcs=sum(s["rpcs"] for s in snapshots),
        errors=sum(s["errors"] for s in snapshots),
        mismatches=sum(s["mismatches"] for s in snapshots),
        histogram=histogram,
    )


async def _run_processes(
    target: str,
    shares: list[tuple[dict[int, TerminalLike], list[_Lane]]],
    duration_s: float,
    seed: int,
    options: LoadOptions,
    progress: Callable[[Progress], None] | None = None,
) -> list[dict[str, Any]]:
    # spawn, not fork: gRPC's C core does not survive fork() of a process that used it.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(shares))
    results = context.Queue()
    live = progress is not None
    children = [
        context.Process(
            target=_child_main,
            args=(number, target, terms, lanes, duration_s, seed, options, barrier, results, live),
            name=f"loadtest-client-{number}",
            daemon=True,
        )
        for number, (terms, lanes) in enumerate(shares)
    ]
    for child in children:
        child.start()
    # Bound the wait: sign-on + run + one call timeout for the last pair (two calls) + start-up.
    budget_s = options.signon_timeout_s + duration_s + 2 * options.call_timeout_s + 30.0
    if options.audit:  # the final read-back: one call per card, sequential per lane
        budget_s += options.call_timeout_s * max(
            (len(lane.cards) for _, lanes in shares for lane in lanes), default=0
        )
    deadline = time.monotonic() + budget_s
    wires: dict[int, dict[str, Any]] = {}
    latest: dict[int, dict[str, Any]] = {}
    fresh: set[int] = set()

    def take(message: tuple[Any, ...]) -> None:
        if len(message) == 3 and message[1] == PROGRESS_MESSAGE:
            latest[message[0]] = message[2]
            fresh.add(message[0])
            # One snapshot per round, once every process has sent a new one: a sum of equals.
            if progress is not None and len(fresh) == len(children):
                fresh.clear()
                progress(_progress(list(latest.values())))
        else:
            wires[message[0]] = message[1]

    try:
        while len(wires) < len(children):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"client processes did not report within {budget_s:.0f} s")
            with contextlib.suppress(queue.Empty):
                take(await asyncio.to_thread(results.get, True, min(remaining, 1.0)))
            if len(wires) < len(children) and not any(c.is_alive() for c in children):
                with contextlib.suppress(queue.Empty):  # a result may still be in the pipe
                    take(await asyncio.to_thread(results.get, True, 1.0))
                    continue
                raise RuntimeError("a client process died without reporting")
    finally:
        for child in children:
            child.join(timeout=5.0)
            if child.is_alive():
                child.terminate()
                child.join()
        results.close()
    failures = [w["failure"] for w in wires.values() if "failure" in w]
    if failures:
        raise RuntimeError("client process failed:\n" + "\n".join(failures))
    return [wires[number] for number in sorted(wires)]


def _merge(
    target: str,
    seed: int,
    processes: int,
    in_flight: int,
    terminals: int,
    cards: int,
    wires: list[dict[str, Any]],
) -> LoadResult:
    histogram = HdrHistogram(LATENCY_MIN_US, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
    for wire in wires:
        histogram.decode_and_add(wire["histogram"])
    elapsed = max(w["elapsed_s"] for w in wires) or 1e-9
    rpcs = sum(w["rpcs"] for w in wires)
    pairs = sum(w["pairs"] for w in wires)
    operations: Counter[str] = Counter()
    declined: Counter[str] = Counter()
    timeline: list[int] = []
    for wire in wires:
        operations.update(wire["operations"])
        declined.update(wire["operation_declines"])
        for second, count in enumerate(wire["timeline"]):
            if second == len(timeline):
                timeline.append(0)
            timeline[second] += count
    return LoadResult(
        target=target,
        seed=seed,
        processes=processes,
        in_flight=in_flight,
        terminals=terminals,
        cards=cards,
        duration_s=elapsed,
        rpcs=rpcs,
        pairs=pairs,
        declines=sum(w["declines"] for w in wires),
        errors=sum(w["errors"] for w in wires),
        mismatches=sum(w["mismatches"] for w in wires),
        rpc_per_s=rpcs / elapsed,
        pairs_per_s=pairs / elapsed,
        latency_ms={
            name: histogram.get_value_at_percentile(percentile) / 1000
            for name, percentile in (("p50", 50.0), ("p99", 99.0), ("p999", 99.9))
        }
        | {"max": histogram.get_max_value() / 1000},
        problems=[p for w in wires for p in w["problems"]][:PROBLEMS_MAX],
        final_balances={pan: bal for w in wires for pan, bal in w["balances"].items()},
        histogram=histogram,
        operations={
            name: {"count": count, "declined": declined.get(name, 0)}
            for name, count in sorted(operations.items())
        },
        timeline=timeline,
        audited=sum(w["audited"] for w in wires),
    )
