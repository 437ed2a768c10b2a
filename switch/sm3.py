"""SM3 hash and HMAC-SM3 (GB/T 32905, HMAC per RFC 2104 / GM/T 0042).

The request MAC is checked on every PosGateway call, so this goes through OpenSSL
(`hashlib`/`hmac`). gmssl's pure-Python SM3 is the fallback when OpenSSL was built
without SM3, and the reference twin the tests compare against.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from gmssl import sm3 as _gmssl_sm3

DIGEST_LEN_BYTES = 32
BLOCK_LEN_BYTES = 64
MAC_HEX_LEN_CHARS = 2 * DIGEST_LEN_BYTES

# The contract fixes lowercase hex for fs-mac; one spelling per MAC keeps it canonical.
_MAC_HEX_RE = re.compile(f"[0-9a-f]{{{MAC_HEX_LEN_CHARS}}}")

_IPAD = bytes([0x36]) * BLOCK_LEN_BYTES
_OPAD = bytes([0x5C]) * BLOCK_LEN_BYTES


def sm3_reference(data: bytes) -> bytes:
    """SM3 by gmssl (pure Python): the independent twin of `sm3`."""
    return bytes.fromhex(_gmssl_sm3.sm3_hash(list(data)))


def hmac_sm3_reference(key: bytes, data: bytes) -> bytes:
    """HMAC-SM3 spelled out per RFC 2104 over gmssl's SM3: the twin of `hmac_sm3`."""
    if len(key) > BLOCK_LEN_BYTES:
        key = sm3_reference(key)
    key = key.ljust(BLOCK_LEN_BYTES, b"\x00")
    inner = sm3_reference(bytes(k ^ p for k, p in zip(key, _IPAD, strict=True)) + data)
    return sm3_reference(bytes(k ^ p for k, p in zip(key, _OPAD, strict=True)) + inner)


def _openssl_has_sm3() -> bool:
    try:
        hashlib.new("sm3")
    except ValueError:
        return False
    return True


OPENSSL_SM3 = _openssl_has_sm3()


def sm3(data: bytes) -> bytes:
    """The 32-byte SM3 digest of `data`."""
    if OPENSSL_SM3:
        return hashlib.new("sm3", data).digest()
    return sm3_reference(data)


# Keyed HMAC states by key: copying one costs about two thirds of a fresh one-shot HMAC (the key
# schedule is done once). The few keys in use (session MAC keys, the pan-index and journal keys)
# are in memory anyway; the dict is emptied when it grows past the bound.
_KEYED: dict[bytes, hmac.HMAC] = {}
_KEYED_MAX = 8_192


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """The 32-byte HMAC-SM3 of `data` under `key`."""
    if not OPENSSL_SM3:
        return hmac_sm3_reference(key, data)
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= _KEYED_MAX:
            _KEYED.clear()
        keyed = _KEYED[key] = hmac.new(key, digestmod="sm3")
    running = keyed.copy()
    running.update(data)
    return running.digest()


def mac_hex(key: bytes, data: bytes) -> str:
    """HMAC-SM3 as 64 lowercase hex characters: the `fs-mac` metadata value."""
    return hmac_sm3(key, data).hex()


def mac_equal(key: bytes, data: bytes, mac_hex: str) -> bool:
    """True when `mac_hex` is the HMAC-SM3 of `data` under `key`.

    Constant-time in the MAC value; False (never an exception) for anything that
    is not exactly 64 lowercase hex characters.
    """
    if not isinstance(mac_hex, str) or _MAC_HEX_RE.fullmatch(mac_hex) is None:
        return False
    return hmac.compare_digest(hmac_sm3(key, data), bytes.fromhex(mac_hex))
