"""Self-checking POS lanes that survive faults, and the switch as a process to inflict them on.

Shared by the crash test (SIGKILL and restart) and the database-outage test (a fault proxy between
the switch and PostgreSQL). In the spirit of loadtest/workload.py: every card belongs to one lane
(one call in flight at a time), so a model of each card's balance predicts every answer exactly;
unlike it, a lane does not give up on a card when a call fails. It retransmits the identical
request bytes (same STAN) until it gets an answer, as docs/pos-protocol.md §6.2 tells a terminal,
signing on again after a restart. Whatever the host decided for a STAN is then the answer the lane
sees, so the model stays exact through crashes and outages.

A lane step is one of: Authorize + Complete, Authorize + Cancel, Authorize + Reverse, Purchase,
Purchase + Reverse, Purchase + partial Refund, BalanceInquiry — with declines (51) when the model
says the card cannot pay.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from fuelswitch.v1 import pos_pb2

from loadtest.terminal import RPCS, Terminal, TerminalError

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
RETRY_PAUSE_S = 0.1  # between retransmissions of an unanswered request (§6.2 "after a pause")
AMOUNT_MIN_FEN, AMOUNT_MAX_FEN = 500, 20_000
UNIT_PRICE_FEN = 738
# gRPC outcomes after which the request may or may not have been processed: retransmit the same bytes.
UNKNOWN_OUTCOME = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED,
}
STEPS = ("auth_complete", "auth_cancel", "auth_reverse", "purchase", "purchase_reverse", "purchase_refund",
         "inquiry")
STEP_WEIGHTS = (6, 1, 1, 2, 1, 1, 1)


# ------------------------------------------------------------------------------ the switch process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SwitchProcess:
    """`python -m switch.cli serve` on a fixed port, restartable on the same database and data dir."""

    def __init__(self, *, dsn: str, data_dir: Path, token: str, port: int, log_dir: Path) -> None:
        self.dsn, self.data_dir, self.token, self.port, self.log_dir = dsn, data_dir, token, port, log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = log_dir / "switch-0.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}

    async def start(self) -> float:
        """Start and wait until it listens; return the start-up time in seconds."""
        self.starts += 1
        self.log_path = self.log_dir / f"switch-{self.starts}.log"
        command = [sys.executable, "-m", "switch.cli", "serve", "--listen", self.target, "--data-dir",
                   str(self.data_dir), "--operator-token", self.token, "--dsn", self.dsn, "--log-level", "WARNING"]
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=REPO)
        while time.monotonic() - started < READY_TIMEOUT_S:
            if b"fuelswitch listening on" in self.log_path.read_bytes():
                return time.monotonic() - started
            if self.proc.poll() is not None:
                raise RuntimeError(f"the switch exited with {self.proc.returncode}:\n{self.log_tail()}")
            await asyncio.sleep(0.05)  # polling the process's log for its ready line
        raise RuntimeError(f"the switch did not listen within {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM (graceful: in-flight calls finish, everything decided is committed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""


def run_verify(dsn: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`fuelswitch verify`: the journal's hash chain and every balance against the journal's sums."""
    return subprocess.run(
        [sys.executable, "-m", "switch.cli", "verify", "--dsn", dsn, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), str(REPO / "proto")])}, cwd=REPO, check=False,
    )


# ------------------------------------------------------------------------------ the lanes


class Host:
    """What lanes know about the switch: whether it is up (between a kill and a restart it is not)."""

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.epoch = 0  # bumped after each kill, once the killed process is gone


class LaneTerminal:
    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.session_epoch: int | None = None
        self.lock = asyncio.Lock()

    async def ensure_session(self, epoch: int) -> None:
        """Sessions live in the switch's memory only: sign on once per process lifetime."""
        if self.session_epoch == epoch:
            return
        async with self.lock:
            if self.session_epoch != epoch:
                await self.terminal.sign_on()
                self.session_epoch = epoch


