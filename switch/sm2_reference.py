"""SM2 (GB/T 32918) on gmssl, pure Python: the reference twin of `switch.sm2`.

`switch.sm2` runs SM2 through OpenSSL's libcrypto; this module is the independent
implementation the tests cross-check it against (and the one that can reproduce the
standard's examples, which fix the nonce k). Same API as `switch.sm2`, about 10 ms per
operation, so nothing on the request path uses it.

gmssl does the scalar multiplications and the signing equation. The rest is here
because gmssl 3.2.2 needs a guard rail around nearly every call:

- its nonces come from `random.choice` (Mersenne Twister, predictable): we always
  pass k from `secrets`, and encrypt with our own k rather than CryptSM2.encrypt;
- CryptSM2.decrypt never compares C3, and nothing checks that a point is on the curve
  or that r and s are in [1, n-1] (its scalar multiplication by 0 even returns the point
  itself instead of infinity);
- CryptSM2.verify mishandles the case sG == tP (doubles without converting back to
  affine coordinates);
- its Z value hard-codes the default user id, and its constructor strips a "04" prefix
  with str.lstrip("04"), which also eats leading '0'/'4' digits of x: we never hand it a
  public key.

Encodings (CONTRACT.md "Encodings"): private keys are 64 hex characters; public keys
130 hex characters "04" || x || y; signatures 64 bytes r || s; ciphertexts
C1 || C3 || C2 with C1 the 64-byte x || y (no 0x04 prefix).
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from gmssl import sm2 as _gmssl_sm2

from switch.sm3 import sm3

DEFAULT_USER_ID = b"1234567812345678"
# ENTL, the user id's length in bits, is a 2-byte field in Z.
USER_ID_MAX_BYTES = 0xFFFF // 8
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
# A fresh k is needed only when r = 0, r + k = n, s = 0 or the KDF output is all zero:
# each has probability about 2**-256, so running out of attempts means a broken RNG.
NONCE_ATTEMPTS_MAX = 8

_PRIVATE_HEX_RE = re.compile(f"[0-9a-fA-F]{{{PRIVATE_KEY_HEX_LEN_CHARS}}}")
_PUBLIC_HEX_RE = re.compile(f"04[0-9a-fA-F]{{{PUBLIC_KEY_HEX_LEN_CHARS - 2}}}")

Point = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Curve:
    """Short Weierstrass curve y^2 = x^3 + ax + b over GF(p), base point G of order n."""

    p: int
    a: int
    b: int
    gx: int
    gy: int
    n: int

    @property
    def g(self) -> Point:
        return (self.gx, self.gy)

    def gmssl_table(self) -> dict[str, str]:
        return {
            "p": f"{self.p:064x}",
            "a": f"{self.a:064x}",
            "b": f"{self.b:064x}",
            "g": f"{self.gx:064x}{self.gy:064x}",
            "n": f"{self.n:064x}",
        }


# GB/T 32918.5 recommended 256-bit curve (cofactor 1).
SM2_P256 = Curve(
    p=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF,
    a=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC,
    b=0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93,
    gx=0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
    gy=0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0,
    n=0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123,
)


# --------------------------------------------------------------------------- public API


def generate_keypair() -> tuple[str, str]:
    """A fresh key pair: (64 hex private key, 130 hex public key "04" || x || y)."""
    d = secrets.randbelow(SM2_P256.n - 2) + 1  # [1, n-2]: signing needs (1 + d) invertible
    return f"{d:064x}", _public_hex(_mul(SM2_P256, d, SM2_P256.g))


def public_key_from_private(private_hex: str) -> str:
    """The 130 hex public key "04" || x || y of a 64 hex private key."""
    d = _parse_private(SM2_P256, private_hex)
    return _public_hex(_mul(SM2_P256, d, SM2_P256.g))


def z_value(public_hex_130: str, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA), GB/T 32918.2 section 5.5."""
    return _z(SM2_P256, _parse_public(SM2_P256, public_hex_130), user_id)


def sign(private_hex: str, message: bytes, user_id: bytes = DEFAULT_USER_ID) -> bytes:
    """The 64-byte signature r || s of SM3(Z || message); ValueError on a bad key."""
    curve = SM2_P256
    d = _parse_private(curve, private_hex)
    # Z needs the public key; deriving it costs one scalar multiplication.
    e = _digest(curve, _mul(curve, d, curve.g), user_id, message)
    for _ in range(NONCE_ATTEMPTS_MAX):
        rs = _sign_e(curve, d, e, secrets.randbelow(curve.n - 1) + 1)
        if rs is not None:
            return _int_bytes(rs[0]) + _int_bytes(rs[1])
    raise RuntimeError("SM2 signing found no usable nonce: is the random source broken?")


