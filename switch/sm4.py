"""SM4 block cipher (GB/T 32907) in ECB mode over whole blocks, through OpenSSL.

ECB turns equal plaintext blocks into equal ciphertext blocks, so it is for one-block
formats a standard fixes, such as the PIN block (ISO 9564 format 0 plus 0xFF fill is
exactly one block). No padding here: a caller with a partial block has a bug, and
padding it silently would hide that.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_LEN_BYTES = 16
BLOCK_LEN_BYTES = 16


def _check(key: bytes, data: bytes) -> None:
    if len(key) != KEY_LEN_BYTES:
        raise ValueError(f"SM4 key must be {KEY_LEN_BYTES} bytes, got {len(key)}")
    if not data or len(data) % BLOCK_LEN_BYTES:
        raise ValueError(
            f"SM4-ECB data must be a non-empty multiple of {BLOCK_LEN_BYTES} bytes, got {len(data)}"
        )


def encrypt_ecb(key: bytes, data: bytes) -> bytes:
    """Encrypt whole 16-byte blocks of `data` under the 16-byte `key` (no padding)."""
    _check(key, data)
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def decrypt_ecb(key: bytes, data: bytes) -> bytes:
    """Decrypt whole 16-byte blocks of `data` under the 16-byte `key` (no padding)."""
    _check(key, data)
    decryptor = Cipher(algorithms.SM4(key), modes.ECB()).decryptor()
    return decryptor.update(data) + decryptor.finalize()
