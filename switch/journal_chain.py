"""The journal's hash chain (SM3): every row carries an HMAC-SM3 over its predecessor's chain and itself.

chain(row) = HMAC-SM3(journal key of `key_version`, prev_chain || content(row)), and a row stores
both `prev_chain` and `chain`. Editing a row breaks its own check; deleting one leaves a seq gap or
a `prev_chain` no row has; moving one leaves a `prev_chain` that names another position. Without
the journal key (wrapped under the master key, never in the database) none can be forged.

`content` deliberately leaves out `seq`: a row's place is fixed by the link, so a moved row can
still be recognised (and reported as moved rather than as edited).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from switch import sm3

GENESIS = bytes(32)  # prev_chain of the first chained row
_FIXED = struct.Struct(">hqqhqH")  # kind, ref, value, status, recorded_ms, leg count


def content(kind: int, ref: int, account_ids: Sequence[int], amounts: Sequence[int], value: int, status: int,
            recorded_ms: int) -> bytes:
    """The bytes a chain link covers: every column of the row but seq and the chain columns."""
    legs = len(account_ids)
    return _FIXED.pack(kind, ref, value, status, recorded_ms, legs) + struct.pack(
        f">{2 * legs}q", *account_ids, *amounts
    )


def link(key: bytes, prev_chain: bytes, row_content: bytes) -> bytes:
    return sm3.hmac_sm3(key, prev_chain + row_content)
