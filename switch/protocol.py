"""Wire rules of the POS protocol shared by the switch, the naive baseline and the terminal client.

docs/pos-protocol.md is the normative text; this module holds its constants and encodings.
"""

from __future__ import annotations

from typing import Final

# gRPC metadata keys (lowercase, as gRPC requires).
MD_TERMINAL_ID: Final = "fs-terminal-id"
MD_SESSION_ID: Final = "fs-session-id"
MD_MAC: Final = "fs-mac"
MD_HOST_TIME: Final = "fs-host-time-ms"
MD_AUTHORIZATION: Final = "authorization"

TIME_WINDOW_MS: Final = 300_000  # terminal clock may differ from host time by at most ±300 s
NONCE_LEN_BYTES: Final = 16
SIGNATURE_LEN_BYTES: Final = 64
SESSION_KEY_LEN_BYTES: Final = 16  # mac_key and pin_key each
SESSION_TTL_MS_MAX: Final = 24 * 3600 * 1000
STAN_RETENTION_MS: Final = 24 * 3600 * 1000  # a used STAN is remembered at least this long


def signon_message(terminal_id: str, nonce: bytes, terminal_time_ms: int) -> bytes:
    """The bytes a terminal signs at SignOn: terminal_id|hex(nonce)|decimal(time)."""
    return f"{terminal_id}|{nonce.hex()}|{terminal_time_ms}".encode()


class Unauthenticated(Exception):
    """A call refused before any business logic; `token` is the documented reason word."""

    def __init__(self, token: str, detail: str) -> None:
        super().__init__(f"{token}: {detail}")
        self.token = token
