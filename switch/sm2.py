"""SM2 signatures and public-key encryption (GB/T 32918) over the recommended curve.

Everything runs in OpenSSL's libcrypto through the compiled `switch._sm2_openssl`, with the
GIL released. verify and encrypt (the host's half of a sign-on) use OpenSSL's low-level EC API
with precomputed multiples of the base point: about 0.25 ms and 0.3 ms; sign and decrypt go
through OpenSSL's EVP SM2, about 0.27 ms and 0.26 ms. gmssl, wrapped in `switch.sm2_reference`
with the same API, is the reference the tests check this against; the standard's examples fix
the nonce k, which the reference (and, for encryption, a test-only entry of the wrapper) can
replay.

Encodings (CONTRACT.md "Encodings"): private keys are 64 hex characters; public keys
130 hex characters "04" || x || y; signatures 64 bytes r || s; ciphertexts
C1 || C3 || C2 with C1 the 64-byte x || y (no 0x04 prefix).
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

from switch import _sm2_openssl as _ossl
from switch.sm3 import sm3

DEFAULT_USER_ID = b"1234567812345678"
# ENTL, the user id's length in bits, is a 2-byte field in Z: at most 8191 bytes, but OpenSSL
# refuses the last one (the reference takes 8191). Terminals use the 16-byte default.
USER_ID_MAX_BYTES = _ossl.USER_ID_MAX_BYTES
PRIVATE_KEY_HEX_LEN_CHARS = 64
PUBLIC_KEY_HEX_LEN_CHARS = 130
COORDINATE_LEN_BYTES = 32
SIGNATURE_LEN_BYTES = 2 * COORDINATE_LEN_BYTES
C1_LEN_BYTES = 2 * COORDINATE_LEN_BYTES
C3_LEN_BYTES = 32
# SM2 encryption wraps keys (the session keys are 32 bytes); bulk data belongs under
# SM4. The bound also caps the KDF work a forged ciphertext can ask for.
PLAINTEXT_MAX_BYTES = 4096
CIPHERTEXT_MIN_BYTES = C1_LEN_BYTES + C3_LEN_BYTES + 1
CIPHERTEXT_MAX_BYTES = C1_LEN_BYTES + C3_LEN_BYTES + PLAINTEXT_MAX_BYTES


class CurveParameters(NamedTuple):
    """y^2 = x^3 + ax + b over GF(p), base point (gx, gy) of order n."""

    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int


# GB/T 32918.5 recommended curve, as OpenSSL has it (the tests compare it with the standard's).
SM2_P256 = CurveParameters(*_ossl.CURVE)
_Z_CURVE_FIELDS = b"".join(v.to_bytes(COORDINATE_LEN_BYTES, "big") for v in SM2_P256[1:5])


def generate_keypair() -> tuple[str, str]:
    """A fresh key pair: (64 hex private key, 130 hex public key "04" || x || y)."""
    d = secrets.randbelow(SM2_P256.n - 2) + 1  # [1, n-2]: signing needs (1 + d) invertible
    private_hex = f"{d:064x}"
    return private_hex, _ossl.private_key(private_hex).public_hex


def public_key_from_private(private_hex: str) -> str:
    """The 130 hex public key "04" || x || y of a 64 hex private key."""
    return _ossl.private_key(private_hex).public_hex


def z_value(public_hex_130: str, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA), GB/T 32918.2 section 5.5."""
    if len(user_id) > USER_ID_MAX_BYTES:
        raise ValueError(f"SM2 user id must be at most {USER_ID_MAX_BYTES} bytes")
    entl = (8 * len(user_id)).to_bytes(2, "big")
    return sm3(entl + user_id + _Z_CURVE_FIELDS + _ossl.public_key(public_hex_130).xy)


def sign(private_hex: str, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """The 64-byte signature r || s of SM3(Z || message); ValueError on a bad key."""
    key = _ossl.private_key(private_hex)
    return _ossl.sign(key, bytes(message), bytes(user_id))


def verify(
    public_hex_130: str,
    message: bytes | bytearray,
    signature64: bytes | bytearray,
    user_id: bytes | bytearray = DEFAULT_USER_ID,
) -> bool:
    """True for a valid signature; False (never an exception) for anything else.

    Malformed keys, points off the curve, wrong lengths and wrong types are all False.
    """
    if not (
        isinstance(message, bytes | bytearray)
        and isinstance(signature64, bytes | bytearray)
        and isinstance(user_id, bytes | bytearray)
    ):
        return False
    try:
        key = _ossl.public_key(public_hex_130)
    except ValueError:
        return False
    return _ossl.verify(key, bytes(message), bytes(signature64), bytes(user_id))


def encrypt(public_hex_130: str, plaintext: bytes) -> bytes:
    """SM2 ciphertext C1 || C3 || C2 (C1 without 0x04); ValueError on a bad key or size."""
    key = _ossl.public_key(public_hex_130)
    if not 1 <= len(plaintext) <= PLAINTEXT_MAX_BYTES:
        raise ValueError(f"SM2 plaintext must be 1 to {PLAINTEXT_MAX_BYTES} bytes")
    return _ossl.encrypt(key, bytes(plaintext))


def decrypt(private_hex: str, ciphertext: bytes) -> bytes:
    """The plaintext of C1 || C3 || C2; ValueError if the key or ciphertext is bad."""
    key = _ossl.private_key(private_hex)
    if not CIPHERTEXT_MIN_BYTES <= len(ciphertext) <= CIPHERTEXT_MAX_BYTES:
        raise ValueError(
            f"SM2 ciphertext must be {CIPHERTEXT_MIN_BYTES} to {CIPHERTEXT_MAX_BYTES} bytes, "
            f"got {len(ciphertext)}"
        )
    return _ossl.decrypt(key, bytes(ciphertext))