@dataclass
class CardModel:
    pan: str
    pin: str
    account_id: str
    balance: int


@dataclass
class Approval:
    kind: str  # authorize | complete | purchase | refund | reversal
    ref: str  # hold or transaction id ("" for a reversal)
    amount: int
    terminal_id: str
    stan: int
    original_stan: int = 0  # reversal: the reversed message


@dataclass
class Attempt:
    started: float  # time.monotonic()
    seconds: float
    outcome: str  # a response code, or a gRPC status name


@dataclass
class Figures:
    requests: int = 0  # distinct requests (STANs)
    attempts: int = 0  # sends, retransmissions included
    steps: int = 0
    declines: int = 0  # 51s the model predicted
    retransmitted: int = 0  # requests sent more than once
    lost_answers_original: int = 0  # committed before the crash: the retransmission got the stored answer
    lost_answers_fresh: int = 0  # never committed: the retransmission was decided afresh
    replays_answered: int = 0  # answered requests sent again after a restart: the same answer
    fresh_pin_55: int = 0  # of lost_answers_fresh (and first sends after a restart): PIN block under old keys
    outcomes: Counter[str] = field(default_factory=Counter)
    approvals: list[Approval] = field(default_factory=list)
    attempts_log: list[Attempt] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


@dataclass
class Answer:
    response: Any
    stan: int
    new_session: bool  # decided afresh by a process other than the one whose session built the request


@dataclass
class _Answered:
    lane_terminal: LaneTerminal
    method: str
    body: bytes
    response: Any


