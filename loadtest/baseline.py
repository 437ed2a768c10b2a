"""The naive baseline server: what a typical team builds. The yardstick for the real switch.

Same service (`fuelswitch.v1.PosGateway`), but only SignOn, Authorize and Complete; every other
method answers UNIMPLEMENTED. The security work is the same as the switch's, so the comparison
is fair: SM2 sign-on and session keys (`switch.sessions.SessionTable`), the MAC checked over the
exact received bytes (the request deserializer is the identity), a response MAC over the exact
sent bytes, PIN blocks decrypted and checked against keyed PIN verification values.

The business logic is done the plain way: every Authorize / Complete is ONE PostgreSQL
transaction through an asyncpg pool — look up the STAN, lock the account (and hold) rows with
SELECT ... FOR UPDATE, check, write the hold or the sale, store the response under
(terminal_id, stan) for retransmissions, COMMIT, then reply. No caches, no batching.

Response codes: 00 approved, 12 invalid transaction (unknown product; hold no longer open or
made by another terminal, as in the switch), 13 bad amount, 14 unknown card, 25 unknown hold,
51 insufficient funds, 55 wrong PIN, 94 duplicate. Not modelled: card states, limits, partial approval, PIN try counters, hold expiry,
preset-volume authorizations (no price list: amount 0 is 13).

Tables are prefixed `naive_` so the baseline can share a database with the switch.

    python -m loadtest.baseline --listen 127.0.0.1:50052 --dsn postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import grpc.aio
from fuelswitch.v1 import pos_pb2
from google.protobuf.message import DecodeError, Message

from loadtest.terminal import SERVICE, pan_is_valid
from switch import pinblock, sm3
from switch.protocol import MD_HOST_TIME, MD_MAC, MD_SESSION_ID, MD_TERMINAL_ID, Unauthenticated
from switch.sessions import Session, SessionTable

log = logging.getLogger(__name__)

# Test-only PIN verification key: provision() and serve() must use the same one.
DEFAULT_PVK = bytes.fromhex("6e616976652d626173656c696e652d70766b2d746573742d6f6e6c7921212121")
DEFAULT_STATION_ID = "NAIVE-ST-001"
AMOUNT_MAX_FEN = 10_000_000  # §8.2: an amount above ¥100 000 is declined 13
HOLD_TTL_MS = 30 * 60 * 1000  # reported in expires_at_ms; the baseline does not expire holds
POOL_SIZE_DEFAULT = 16
GRACE_S = 2.0
PRODUCTS = frozenset({"92", "95", "98", "0", "-10", "E92", "LNG", "CNG"})
APPROVAL_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS naive_hold_seq;
CREATE SEQUENCE IF NOT EXISTS naive_transaction_seq;
CREATE SEQUENCE IF NOT EXISTS naive_account_seq;
CREATE TABLE IF NOT EXISTS naive_terminals (
    terminal_id    text PRIMARY KEY,
    public_key_hex text NOT NULL,
    station_id     text NOT NULL
);
CREATE TABLE IF NOT EXISTS naive_accounts (
    account_id bigint PRIMARY KEY,
    balance    bigint NOT NULL,
    held       bigint NOT NULL DEFAULT 0 CHECK (held >= 0)
);
CREATE TABLE IF NOT EXISTS naive_cards (
    pan        text PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES naive_accounts,
    pvv        bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS naive_holds (
    hold_id           text PRIMARY KEY
                      DEFAULT 'NH' || lpad(nextval('naive_hold_seq')::text, 12, '0'),
    account_id        bigint NOT NULL REFERENCES naive_accounts,
    terminal_id       text NOT NULL,
    stan              bigint NOT NULL,
    amount            bigint NOT NULL,
    product_code      text NOT NULL,
    status            text NOT NULL DEFAULT 'open',   -- open | settled | cancelled
    created_at        timestamptz NOT NULL DEFAULT now(),
    complete_key      text,                           -- amount|volume|product|price of the completion
    complete_response bytea                           -- its response, for repeated completions
);
CREATE TABLE IF NOT EXISTS naive_transactions (
    transaction_id text PRIMARY KEY
                   DEFAULT 'NT' || lpad(nextval('naive_transaction_seq')::text, 12, '0'),
    account_id     bigint NOT NULL REFERENCES naive_accounts,
    hold_id        text NOT NULL REFERENCES naive_holds,
    terminal_id    text NOT NULL,
    stan           bigint NOT NULL,
    amount         bigint NOT NULL,
    volume_ml      bigint NOT NULL,
    product_code   text NOT NULL,
    unit_price     bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS naive_stans (
    terminal_id text NOT NULL,
    stan        bigint NOT NULL,
    request_sm3 bytea NOT NULL,
    response    bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (terminal_id, stan)
);
"""

