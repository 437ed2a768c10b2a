"""PosGateway over gRPC: authentication and STAN rules around the decisions in pos_decisions.

Handlers receive the raw request bytes (registered with a pass-through deserializer) because the
MAC covers the exact bytes the terminal sent; the switch never re-serializes to check it.
Order of checks (docs/pos-protocol.md §5): metadata, session, MAC, parse, header terminal, time
window, STAN. A refused call does not use its STAN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
from fuelswitch.v1 import pos_pb2
from google.protobuf.message import DecodeError

from switch import policy as P
from switch import pos_decisions as D
from switch import sm3
from switch.app import App
from switch.errors import Overloaded, RequestInvalid, refuse_nul
from switch.journal import JournalUnavailable
from switch.offline_service import OfflineGateway
from switch.protocol import MD_MAC, MD_SESSION_ID, MD_TERMINAL_ID, Unauthenticated
from switch.sessions import Session, SessionTable
from switch.state import PosMessage

log = logging.getLogger("fuelswitch.pos")

SERVICE = "fuelswitch.v1.PosGateway"

Decide = Callable[[D.Ctx, Any], D.Outcome]

# method -> (request type, response type, decision)
METHODS: dict[str, tuple[Any, Any, Decide]] = {
    "Authorize": (pos_pb2.AuthorizeRequest, pos_pb2.AuthorizeResponse, D.authorize),
    "Complete": (pos_pb2.CompleteRequest, pos_pb2.CompleteResponse, D.complete),
    "Cancel": (pos_pb2.CancelRequest, pos_pb2.CancelResponse, D.cancel),
    "Reverse": (pos_pb2.ReverseRequest, pos_pb2.ReverseResponse, D.reverse),
    "Purchase": (pos_pb2.PurchaseRequest, pos_pb2.PurchaseResponse, D.purchase),
    "Refund": (pos_pb2.RefundRequest, pos_pb2.RefundResponse, D.refund),
    "BalanceInquiry": (pos_pb2.BalanceInquiryRequest, pos_pb2.BalanceInquiryResponse, D.balance_inquiry),
}
PAN_LEN_MIN, PAN_LEN_MAX = 16, 19
PIN_BLOCK_LEN_BYTES = 16


class PosGateway:
    def __init__(self, app: App) -> None:
        self.app = app
        # (terminal, STAN) -> (request digest, future of the response bytes) while the first copy is in flight
        self._inflight: dict[tuple[str, int], tuple[bytes, asyncio.Future[bytes]]] = {}

    # -- SignOn --------------------------------------------------------------------

    async def sign_on(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            req = pos_pb2.SignOnRequest.FromString(raw)
        except DecodeError as exc:
            raise RequestInvalid("SignOnRequest does not parse") from exc
        app = self.app
        if app.config.terminal_certificates:  # before any SM2 work: a certificate speaks for one terminal
            check_certificate(context, req.terminal_id)
        now = app.clock_ms()
        terminal = app.state.terminals.get(req.terminal_id)
        public_key = terminal.public_key if terminal and terminal.state == "active" else None
        mac_key, pin_key = SessionTable.new_keys()

        def check_then_encrypt() -> bytes:
            try:
                SessionTable.check_signon(req.terminal_id, public_key, req.nonce, req.terminal_time_ms,
                                          req.signature, now)
            except ValueError as exc:
                raise RequestInvalid(str(exc)) from exc
            assert public_key is not None
            return app.encrypt_keys(public_key, mac_key + pin_key)

        # One worker-thread hop for both SM2 operations (OpenSSL, GIL released) cost the least switch CPU per
        # sign-on in tests/bench/test_signon_bench.py, against a hop each or calling them inline. The price: a
        # replayed request pays for an encryption before claim_nonce refuses it.
        encrypted = await asyncio.get_running_loop().run_in_executor(None, check_then_encrypt)
        assert terminal is not None
        app.sessions.claim_nonce(req.terminal_id, req.nonce)
        session = app.sessions.install(req.terminal_id, mac_key, pin_key, app.clock_ms())
        response = pos_pb2.SignOnResponse(
            response_code=P.APPROVED, message="signed on", session_id=session.session_id,
            encrypted_keys=encrypted, expires_at_ms=session.expires_at_ms, host_time_ms=app.clock_ms(),
            station_id=terminal.station_id,
        )
        return response.SerializeToString()

    # -- every other call --------------------------------------------------------------

    def handler(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._handle(method, raw, context)

        return handle

    async def authenticate(self, raw: bytes, context: grpc.aio.ServicerContext, now: int) -> Session:
        """Metadata, session, MAC over `raw`, client certificate, rate and capacity (§5 steps 1–3)."""
        app = self.app
        md = dict(context.invocation_metadata() or ())
        try:
            session = app.sessions.authenticate(md.get(MD_TERMINAL_ID), md.get(MD_SESSION_ID), md.get(MD_MAC), raw,
                                                now)
        except Unauthenticated as exc:
            if exc.token == "bad-mac":  # only reachable with the terminal's live session id
                await self.mac_failed(str(md.get(MD_TERMINAL_ID)), now)
            raise
        if app.config.terminal_certificates:
            check_certificate(context, session.terminal_id)
        if not app.request_rate.take(session.terminal_id, now):
            raise Overloaded(f"terminal {session.terminal_id} exceeds {app.config.abuse.requests_per_s:g} requests/s")
        if app.writer.queue_depth >= app.config.journal_queue_max:
            raise Overloaded("the host is at capacity; retry with the same STAN")
        return session

    async def _handle(self, method: str, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request_type, response_type, decide = METHODS[method]
        now = self.app.clock_ms()
        session = await self.authenticate(raw, context, now)
        try:
            req = request_type.FromString(raw)
        except DecodeError as exc:
            raise RequestInvalid(f"{request_type.__name__} does not parse") from exc
        if not req.HasField("header"):
            raise RequestInvalid("header is required")
        SessionTable.check_header(session, req.header.terminal_id, req.header.terminal_time_ms, now)
        check_well_formed(req)
        body = await self._answer(method, req, raw, session, response_type, decide)
        context.set_trailing_metadata(((MD_MAC, sm3.mac_hex(session.mac_key, body)),))
        return body

    async def mac_failed(self, terminal_id: str, now: int) -> None:
        app = self.app
        log.warning("SECURITY bad MAC from terminal %s", terminal_id)
        if app.mac_failures.record(terminal_id, now):
            abuse = app.config.abuse
            await app.suspend_terminal(terminal_id, f"{abuse.mac_failures_max} MAC failures within "
                                                    f"{abuse.mac_failure_window_ms // 60_000} min")

    async def _answer(self, method: str, req: Any, raw: bytes, session: Session, response_type: Any,
                      decide: Decide) -> bytes:
        app = self.app
        key = (session.terminal_id, req.header.stan)
        digest = sm3.sm3(raw)
        inflight = self._inflight.get(key)
        if inflight is not None:
            if inflight[0] == digest:
                return await asyncio.shield(inflight[1])  # the retransmission gets the original's answer
            return _code(response_type, P.DUPLICATE, "STAN already used for another message")
        seen = app.state.messages.get(key)
        if seen is not None:
            if seen.request_digest == digest and seen.response is not None:
                return seen.response
            return _code(response_type, P.DUPLICATE, "STAN already used for another message")
        if method == "Reverse":
            await self._settled(session.terminal_id, req.original_stan)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = (digest, future)
        try:
            body = await self._decide_and_commit(method, req, session, key, digest, response_type, decide)
            future.set_result(body)
            return body
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    async def _settled(self, terminal_id: str, stan: int) -> None:
        """Let an original still in flight finish before its reversal is decided."""
        inflight = self._inflight.get((terminal_id, stan))
        if inflight is not None:
            await asyncio.wait([inflight[1]])

    async def _decide_and_commit(self, method: str, req: Any, session: Session, key: tuple[str, int],
                                 digest: bytes, response_type: Any, decide: Decide) -> bytes:
        app = self.app
        if not app.available:
            return _code(response_type, P.ISSUER_UNAVAILABLE, "host is recovering; retry")
        state = app.state
        terminal = state.terminals.get(session.terminal_id)
        if terminal is None or terminal.state != "active":
            raise Unauthenticated("unknown-terminal", "terminal is not registered or not active")
        hold_ttl_ms = app.config.hold_ttl_ms_for(state.stations[terminal.station_id].station_class)
        ctx = D.Ctx(state, session.terminal_id, terminal.station_id, req.header.stan, session.pin_key,
                    app.keyring, app.clock_ms(), hold_ttl_ms)
        outcome = decide(ctx, req)
        body = outcome.response.SerializeToString()
        message = PosMessage(method, digest, body, outcome.effect_kind, outcome.effect_ref)
        row = ("message", (key[0], key[1], method, digest, body, outcome.effect_kind, outcome.effect_ref,
                           False, ctx.now_ms))
        commit = app.writer.submit([*outcome.records, row])
        try:
            await commit
        except JournalUnavailable:
            return _code(response_type, P.ISSUER_UNAVAILABLE, "decision not durable; retry")
        app.state.messages[key] = message
        return body


def check_certificate(context: grpc.aio.ServicerContext, terminal_id: str) -> None:
    """With client certificates required, a terminal may only speak for the id its certificate names."""
    names = context.auth_context().get("x509_common_name", [])
    if terminal_id.encode() not in names:
        raise Unauthenticated("certificate-mismatch", "the client certificate is not this terminal's")


def check_well_formed(req: Any) -> None:
    """Malformed messages (a terminal software bug) are INVALID_ARGUMENT naming the field (§11)."""
    if req.header.stan == 0:
        raise RequestInvalid("header.stan must not be 0")
    pan = getattr(req, "pan", None)
    if pan is not None and not (PAN_LEN_MIN <= len(pan) <= PAN_LEN_MAX and pan.isascii() and pan.isdigit()):
        raise RequestInvalid("pan must be 16 to 19 decimal digits")
    pin_block = getattr(req, "pin_block", b"")
    if pin_block and len(pin_block) != PIN_BLOCK_LEN_BYTES:
        raise RequestInvalid(f"pin_block must be {PIN_BLOCK_LEN_BYTES} bytes (or empty)")
    refuse_nul(req)  # e.g. a Complete's product_code is stored as given


def _code(response_type: Any, code: str, text: str) -> bytes:
    return bytes(response_type(response_code=code, message=text).SerializeToString())


def method_handlers(gateway: PosGateway, guard: Callable[..., Any]) -> grpc.GenericRpcHandler:
    """Register every PosGateway method with pass-through (de)serializers, each wrapped in `guard`."""
    handlers = {
        "SignOn": grpc.unary_unary_rpc_method_handler(guard(gateway.sign_on)),
    }
    for method in METHODS:
        handlers[method] = grpc.unary_unary_rpc_method_handler(guard(gateway.handler(method)))
    offline = OfflineGateway(gateway)
    handlers["SyncHotlist"] = grpc.unary_unary_rpc_method_handler(guard(offline.sync_hotlist))
    handlers["UploadOffline"] = grpc.stream_unary_rpc_method_handler(guard(offline.upload))
    handlers["UploadOfflineBatch"] = grpc.stream_unary_rpc_method_handler(guard(offline.upload_batches))
    return grpc.method_handlers_generic_handler(SERVICE, handlers)