class Lanes:
    """Lanes over `terminals` (each with its share of `cards`), driven until `stop()`."""

    def __init__(self, host: Host, terminals: list[LaneTerminal], cards: list[CardModel], *, lanes: int, seed: int,
                 db_dsn: str, retry_pause_s: float = RETRY_PAUSE_S) -> None:
        if len(cards) < lanes:
            raise ValueError("at least one card per lane")
        self.host = host
        self.terminals = terminals
        self.cards = cards
        self.seed = seed
        self.fig = Figures()
        self._lanes = [(terminals[n % len(terminals)], cards[n::lanes]) for n in range(lanes)]
        self._db_dsn = db_dsn
        self._db: asyncpg.Pool | None = None
        self._stopping = False
        self._pause_s = retry_pause_s
        self._answered: list[_Answered] = []  # a reservoir of answered requests, for replays

    def stop(self) -> None:
        """Each lane finishes the step it is in (so no hold stays open), then ends."""
        self._stopping = True

    async def run(self) -> None:
        self._db = await asyncpg.create_pool(self._db_dsn, min_size=1, max_size=4)
        try:
            await asyncio.gather(*(self._lane(n, term, cards) for n, (term, cards) in enumerate(self._lanes)))
        finally:
            await self._db.close()

    async def replay_answered(self, count: int, rng: random.Random) -> None:
        """Send answered requests again (after a restart): each must get exactly its first answer."""
        for item in rng.sample(self._answered, min(count, len(self._answered))):
            response, _, _ = await self._send_until_answered(item.lane_terminal, item.method, item.body, stan=None)
            if response != item.response:
                self.fig.problem(f"replayed {item.method} got {response} instead of {item.response}")
            self.fig.replays_answered += 1
        self._answered.clear()

    # -- one lane ------------------------------------------------------------------------

    async def _lane(self, number: int, term: LaneTerminal, cards: list[CardModel]) -> None:
        rng = random.Random(f"{self.seed}:{number}")
        while not self._stopping:
            card = rng.choice(cards)
            step = rng.choices(STEPS, STEP_WEIGHTS)[0]
            try:
                await getattr(self, "_" + step)(term, card, rng)
            except Exception as exc:  # a wrong answer is a problem of the run, not a crash of the harness
                self.fig.problem(f"lane {number} {step}: {type(exc).__name__}: {exc}")
                return
            self.fig.steps += 1

    def _expect(self, what: str, got: Any, expected: Any) -> None:
        if got != expected:
            self.fig.problem(f"{what}: got {got!r}, model expected {expected!r}")

    async def _pin_block(self, term: LaneTerminal, card: CardModel) -> tuple[bytes, int]:
        """A PIN block under the current session's PIN key, and the process lifetime it belongs to."""
        await self._ensure(term)
        assert term.session_epoch is not None
        return term.terminal.pin_block(card.pin, card.pan), term.session_epoch

    def _pin_unreadable(self, what: str, answer: Answer) -> bool:
        """A PIN-bearing request decided afresh by a restarted host: its PIN block is under the old key.

        §6.1: identical bytes across a new sign-on; §7: a block that does not decode is 55, no try
        counted. Nothing moved; the terminal asks for the PIN again under a new STAN.
        """
        if not answer.new_session:
            return False
        self._expect(f"{what} retransmitted to a restarted host, never committed before", answer.response.response_code,
                     "55")
        self.fig.fresh_pin_55 += 1
        return True

    async def _authorize(self, term: LaneTerminal, card: CardModel, amount: int) -> tuple[Any, int]:
        pin_block, epoch = await self._pin_block(term, card)
        request = pos_pb2.AuthorizeRequest(pan=card.pan, pin_block=pin_block, amount=amount, product_code="92", pump=1)
        answer = await self._call(term, "Authorize", request, epoch)
        response, stan = answer.response, answer.stan
        if self._pin_unreadable("Authorize", answer):
            return None, stan
        if amount > card.balance:
            self._expect("Authorize code", response.response_code, "51")
            self.fig.declines += 1
            return None, stan
        self._expect("Authorize", (response.response_code, response.approved_amount, response.available_balance),
                     ("00", amount, card.balance - amount))
        if response.response_code != "00":
            return None, stan
        self.fig.approvals.append(Approval("authorize", response.hold_id, amount, term.terminal.terminal_id, stan))
        return response, stan

    async def _auth_complete(self, term: LaneTerminal, card: CardModel, rng: random.Random) -> None:
        auth, _ = await self._authorize(term, card, rng.randint(AMOUNT_MIN_FEN, AMOUNT_MAX_FEN))
        if auth is None:
            return
        volume = rng.randint(1, auth.approved_amount * 1000 // UNIT_PRICE_FEN)
        amount = (volume * UNIT_PRICE_FEN + 500) // 1000
        request = pos_pb2.CompleteRequest(hold_id=auth.hold_id, amount=amount, volume_ml=volume, product_code="92",
                                          unit_price=UNIT_PRICE_FEN)
        answer = await self._call(term, "Complete", request)
        done = answer.response
        settled = amount - done.discount_amount
        card.balance -= settled
        self._expect("Complete", (done.response_code, done.settled_amount, done.balance),
                     ("00", settled, card.balance))
        self.fig.approvals.append(Approval("complete", done.transaction_id, settled, term.terminal.terminal_id,
                                           answer.stan))

    async def _auth_cancel(self, term: LaneTerminal, card: CardModel, rng: random.Random) -> None:
        auth, _ = await self._authorize(term, card, rng.randint(AMOUNT_MIN_FEN, AMOUNT_MAX_FEN))
        if auth is None:
            return
        answer = await self._call(term, "Cancel", pos_pb2.CancelRequest(hold_id=auth.hold_id))
        self._expect("Cancel code", answer.response.response_code, "00")

    async def _auth_reverse(self, term: LaneTerminal, card: CardModel, rng: random.Random) -> None:
        auth, auth_stan = await self._authorize(term, card, rng.randint(AMOUNT_MIN_FEN, AMOUNT_MAX_FEN))
        if auth is None:
            return
        await self._reverse(term, auth_stan, auth.hold_id, 0)

    async def _reverse(self, term: LaneTerminal, original_stan: int, ref: str, amount: int) -> None:
        answer = await self._call(term, "Reverse", pos_pb2.ReverseRequest(original_stan=original_stan))
        self._expect("Reverse code", answer.response.response_code, "00")
        self.fig.approvals.append(Approval("reversal", ref, amount, term.terminal.terminal_id, answer.stan,
                                           original_stan))

    async def _purchase(self, term: LaneTerminal, card: CardModel, rng: random.Random) -> tuple[Any, int, int]:
        amount = rng.randint(AMOUNT_MIN_FEN, AMOUNT_MAX_FEN)
        pin_block, epoch = await self._pin_block(term, card)
        request = pos_pb2.PurchaseRequest(pan=card.pan, pin_block=pin_block, amount=amount, product_code="92")
        answer = await self._call(term, "Purchase", request, epoch)
        done, stan = answer.response, answer.stan
        if self._pin_unreadable("Purchase", answer):
            return None, stan, 0
        if amount > card.balance:
            self._expect("Purchase code", done.response_code, "51")
            self.fig.declines += 1
            return None, stan, 0
        card.balance -= amount
        self._expect("Purchase", (done.response_code, done.balance), ("00", card.balance))
        self.fig.approvals.append(Approval("purchase", done.transaction_id, amount, term.terminal.terminal_id, stan))
        return done, stan, amount

    async def _purchase_reverse(self, term: LaneTerminal, card: CardModel, rng: random.Random) -> None:
        sale, stan, amount = await self._purchase(term, card, rng)
        if sale is None:
            return
        await self._reverse(term, stan, sale.transaction_id, amount)
        card.balance += amount

    async def _purchase_refund(self, term: LaneTerminal, card: CardModel, rng: random.Random) -> None:
        sale, _, sold = await self._purchase(term, card, rng)
        if sale is None:
            return
        amount = rng.randint(1, sold)
        request = pos_pb2.RefundRequest(original_transaction_id=sale.transaction_id, amount=amount)
        answer = await self._call(term, "Refund", request)
        done = answer.response
        card.balance += amount
        self._expect("Refund", (done.response_code, done.balance), ("00", card.balance))
        self.fig.approvals.append(Approval("refund", done.transaction_id, amount, term.terminal.terminal_id,
                                           answer.stan))

    async def _inquiry(self, term: LaneTerminal, card: CardModel, rng: random.Random) -> None:
        pin_block, epoch = await self._pin_block(term, card)
        request = pos_pb2.BalanceInquiryRequest(pan=card.pan, pin_block=pin_block)
        answer = await self._call(term, "BalanceInquiry", request, epoch)
        if self._pin_unreadable("BalanceInquiry", answer):
            return
        done = answer.response
        self._expect("BalanceInquiry", (done.response_code, done.balance, done.available),
                     ("00", card.balance, card.balance))

    # -- calls ---------------------------------------------------------------------------

    async def _ensure(self, term: LaneTerminal) -> None:
        """A PIN block needs the current session's PIN key: be signed on before building one."""
        while True:
            await self.host.up.wait()
            try:
                await term.ensure_session(self.host.epoch)
                return
            except (grpc.aio.AioRpcError, TerminalError):
                await asyncio.sleep(self._pause_s)  # the host is going down or not up yet

    async def _call(self, term: LaneTerminal, method: str, request: Any, built_epoch: int | None = None) -> Answer:
        """Serialize once, send until answered. `built_epoch`: the session lifetime of a PIN block inside."""
        stan, body = term.terminal.prepare(request)
        self.fig.requests += 1
        response, epoch, stored = await self._send_until_answered(term, method, body, stan)
        if len(self._answered) < 64:
            self._answered.append(_Answered(term, method, body, response))
        new_session = built_epoch is not None and epoch != built_epoch and not isinstance(stored, bytes)
        return Answer(response, stan, new_session)

    async def _send_until_answered(self, term: LaneTerminal, method: str, body: bytes,
                                   stan: int | None) -> tuple[Any, int | None, bytes | None | bool]:
        """Send `body`, retransmitting the identical bytes until the host answers (not 91).

        Returns the answer, the process lifetime (epoch) that gave it, and, when an attempt was lost
        in a crash, the answer PostgreSQL held for the STAN before the first retransmission to the
        restarted host (None: nothing was committed; False: not looked up).
        """
        lost_epoch: int | None = None  # the process the latest unanswered attempt went to
        stored: bytes | None | bool = False
        sends = 0
        response_type = RPCS[method][1]
        while True:
            await self._ensure(term)
            epoch = term.session_epoch  # the process whose session MACs this attempt
            if stan is not None and lost_epoch is not None and epoch != lost_epoch:
                # Every process the request may have reached is dead: what PostgreSQL holds is final.
                assert self._db is not None
                stored = await self._db.fetchval(
                    "SELECT response FROM pos_messages WHERE terminal_id = $1 AND stan = $2",
                    term.terminal.terminal_id, stan)
                lost_epoch = None
            started = time.monotonic()
            sends += 1
            self.fig.attempts += 1
            try:
                response = await term.terminal.send_bytes(method, body)
            except grpc.aio.AioRpcError as exc:
                self._log(started, exc.code().name)
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and (exc.details() or "").startswith(
                        ("unknown-session", "session-expired")):
                    term.session_epoch = None  # refused before processing: sign on, send again
                    continue
                if exc.code() not in UNKNOWN_OUTCOME:
                    raise
                lost_epoch = epoch
                await asyncio.sleep(self._pause_s)  # §6.2: retransmit after a pause
                continue
            except TerminalError as exc:  # a bad response MAC: the outcome is unknown, as for a lost answer
                self._log(started, type(exc).__name__)
                lost_epoch = epoch
                continue
            self._log(started, response.response_code)
            if response.response_code == "91":  # not durable, nothing kept: the retransmission is decided afresh
                await asyncio.sleep(self._pause_s)
                continue
            if sends > 1:
                self.fig.retransmitted += 1
            if isinstance(stored, bytes):
                self.fig.lost_answers_original += 1
                if response != response_type.FromString(stored):
                    self.fig.problem(f"{method} stan {stan}: retransmission answered {response}, "
                                     f"but the committed answer is {response_type.FromString(stored)}")
            elif stored is None:
                self.fig.lost_answers_fresh += 1
            return response, epoch, stored

    def _log(self, started: float, outcome: str) -> None:
        now = time.monotonic()
        self.fig.outcomes[outcome] += 1
        self.fig.attempts_log.append(Attempt(started, now - started, outcome))


# ------------------------------------------------------------------------------ database checks


async def check_database(dsn: str, fig: Figures, cards: list[CardModel], topped_up: int) -> dict[str, int]:
    """Everything the terminals were told is in PostgreSQL, nothing they were not told, money conserved."""
    conn = await asyncpg.connect(dsn)
    try:
        return await _check(conn, fig, cards, topped_up)
    finally:
        await conn.close()


async def _check(conn: asyncpg.Connection, fig: Figures, cards: list[CardModel], topped_up: int) -> dict[str, int]:
    problems: list[str] = []
    transactions = {r["transaction_id"]: r for r in await conn.fetch(
        "SELECT transaction_id, kind, amount, terminal_id, stan, original_id FROM transactions")}
    holds = {r["hold_id"]: r for r in await conn.fetch("SELECT hold_id, amounts, posted, state FROM holds")}
    messages = {(r["terminal_id"], r["stan"]): r for r in await conn.fetch(
        "SELECT terminal_id, stan, method, reversed, effect_kind, effect_ref, response FROM pos_messages")}
    # 1. every approval a terminal received is there, with its amount
    for a in fig.approvals:
        if (a.terminal_id, a.stan) not in messages:
            problems.append(f"approved {a.kind} {a.terminal_id}/{a.stan}: no pos_messages row")
        if a.kind == "reversal":
            original = messages.get((a.terminal_id, a.original_stan))
            if original is None or not original["reversed"]:
                problems.append(f"approved reversal of {a.terminal_id}/{a.original_stan} not recorded")
            continue
        row = transactions.get(int(a.ref)) if a.ref.isdigit() else None
        if row is None or row["kind"] != a.kind or row["amount"] != a.amount:
            problems.append(f"approved {a.kind} {a.ref} of {a.amount}: database has {dict(row) if row else None}")
        if a.kind == "authorize" and (int(a.ref) not in holds or sum(holds[int(a.ref)]["amounts"]) != a.amount):
            problems.append(f"approved hold {a.ref} of {a.amount} is not in holds")
    # 2. nothing the terminals were not told: every POS row has its answer row, every hold its authorization
    for txn_id, row in transactions.items():
        if row["terminal_id"] is not None and (row["terminal_id"], row["stan"]) not in messages:
            problems.append(f"transaction {txn_id} ({row['kind']}) has no pos_messages row: an unanswered decision")
    for hold_id in holds:
        if hold_id not in transactions or transactions[hold_id]["kind"] != "authorize":
            problems.append(f"hold {hold_id} has no authorize transaction")
    pending = [h for h, r in holds.items() if r["state"] == 1]
    if pending:
        problems.append(f"{len(pending)} holds still pending after every lane finished its step: {pending[:5]}")
    approved_refs = {(a.kind, a.ref) for a in fig.approvals}
    for txn_id, row in transactions.items():
        if row["terminal_id"] is not None and row["kind"] != "reversal" and (row["kind"], str(txn_id)) not in approved_refs:
            problems.append(f"{row['kind']} {txn_id} is in the database but no terminal was told about it")
    # 3. conservation: per card the model, in total top-ups - sales + refunds + reversed purchases
    balances = {str(r["account_id"]): (r["balance"]) for r in await conn.fetch("SELECT account_id, balance FROM accounts")}
    for card in cards:
        if balances.get(card.account_id) != card.balance:
            problems.append(f"account {card.account_id}: database {balances.get(card.account_id)}, model {card.balance}")
    sales = sum(a.amount for a in fig.approvals if a.kind in ("complete", "purchase"))
    refunds = sum(a.amount for a in fig.approvals if a.kind == "refund")
    reversed_sales = sum(a.amount for a in fig.approvals if a.kind == "reversal")
    total = await conn.fetchval("SELECT coalesce(sum(balance), 0)::bigint FROM accounts")
    sql_total = await conn.fetchval(
        """SELECT coalesce(sum(CASE WHEN kind IN ('topup', 'refund') THEN amount
                                    WHEN kind IN ('complete', 'purchase') THEN -amount
                                    WHEN kind = 'reversal' AND original_id IN (SELECT transaction_id FROM transactions
                                                                              WHERE kind = 'purchase') THEN amount
                                    ELSE 0 END), 0)::bigint FROM transactions""")
    if not total == sql_total == topped_up - sales + refunds + reversed_sales:
        problems.append(f"conservation: sum(balance) {total}, from transactions {sql_total}, from the terminals' "
                        f"answers {topped_up - sales + refunds + reversed_sales}")
    assert not problems, "\n".join(problems[:30])
    return {"transactions": len(transactions), "holds": len(holds), "messages": len(messages), "total": total}


async def memory_equals_database(channel: grpc.aio.Channel, token: str, dsn: str, cards: list[CardModel]) -> None:
    """The running switch's balances (CardAdmin.GetAccount) equal PostgreSQL's, with nothing held."""
    from fuelswitch.v1 import admin_pb2

    from loadtest.provision import Operator

    op = Operator(channel, token)
    conn = await asyncpg.connect(dsn)
    try:
        for card in cards:
            account = await op.call("GetAccount", admin_pb2.GetAccountRequest(account_id=card.account_id))
            db = await conn.fetchval("SELECT balance FROM accounts WHERE account_id = $1", int(card.account_id))
            assert (account.balance, account.held) == (db, 0), (card.account_id, account.balance, account.held, db)
    finally:
        await conn.close()

