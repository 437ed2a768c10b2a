"""Card numbers at rest: SM4-GCM ciphertext for storage, a keyed SM3 index for look-up, a mask for display.

The switch never needs a stored PAN back in clear to authorize: a request brings the PAN, the
switch computes its index and finds the card. The ciphertext exists so that an operator with the
keys can recover a number (re-issuing, disputes); `decrypt` is the only way back.
"""

from __future__ import annotations

import secrets

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from switch import sm3
from switch.keyring import GCM_NONCE_LEN_BYTES, GCM_TAG_LEN_BYTES, Keyring, KeyringError

INDEX_KEY_VERSION = 1  # the index key is not rotated: a new one would mean re-indexing every card
_VERSION_BYTES = 2
_AAD = b"fuelswitch pan"


def pan_index(keyring: Keyring, pan: str) -> bytes:
    """HMAC-SM3 of the PAN: equal PANs give equal indexes; without the key it reveals nothing."""
    return sm3.hmac_sm3(keyring.get("pan-index", INDEX_KEY_VERSION), pan.encode())


def encrypt(keyring: Keyring, pan: str) -> bytes:
    """version(2) || nonce(12) || SM4-GCM ciphertext || tag(16), under the newest `pan` key."""
    version, key = keyring.current("pan")
    nonce = secrets.token_bytes(GCM_NONCE_LEN_BYTES)
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(_AAD)
    body = encryptor.update(pan.encode()) + encryptor.finalize()
    return version.to_bytes(_VERSION_BYTES, "big") + nonce + body + encryptor.tag


def decrypt(keyring: Keyring, blob: bytes) -> str:
    version = int.from_bytes(blob[:_VERSION_BYTES], "big")
    nonce = blob[_VERSION_BYTES:_VERSION_BYTES + GCM_NONCE_LEN_BYTES]
    body, tag = blob[_VERSION_BYTES + GCM_NONCE_LEN_BYTES:-GCM_TAG_LEN_BYTES], blob[-GCM_TAG_LEN_BYTES:]
    decryptor = Cipher(algorithms.SM4(keyring.get("pan", version)), modes.GCM(nonce, tag)).decryptor()
    decryptor.authenticate_additional_data(_AAD)
    try:
        return (decryptor.update(body) + decryptor.finalize()).decode()
    except InvalidTag:
        raise KeyringError("a stored card number does not decrypt (altered, or a wrong key)") from None


def key_version(blob: bytes) -> int:
    return int.from_bytes(blob[:_VERSION_BYTES], "big")


def mask_pan(pan: str) -> str:
    """First six and last four digits, the rest starred (PCI-style display)."""
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


async def seal_clear_pans(conn: asyncpg.Connection, keyring: Keyring) -> int:
    """Encrypt and index cards stored before migration 0002 (clear `pan`), then empty that column."""
    rows = await conn.fetch("SELECT card_id, pan FROM cards WHERE pan IS NOT NULL")
    if rows:
        await conn.executemany(
            "UPDATE cards SET pan_index = $2, pan_enc = $3, masked_pan = $4, pan = NULL WHERE card_id = $1",
            [(r["card_id"], pan_index(keyring, r["pan"]), encrypt(keyring, r["pan"]), mask_pan(r["pan"]))
             for r in rows],
        )
    return len(rows)