def verify(
    public_hex_130: str,
    message: bytes | bytearray,
    signature64: bytes | bytearray,
    user_id: bytes | bytearray = DEFAULT_USER_ID,
) -> bool:
    """True for a valid signature; False (never an exception) for anything else.

    Malformed keys, points off the curve, wrong lengths and wrong types are all False.
    """
    curve = SM2_P256
    if not (
        isinstance(message, bytes | bytearray)
        and isinstance(signature64, bytes | bytearray)
        and isinstance(user_id, bytes | bytearray)
        and len(signature64) == SIGNATURE_LEN_BYTES
        and len(user_id) <= USER_ID_MAX_BYTES
    ):
        return False
    try:
        point = _parse_public(curve, public_hex_130)
    except ValueError:
        return False
    r = int.from_bytes(signature64[:COORDINATE_LEN_BYTES], "big")
    s = int.from_bytes(signature64[COORDINATE_LEN_BYTES:], "big")
    e = _digest(curve, point, bytes(user_id), bytes(message))
    try:
        return _verify_e(curve, point, e, r, s)
    except ValueError:  # infinity inside gmssl: unreachable for valid inputs, still False
        return False


def encrypt(public_hex_130: str, plaintext: bytes) -> bytes:
    """SM2 ciphertext C1 || C3 || C2 (C1 without 0x04); ValueError on a bad key or size."""
    curve = SM2_P256
    point = _parse_public(curve, public_hex_130)
    if not 1 <= len(plaintext) <= PLAINTEXT_MAX_BYTES:
        raise ValueError(f"SM2 plaintext must be 1 to {PLAINTEXT_MAX_BYTES} bytes")
    for _ in range(NONCE_ATTEMPTS_MAX):
        ciphertext = _encrypt_k(curve, point, bytes(plaintext), secrets.randbelow(curve.n - 1) + 1)
        if ciphertext is not None:
            return ciphertext
    raise RuntimeError("SM2 encryption found no usable nonce: is the random source broken?")


def decrypt(private_hex: str, ciphertext: bytes) -> bytes:
    """The plaintext of C1 || C3 || C2; ValueError if the key or ciphertext is bad."""
    curve = SM2_P256
    d = _parse_private(curve, private_hex)
    if not CIPHERTEXT_MIN_BYTES <= len(ciphertext) <= CIPHERTEXT_MAX_BYTES:
        raise ValueError(
            f"SM2 ciphertext must be {CIPHERTEXT_MIN_BYTES} to {CIPHERTEXT_MAX_BYTES} bytes, "
            f"got {len(ciphertext)}"
        )
    return _decrypt(curve, d, bytes(ciphertext))


# --------------------------------------------------------------------------- internals
# Curve-generic so the tests can run the GB/T 32918.2 examples over its test curve.


@functools.cache
def _engine(curve: Curve) -> Any:
    # A key-less CryptSM2 is enough for _kg (scalar multiplication), which keeps no state.
    return _gmssl_sm2.CryptSM2(private_key="", public_key="", ecc_table=curve.gmssl_table())


def _mul(curve: Curve, k: int, point: Point) -> Point:
    """k * point by gmssl. Only for 1 <= k < n and a point on the curve (order n)."""
    out = _engine(curve)._kg(k, f"{point[0]:064x}{point[1]:064x}")
    if out is None:  # infinity: impossible for the k and points we allow
        raise ValueError("SM2 scalar multiplication reached the point at infinity")
    return int(out[:64], 16), int(out[64:], 16)


def _add(curve: Curve, left: Point, right: Point) -> Point | None:
    """Affine point addition; None is the point at infinity."""
    (x1, y1), (x2, y2) = left, right
    p = curve.p
    if x1 == x2:
        if (y1 + y2) % p == 0:
            return None
        slope = (3 * x1 * x1 + curve.a) * pow(2 * y1, -1, p) % p
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, p) % p
    x3 = (slope * slope - x1 - x2) % p
    return x3, (slope * (x1 - x3) - y1) % p


def _on_curve(curve: Curve, x: int, y: int) -> bool:
    p = curve.p
    return 0 <= x < p and 0 <= y < p and (y * y - (x * x * x + curve.a * x + curve.b)) % p == 0


def _parse_private(curve: Curve, private_hex: str) -> int:
    # Messages never echo the key.
    if not isinstance(private_hex, str) or _PRIVATE_HEX_RE.fullmatch(private_hex) is None:
        raise ValueError(f"SM2 private key must be {PRIVATE_KEY_HEX_LEN_CHARS} hex characters")
    d = int(private_hex, 16)
    if not 1 <= d <= curve.n - 2:
        raise ValueError("SM2 private key is outside [1, n-2]")
    return d


