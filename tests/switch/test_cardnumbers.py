"""Card numbers at rest: SM4-GCM ciphertext under versioned keys, keyed index, mask."""

from __future__ import annotations

import pytest

from switch import cardnumbers as C
from switch.keyring import Keyring, KeyringError

PAN = "9000011234567890123"


def keyring(pan_versions: int = 1) -> Keyring:
    return Keyring({"pan": {v: bytes([v]) * 16 for v in range(1, pan_versions + 1)}, "pan-index": {1: b"i" * 32}})


def test_encrypt_decrypt_and_rotation():
    old = keyring(1)
    blob = C.encrypt(old, PAN)
    assert PAN.encode() not in blob and C.key_version(blob) == 1
    assert C.decrypt(old, blob) == PAN
    new = keyring(2)
    assert C.key_version(C.encrypt(new, PAN)) == 2  # new writes use the newest version
    assert C.decrypt(new, blob) == PAN  # old ciphertexts stay readable
    assert C.encrypt(old, PAN) != blob  # a fresh nonce every time


def test_tampered_ciphertext_is_refused():
    blob = bytearray(C.encrypt(keyring(), PAN))
    blob[20] ^= 0x01
    with pytest.raises(KeyringError):
        C.decrypt(keyring(), bytes(blob))


def test_index_is_keyed_and_stable():
    assert C.pan_index(keyring(), PAN) == C.pan_index(keyring(2), PAN)  # not affected by pan rotation
    other = Keyring({"pan": {1: b"x" * 16}, "pan-index": {1: b"j" * 32}})
    assert C.pan_index(other, PAN) != C.pan_index(keyring(), PAN)
    assert len(C.pan_index(keyring(), PAN)) == 32


def test_mask():
    assert C.mask_pan(PAN) == "900001*********0123"
    assert C.mask_pan("1234") == "****"
