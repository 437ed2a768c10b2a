"""SM4-ECB: the GB/T 32907 vector, strict lengths, and OpenSSL against gmssl."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gmssl import sm4 as gmssl_sm4
from hypothesis import given, settings
from hypothesis import strategies as st

from switch import sm4

# GB/T 32907-2016 Appendix A, example 1.
KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
PLAINTEXT = KEY
CIPHERTEXT = bytes.fromhex("681edf34d206965e86b3e94f536e4246")
# Appendix A, example 2: the same plaintext encrypted 1,000,000 times in a row under KEY.
CIPHERTEXT_1M = bytes.fromhex("595298c7c6fd271f0402f804c33d3f66")


def gmssl_ecb(key: bytes, data: bytes, mode: int) -> bytes:
    # gmssl's crypt_ecb always pads, so run its block function directly.
    cipher = gmssl_sm4.CryptSM4()
    cipher.set_key(key, mode)
    out = b""
    for i in range(0, len(data), 16):
        out += bytes(cipher.one_round(cipher.sk, list(data[i : i + 16])))
    return out


def test_standard_vector() -> None:
    assert sm4.encrypt_ecb(KEY, PLAINTEXT) == CIPHERTEXT
    assert sm4.decrypt_ecb(KEY, CIPHERTEXT) == PLAINTEXT


def test_standard_vector_in_gmssl_too() -> None:
    assert gmssl_ecb(KEY, PLAINTEXT, gmssl_sm4.SM4_ENCRYPT) == CIPHERTEXT


def test_standard_vector_iterated_a_million_times() -> None:
    # One OpenSSL context for the whole chain (about 0.3 s); switch.sm4 sets one up per call,
    # which the chain below compares over its first blocks.
    encryptor = Cipher(algorithms.SM4(KEY), modes.ECB()).encryptor()
    block = PLAINTEXT
    for _ in range(1_000_000):
        block = encryptor.update(block)
    assert block == CIPHERTEXT_1M


def test_iterated_chain_matches_gmssl() -> None:
    # gmssl takes about 50 us a block, so it follows only the start of the million-step chain.
    ours = theirs = PLAINTEXT
    for _ in range(2_000):
        ours = sm4.encrypt_ecb(KEY, ours)
        theirs = gmssl_ecb(KEY, theirs, gmssl_sm4.SM4_ENCRYPT)
    assert ours == theirs
    for _ in range(2_000):
        ours = sm4.decrypt_ecb(KEY, ours)
    assert ours == PLAINTEXT


def test_ecb_encrypts_blocks_independently() -> None:
    two = sm4.encrypt_ecb(KEY, PLAINTEXT * 2)
    assert two == CIPHERTEXT * 2


@settings(max_examples=40, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), blocks=st.integers(1, 4), data=st.data())
def test_matches_gmssl_on_random_blocks(key: bytes, blocks: int, data: st.DataObject) -> None:
    plaintext = data.draw(st.binary(min_size=16 * blocks, max_size=16 * blocks))
    ciphertext = sm4.encrypt_ecb(key, plaintext)
    assert ciphertext == gmssl_ecb(key, plaintext, gmssl_sm4.SM4_ENCRYPT)
    assert sm4.decrypt_ecb(key, ciphertext) == plaintext
    assert gmssl_ecb(key, ciphertext, gmssl_sm4.SM4_DECRYPT) == plaintext


@pytest.mark.parametrize("key_len", [0, 8, 15, 17, 32])
def test_rejects_wrong_key_length(key_len: int) -> None:
    with pytest.raises(ValueError, match="key must be 16 bytes"):
        sm4.encrypt_ecb(bytes(key_len), PLAINTEXT)
    with pytest.raises(ValueError, match="key must be 16 bytes"):
        sm4.decrypt_ecb(bytes(key_len), CIPHERTEXT)


@pytest.mark.parametrize("data_len", [0, 1, 15, 17, 31, 33])
def test_rejects_partial_blocks(data_len: int) -> None:
    with pytest.raises(ValueError, match="multiple of 16 bytes"):
        sm4.encrypt_ecb(KEY, bytes(data_len))
    with pytest.raises(ValueError, match="multiple of 16 bytes"):
        sm4.decrypt_ecb(KEY, bytes(data_len))