_SELECT_STAN = "SELECT request_sm3, response FROM naive_stans WHERE terminal_id = $1 AND stan = $2"
_INSERT_STAN = (
    "INSERT INTO naive_stans (terminal_id, stan, request_sm3, response) VALUES ($1, $2, $3, $4)"
)
_LOCK_CARD = """
SELECT c.account_id, c.pvv, a.balance, a.held
FROM naive_cards c JOIN naive_accounts a ON a.account_id = c.account_id
WHERE c.pan = $1
FOR UPDATE OF a
"""
_INSERT_HOLD = """
INSERT INTO naive_holds (account_id, terminal_id, stan, amount, product_code)
VALUES ($1, $2, $3, $4, $5) RETURNING hold_id
"""
_HOLD_FUNDS = "UPDATE naive_accounts SET held = held + $2 WHERE account_id = $1"
_LOCK_HOLD = """
SELECT h.account_id, h.terminal_id, h.amount, h.status, h.complete_key, h.complete_response,
       a.balance, a.held
FROM naive_holds h JOIN naive_accounts a ON a.account_id = h.account_id
WHERE h.hold_id = $1
FOR UPDATE
"""
_SETTLE_FUNDS = """
UPDATE naive_accounts SET balance = balance - $2, held = held - $3 WHERE account_id = $1
RETURNING balance, held
"""
_INSERT_TRANSACTION = """
INSERT INTO naive_transactions
    (account_id, hold_id, terminal_id, stan, amount, volume_ml, product_code, unit_price)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING transaction_id
"""
_CLOSE_HOLD = """
UPDATE naive_holds SET status = $2, complete_key = $3, complete_response = $4 WHERE hold_id = $1
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Malformed(ValueError):
    """The request cannot be processed as sent: INVALID_ARGUMENT, names the field."""


# ---------------------------------------------------------------------- schema and provisioning


async def create_schema(dsn: str) -> None:
    """Create the naive_* tables (idempotent)."""
    con = await asyncpg.connect(dsn)
    try:
        await con.execute(SCHEMA)
    finally:
        await con.close()


async def provision(
    dsn: str,
    terminals: Sequence[tuple[str, str]] = (),
    cards: Sequence[tuple[str, str, int]] = (),
    pvk: bytes = DEFAULT_PVK,
    *,
    station_id: str = DEFAULT_STATION_ID,
) -> None:
    """Register terminals (terminal_id, public_key_hex) — re-registering replaces the key — and
    issue cards (pan, pin, balance_fen), each with an account of its own. A PAN already issued
    is an error (asyncpg.UniqueViolationError)."""
    con = await asyncpg.connect(dsn)
    try:
        async with con.transaction():
            await con.executemany(
                "INSERT INTO naive_terminals (terminal_id, public_key_hex, station_id) "
                "VALUES ($1, $2, $3) ON CONFLICT (terminal_id) DO UPDATE "
                "SET public_key_hex = EXCLUDED.public_key_hex, station_id = EXCLUDED.station_id",
                [(tid, key, station_id) for tid, key in terminals],
            )
            ids = await con.fetch(
                "SELECT nextval('naive_account_seq') AS id FROM generate_series(1, $1)", len(cards)
            )
            account_ids = [row["id"] for row in ids]
            await con.executemany(
                "INSERT INTO naive_accounts (account_id, balance) VALUES ($1, $2)",
                [(aid, balance) for aid, (_, _, balance) in zip(account_ids, cards, strict=True)],
            )
            await con.executemany(
                "INSERT INTO naive_cards (pan, account_id, pvv) VALUES ($1, $2, $3)",
                [
                    (pan, aid, pinblock.pin_verification_value(pvk, pan, pin))
                    for aid, (pan, pin, _) in zip(account_ids, cards, strict=True)
                ],
            )
    finally:
        await con.close()


# ---------------------------------------------------------------------- the service

Handler = Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]


class NaiveGateway:
    """SignOn / Authorize / Complete over one asyncpg pool and one in-memory SessionTable."""

    def __init__(self, pool: asyncpg.Pool, pvk: bytes, sessions: SessionTable) -> None:
        self._pool = pool
        self._pvk = pvk
        self._sessions = sessions

    def handlers(self) -> grpc.GenericRpcHandler:
        methods = {
            "SignOn": self.sign_on,
            "Authorize": self._session_call(pos_pb2.AuthorizeRequest, self._authorize),
            "Complete": self._session_call(pos_pb2.CompleteRequest, self._complete),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    _guarded(handler),
                    request_deserializer=_keep_bytes,
                    response_serializer=_keep_bytes,
                )
                for name, handler in methods.items()
            },
        )

    # ------------------------------------------------------------------ SignOn

    async def sign_on(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        request = pos_pb2.SignOnRequest.FromString(body)
        async with self._pool.acquire() as con:
            row = await con.fetchrow(
                "SELECT public_key_hex, station_id FROM naive_terminals WHERE terminal_id = $1",
                request.terminal_id,
            )
        public_key = None if row is None else row["public_key_hex"]
        now = now_ms()
        # SM2 verification is ~10 ms of pure Python: off the event loop, as in the switch.
        try:
            await asyncio.to_thread(
                SessionTable.check_signon,
                request.terminal_id,
                public_key,
                request.nonce,
                request.terminal_time_ms,
                request.signature,
                now,
            )
        except ValueError as exc:  # nonce or signature of the wrong length
            raise Malformed(str(exc)) from exc
        assert row is not None  # check_signon refused unknown terminals
        opened = self._sessions.open(request.terminal_id, request.nonce, now, row["public_key_hex"])
        return pos_pb2.SignOnResponse(
            response_code="00",
            message="signed on",
            session_id=opened.session.session_id,
            encrypted_keys=opened.encrypted_keys,
            expires_at_ms=opened.session.expires_at_ms,
            host_time_ms=now_ms(),
            station_id=row["station_id"],
        ).SerializeToString()

    # ------------------------------------------------------------------ the session pipeline

    def _session_call(
        self,
        request_type: type[Any],
        work: Callable[[asyncpg.Connection, Session, Any], Awaitable[Message]],
    ) -> Handler:
        """§5 checks in order, then one transaction with the STAN bookkeeping around `work`."""

        async def handle(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            md = {key: value for key, value in context.invocation_metadata() or ()}
            now = now_ms()
            session = self._sessions.authenticate(
                md.get(MD_TERMINAL_ID), md.get(MD_SESSION_ID), md.get(MD_MAC), body, now
            )
            request = request_type.FromString(body)
            _check_header(request)
            SessionTable.check_header(
                session, request.header.terminal_id, request.header.terminal_time_ms, now
            )
            response = await self._once_per_stan(session, request, body, work)
            context.set_trailing_metadata(((MD_MAC, sm3.mac_hex(session.mac_key, response)),))
            return response

        return handle

    async def _once_per_stan(
        self,
        session: Session,
        request: Any,
        body: bytes,
        work: Callable[[asyncpg.Connection, Session, Any], Awaitable[Message]],
    ) -> bytes:
        """Identical repeat → stored response; different message under the STAN → 94 (§6.1)."""
        digest = sm3.sm3(body)
        key = (session.terminal_id, request.header.stan)
        async with self._pool.acquire() as con:
            for _ in range(2):
                try:
                    async with con.transaction():
                        row = await con.fetchrow(_SELECT_STAN, *key)
                        if row is not None:
                            if row["request_sm3"] == digest:
                                return bytes(row["response"])
                            return _duplicate(request)
                        response = (await work(con, session, request)).SerializeToString()
                        await con.execute(_INSERT_STAN, *key, digest, response)
                        return response
                except asyncpg.UniqueViolationError:
                    continue  # a concurrent call took the STAN first: read its answer
        raise RuntimeError("STAN row vanished after a unique violation")

    # ------------------------------------------------------------------ Authorize

    async def _authorize(
        self, con: asyncpg.Connection, session: Session, request: pos_pb2.AuthorizeRequest
    ) -> pos_pb2.AuthorizeResponse:
        def decline(code: str, text: str, available: int = 0) -> pos_pb2.AuthorizeResponse:
            return pos_pb2.AuthorizeResponse(
                response_code=code, message=text, available_balance=available
            )

        if not 0 < request.amount <= AMOUNT_MAX_FEN:
            return decline("13", "invalid amount")
        if request.product_code not in PRODUCTS:
            return decline("12", "unknown product")
        if not pan_is_valid(request.pan):
            return decline("14", "invalid card")
        card = await con.fetchrow(_LOCK_CARD, request.pan)
        if card is None:
            return decline("14", "invalid card")
        if not self._pin_ok(session, request.pan, request.pin_block, bytes(card["pvv"])):
            return decline("55", "incorrect PIN")
        available = card["balance"] - card["held"]
        if available < request.amount:
            return decline("51", "insufficient funds", available)
        hold_id = await con.fetchval(
            _INSERT_HOLD,
            card["account_id"],
            session.terminal_id,
            request.header.stan,
            request.amount,
            request.product_code,
        )
        await con.execute(_HOLD_FUNDS, card["account_id"], request.amount)
        return pos_pb2.AuthorizeResponse(
            response_code="00",
            message="approved",
            hold_id=hold_id,
            approved_amount=request.amount,
            available_balance=available - request.amount,
            approval_code="".join(secrets.choice(APPROVAL_ALPHABET) for _ in range(6)),
            expires_at_ms=now_ms() + HOLD_TTL_MS,
        )

    def _pin_ok(self, session: Session, pan: str, pin_block: bytes, pvv: bytes) -> bool:
        if not pin_block:
            return False  # every baseline card requires a PIN
        try:
            pin = pinblock.decrypt_pin(session.pin_key, pin_block, pan)
        except pinblock.PinBlockError:
            return False
        return pinblock.verify_pin(self._pvk, pan, pin, pvv)

    # ------------------------------------------------------------------ Complete

    async def _complete(
        self, con: asyncpg.Connection, session: Session, request: pos_pb2.CompleteRequest
    ) -> pos_pb2.CompleteResponse:
        def decline(code: str, text: str) -> pos_pb2.CompleteResponse:
            return pos_pb2.CompleteResponse(response_code=code, message=text)

        hold = await con.fetchrow(_LOCK_HOLD, request.hold_id)
        if hold is None:
            return decline("25", "unknown hold")
        if hold["terminal_id"] != session.terminal_id:  # as the switch: another terminal's hold
            return decline("12", "hold belongs to another terminal")
        complete_key = "|".join(
            str(v)
            for v in (request.amount, request.volume_ml, request.product_code, request.unit_price)
        )
        if hold["complete_key"] is not None:  # a hold completes once (§8.2)
            if hold["complete_key"] == complete_key:
                return pos_pb2.CompleteResponse.FromString(bytes(hold["complete_response"]))
            return decline("94", "hold already completed with other values")
        if hold["status"] != "open":
            return decline("12", "hold is no longer open")
        if not _amount_ok(request, hold["amount"]):
            return decline("13", "invalid amount")
        balance, held = await con.fetchrow(
            _SETTLE_FUNDS, hold["account_id"], request.amount, hold["amount"]
        )
        transaction_id = ""
        if request.amount > 0:
            transaction_id = await con.fetchval(
                _INSERT_TRANSACTION,
                hold["account_id"],
                request.hold_id,
                session.terminal_id,
                request.header.stan,
                request.amount,
                request.volume_ml,
                request.product_code,
                request.unit_price,
            )
        response = pos_pb2.CompleteResponse(
            response_code="00",
            message="approved" if request.amount > 0 else "hold released",
            transaction_id=transaction_id,
            settled_amount=request.amount,
            balance=balance,
            available=balance - held,
        )
        status = "settled" if request.amount > 0 else "cancelled"
        await con.execute(
            _CLOSE_HOLD, request.hold_id, status, complete_key, response.SerializeToString()
        )
        return response


def _amount_ok(request: pos_pb2.CompleteRequest, held_amount: int) -> bool:
    """§8.2: 0 ≤ amount ≤ hold, and amount = round_half_up(volume × price / 1000) ± 1 fen."""
    if not 0 <= request.amount <= held_amount:
        return False
    if request.amount == 0:
        return True
    if request.volume_ml <= 0 or request.unit_price < 0:
        return False
    expected = (request.volume_ml * request.unit_price + 500) // 1000
    return abs(request.amount - expected) <= 1


def _check_header(request: Any) -> None:
    if not request.HasField("header"):
        raise Malformed("header: missing")
    if request.header.stan == 0:
        raise Malformed("header.stan: must be 1..4294967295")
    pan = getattr(request, "pan", None)
    if pan is not None and not (16 <= len(pan) <= 19 and pan.isascii() and pan.isdigit()):
        raise Malformed("pan: must be 16-19 decimal digits")
    pin_block = getattr(request, "pin_block", b"")
    if pin_block and len(pin_block) != pinblock.PIN_BLOCK_LEN_BYTES:
        raise Malformed("pin_block: must be empty or 16 bytes")


def _duplicate(request: Any) -> bytes:
    response_type = (
        pos_pb2.AuthorizeResponse
        if isinstance(request, pos_pb2.AuthorizeRequest)
        else pos_pb2.CompleteResponse
    )
    return response_type(
        response_code="94", message="STAN already used by another message"
    ).SerializeToString()


def _keep_bytes(data: bytes) -> bytes:
    return data


def _guarded(handler: Handler) -> Handler:
    """The one error map: internal failures become gRPC statuses, never tracebacks or SQL."""

    async def guarded(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        trailing: tuple[tuple[str, str], ...] = ()
        try:
            return await handler(body, context)
        except Unauthenticated as exc:
            code, details = grpc.StatusCode.UNAUTHENTICATED, str(exc)
            if exc.token == "clock-skew":
                trailing = ((MD_HOST_TIME, str(now_ms())),)
        except Malformed as exc:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except DecodeError:
            code, details = grpc.StatusCode.INVALID_ARGUMENT, "message does not parse"
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            log.exception("database unavailable")
            code, details = grpc.StatusCode.UNAVAILABLE, "database unavailable"
        except Exception:
            log.exception("internal error")
            code, details = grpc.StatusCode.INTERNAL, "internal error"
        await context.abort(code, details, trailing)
        raise AssertionError("context.abort returned")  # it raises; this satisfies the checker

    return guarded


# ---------------------------------------------------------------------- server lifetime


@dataclass
class BaselineServer:
    """A started baseline: the grpc.aio server, its bound port and its pool."""

    server: grpc.aio.Server
    port: int
    pool: asyncpg.Pool

    async def stop(self, grace: float | None = GRACE_S) -> None:
        await self.server.stop(grace)
        await self.pool.close()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self.server.wait_for_termination(timeout)


async def serve(
    listen: str,
    dsn: str,
    pvk: bytes = DEFAULT_PVK,
    *,
    pool_size: int = POOL_SIZE_DEFAULT,
    session_ttl_ms: int | None = None,
    create: bool = True,
) -> BaselineServer:
    """Start the baseline on `listen` (HOST:PORT; port 0 picks one, see `.port`)."""
    if create:
        await create_schema(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
    sessions = SessionTable() if session_ttl_ms is None else SessionTable(session_ttl_ms)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((NaiveGateway(pool, pvk, sessions).handlers(),))
    try:
        port = server.add_insecure_port(listen)
        await server.start()
    except BaseException:
        await pool.close()
        raise
    return BaselineServer(server, port, pool)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.baseline", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:50052", help="HOST:PORT (port 0 = any)")
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN (schema created if missing)")
    parser.add_argument("--pvk-hex", default=DEFAULT_PVK.hex(), help="PIN verification key")
    parser.add_argument("--pool-size", type=int, default=POOL_SIZE_DEFAULT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def run() -> None:
        baseline = await serve(
            args.listen, args.dsn, bytes.fromhex(args.pvk_hex), pool_size=args.pool_size
        )
        host = args.listen.rsplit(":", 1)[0]
        print(f"naive baseline listening on {host}:{baseline.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await baseline.stop()

    import uvloop

    uvloop.run(run())


if __name__ == "__main__":
    main()