def _parse_public(curve: Curve, public_hex: str) -> Point:
    if not isinstance(public_hex, str) or _PUBLIC_HEX_RE.fullmatch(public_hex) is None:
        raise ValueError(
            f'SM2 public key must be {PUBLIC_KEY_HEX_LEN_CHARS} hex characters "04" || x || y'
        )
    point = int(public_hex[2:66], 16), int(public_hex[66:], 16)
    # GB/T 32918.1 6.2.1: coordinates in [0, p-1] and on the curve. The cofactor is 1,
    # so every point on the curve has order n and nP = O needs no separate check.
    if not _on_curve(curve, *point):
        raise ValueError("SM2 public key is not a point on the curve")
    return point


def _public_hex(point: Point) -> str:
    return f"04{point[0]:064x}{point[1]:064x}"


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(COORDINATE_LEN_BYTES, "big")


def _z(curve: Curve, point: Point, user_id: bytes) -> bytes:
    if len(user_id) > USER_ID_MAX_BYTES:
        raise ValueError(f"SM2 user id must be at most {USER_ID_MAX_BYTES} bytes")
    fields = (curve.a, curve.b, curve.gx, curve.gy, point[0], point[1])
    entl = (8 * len(user_id)).to_bytes(2, "big")
    return sm3(entl + user_id + b"".join(_int_bytes(v) for v in fields))


def _digest(curve: Curve, point: Point, user_id: bytes, message: bytes) -> int:
    return int.from_bytes(sm3(_z(curve, point, user_id) + message), "big")


def _sign_e(curve: Curve, d: int, e: int, k: int) -> tuple[int, int] | None:
    """GB/T 32918.2 6.1 steps A4-A6 by gmssl; None when this k must be replaced."""
    engine = _gmssl_sm2.CryptSM2(
        private_key=f"{d:064x}", public_key="", ecc_table=curve.gmssl_table()
    )
    signature_hex = engine.sign(_int_bytes(e), f"{k:064x}")
    if signature_hex is None:
        return None
    return int(signature_hex[:64], 16), int(signature_hex[64:], 16)


def _verify_e(curve: Curve, point: Point, e: int, r: int, s: int) -> bool:
    """GB/T 32918.2 7.1 steps B1, B2, B5-B7 for a public key already on the curve."""
    n = curve.n
    if not (1 <= r < n and 1 <= s < n):
        return False
    t = (r + s) % n
    if t == 0:
        return False
    total = _add(curve, _mul(curve, s, curve.g), _mul(curve, t, point))
    if total is None:
        return False
    return (e + total[0]) % n == r


def _kdf(shared: bytes, length_bytes: int) -> bytes:
    """GB/T 32918.4 5.4.3: SM3(Z || counter) blocks, counter from 1, 32-bit big-endian."""
    blocks = (length_bytes + 31) // 32
    stream = b"".join(sm3(shared + counter.to_bytes(4, "big")) for counter in range(1, blocks + 1))
    return stream[:length_bytes]


def _encrypt_k(curve: Curve, point: Point, plaintext: bytes, k: int) -> bytes | None:
    """GB/T 32918.4 6.1 steps A2-A8 with nonce k; None when this k must be replaced."""
    c1 = _mul(curve, k, curve.g)
    x2, y2 = _mul(curve, k, point)
    key_stream = _kdf(_int_bytes(x2) + _int_bytes(y2), len(plaintext))
    if not any(key_stream):
        return None
    c2 = bytes(m ^ t for m, t in zip(plaintext, key_stream, strict=True))
    c3 = sm3(_int_bytes(x2) + plaintext + _int_bytes(y2))
    return _int_bytes(c1[0]) + _int_bytes(c1[1]) + c3 + c2


def _decrypt(curve: Curve, d: int, ciphertext: bytes) -> bytes:
    """GB/T 32918.4 7.1 steps B1-B7 for C1 || C3 || C2."""
    c1 = (
        int.from_bytes(ciphertext[:COORDINATE_LEN_BYTES], "big"),
        int.from_bytes(ciphertext[COORDINATE_LEN_BYTES:C1_LEN_BYTES], "big"),
    )
    c3 = ciphertext[C1_LEN_BYTES : C1_LEN_BYTES + C3_LEN_BYTES]
    c2 = ciphertext[C1_LEN_BYTES + C3_LEN_BYTES :]
    # Checking C1 stops invalid-curve points from probing the private key.
    if not _on_curve(curve, *c1):
        raise ValueError("SM2 ciphertext C1 is not a point on the curve")
    x2, y2 = _mul(curve, d, c1)
    key_stream = _kdf(_int_bytes(x2) + _int_bytes(y2), len(c2))
    if not any(key_stream):
        raise ValueError("SM2 ciphertext gives an all-zero key stream")
    plaintext = bytes(c ^ t for c, t in zip(c2, key_stream, strict=True))
    if not hmac.compare_digest(sm3(_int_bytes(x2) + plaintext + _int_bytes(y2)), c3):
        raise ValueError("SM2 ciphertext failed its C3 check (wrong key or corrupted)")
    return plaintext
