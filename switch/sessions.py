"""Terminal sessions: SignOn (SM2) and the MAC/session/time-window check on every other call.

Sessions live in memory only: after a host restart every terminal signs on again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from switch import sm2, sm3
from switch.protocol import (
    NONCE_LEN_BYTES,
    SESSION_KEY_LEN_BYTES,
    SESSION_TTL_MS_MAX,
    SIGNATURE_LEN_BYTES,
    TIME_WINDOW_MS,
    Unauthenticated,
    signon_message,
)

NONCES_PER_TERMINAL_MAX = 64  # remembered nonces; older ones are outside the time window anyway


@dataclass(frozen=True)
class Session:
    session_id: str
    terminal_id: str
    mac_key: bytes
    pin_key: bytes
    expires_at_ms: int


@dataclass(frozen=True)
class SignOnResult:
    session: Session
    encrypted_keys: bytes


class SessionTable:
    """At most one live session per terminal; a new SignOn replaces the old one at once."""

    def __init__(self, session_ttl_ms: int = SESSION_TTL_MS_MAX) -> None:
        if not 0 < session_ttl_ms <= SESSION_TTL_MS_MAX:
            raise ValueError("session_ttl_ms must be positive and at most 24 h")
        self._ttl_ms = session_ttl_ms
        self._by_id: dict[str, Session] = {}
        self._by_terminal: dict[str, str] = {}
        self._nonces: dict[str, list[bytes]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    @staticmethod
    def check_signon(
        terminal_id: str,
        public_key_hex: str | None,
        nonce: bytes,
        terminal_time_ms: int,
        signature: bytes,
        now_ms: int,
        verify: Callable[[str, bytes, bytes], bool] = sm2.verify,
    ) -> None:
        """Raise ValueError (malformed) or Unauthenticated; pure, so it can run off the event loop."""
        if len(nonce) != NONCE_LEN_BYTES:
            raise ValueError(f"nonce must be {NONCE_LEN_BYTES} bytes")
        if len(signature) != SIGNATURE_LEN_BYTES:
            raise ValueError(f"signature must be {SIGNATURE_LEN_BYTES} bytes (r||s)")
        if public_key_hex is None:
            raise Unauthenticated("unknown-terminal", f"terminal {terminal_id!r} is not registered")
        if abs(terminal_time_ms - now_ms) > TIME_WINDOW_MS:
            raise Unauthenticated("clock-skew", "terminal time is outside ±300 s of host time")
        if not verify(public_key_hex, signon_message(terminal_id, nonce, terminal_time_ms), signature):
            raise Unauthenticated("bad-signature", "SM2 signature does not verify")

    def claim_nonce(self, terminal_id: str, nonce: bytes) -> None:
        """Refuse a nonce this terminal already used (replayed sign-on)."""
        seen = self._nonces.setdefault(terminal_id, [])
        if nonce in seen:
            raise Unauthenticated("nonce-reused", "this nonce was already used")
        seen.append(nonce)
        del seen[:-NONCES_PER_TERMINAL_MAX]

    @staticmethod
    def new_keys() -> tuple[bytes, bytes]:
        return secrets.token_bytes(SESSION_KEY_LEN_BYTES), secrets.token_bytes(SESSION_KEY_LEN_BYTES)

    def install(self, terminal_id: str, mac_key: bytes, pin_key: bytes, now_ms: int) -> Session:
        """Make the new session the terminal's only one (the old one ends at once)."""
        session = Session(secrets.token_hex(16), terminal_id, mac_key, pin_key, now_ms + self._ttl_ms)
        self.end_terminal(terminal_id)
        self._by_id[session.session_id] = session
        self._by_terminal[terminal_id] = session.session_id
        return session

    def open(self, terminal_id: str, nonce: bytes, now_ms: int, public_key_hex: str) -> SignOnResult:
        """claim_nonce + new keys + SM2-encrypt them + install, in one call (after check_signon passed)."""
        self.claim_nonce(terminal_id, nonce)
        mac_key, pin_key = self.new_keys()
        encrypted = sm2.encrypt(public_key_hex, mac_key + pin_key)
        return SignOnResult(self.install(terminal_id, mac_key, pin_key, now_ms), encrypted)

    def end_terminal(self, terminal_id: str) -> None:
        old = self._by_terminal.pop(terminal_id, None)
        if old is not None:
            self._by_id.pop(old, None)

    def authenticate(
        self, terminal_id: str | None, session_id: str | None, mac_hex: str | None, body: bytes, now_ms: int
    ) -> Session:
        """Steps 1–3 of docs/pos-protocol.md §5: metadata, session, MAC over the exact bytes."""
        if not terminal_id or not session_id or not mac_hex:
            raise Unauthenticated("missing-metadata", "fs-terminal-id, fs-session-id and fs-mac are required")
        session = self._by_id.get(session_id)
        if session is None or session.terminal_id != terminal_id:
            raise Unauthenticated("unknown-session", "sign on again")
        if now_ms >= session.expires_at_ms:
            self._by_id.pop(session_id, None)
            raise Unauthenticated("session-expired", "sign on again")
        if not sm3.mac_equal(session.mac_key, body, mac_hex):
            raise Unauthenticated("bad-mac", "MAC does not match the request bytes")
        return session

    @staticmethod
    def check_header(session: Session, header_terminal_id: str, terminal_time_ms: int, now_ms: int) -> None:
        """Steps 5–6: the header names the session's terminal and its clock is within the window."""
        if header_terminal_id != session.terminal_id:
            raise Unauthenticated("terminal-mismatch", "header.terminal_id differs from fs-terminal-id")
        if abs(terminal_time_ms - now_ms) > TIME_WINDOW_MS:
            raise Unauthenticated("clock-skew", "terminal time is outside ±300 s of host time")
