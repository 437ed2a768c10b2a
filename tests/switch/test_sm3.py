"""SM3 and HMAC-SM3: standard vectors, and OpenSSL against gmssl's pure-Python twin."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch import sm3

# GB/T 32905-2016 Appendix A.
SM3_VECTORS = [
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]

# GM/T 0042-2015 Appendix D.3 (also in OpenSSL's evpmac_sm.txt).
HMAC_SM3_VECTORS = [
    (
        bytes(range(1, 33)),
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq" * 2,
        "ca05e144ed05d1857840d1f318a4a8669e559fc8391f414485bfdf7bb408963a",
    ),
    (
        bytes(range(1, 38)),
        b"\xcd" * 50,
        "220bf579ded555393f0159f66c99877822a3ecf610d1552154b41d44b94db3ae",
    ),
    (b"\x0b" * 32, b"Hi There", "c0ba18c68b90c88bc07de794bfc7d2c8d19ec31ed8773bc2b390c9604e0be11e"),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882",
    ),
]


def test_openssl_provides_sm3() -> None:
    # The hot path (per-request MAC) is meant to run in OpenSSL; say so if it does not.
    assert sm3.OPENSSL_SM3


@pytest.mark.parametrize(("message", "digest_hex"), SM3_VECTORS)
def test_sm3_standard_vectors(message: bytes, digest_hex: str) -> None:
    assert sm3.sm3(message).hex() == digest_hex
    assert sm3.sm3_reference(message).hex() == digest_hex


@pytest.mark.parametrize(("key", "data", "mac"), HMAC_SM3_VECTORS)
def test_hmac_sm3_standard_vectors(key: bytes, data: bytes, mac: str) -> None:
    assert sm3.hmac_sm3(key, data).hex() == mac
    assert sm3.hmac_sm3_reference(key, data).hex() == mac
    assert sm3.mac_hex(key, data) == mac
    assert sm3.mac_equal(key, data, mac)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_sm3_matches_gmssl(data: bytes) -> None:
    assert sm3.sm3(data) == sm3.sm3_reference(data)


@settings(max_examples=60, deadline=None)
@given(key=st.binary(max_size=150), data=st.binary(max_size=200))
def test_hmac_sm3_matches_gmssl(key: bytes, data: bytes) -> None:
    # Keys up to 150 bytes cover both sides of the 64-byte block (long keys are hashed).
    assert sm3.hmac_sm3(key, data) == sm3.hmac_sm3_reference(key, data)


@pytest.mark.parametrize(("key", "data", "mac"), HMAC_SM3_VECTORS[:1])
def test_fallback_without_openssl_gives_the_same_answers(
    monkeypatch: pytest.MonkeyPatch, key: bytes, data: bytes, mac: str
) -> None:
    monkeypatch.setattr(sm3, "OPENSSL_SM3", False)
    assert sm3.sm3(b"abc").hex() == SM3_VECTORS[0][1]
    assert sm3.mac_hex(key, data) == mac
    assert sm3.mac_equal(key, data, mac)


def test_mac_hex_is_64_lowercase_hex() -> None:
    mac = sm3.mac_hex(b"k" * 16, b"request bytes")
    assert len(mac) == 64
    assert mac == mac.lower()
    int(mac, 16)


KEY = bytes(range(16))
DATA = b"\x0a\x08T0000001\x10\x2a"
GOOD = sm3.mac_hex(KEY, DATA)


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        GOOD[:-1],
        GOOD + "0",
        GOOD.upper(),  # the contract fixes lowercase
        GOOD[:-1] + "g",
        " " + GOOD[1:],
        GOOD[:-2] + "\u00e9",
        "0" * 64,
        None,
        GOOD.encode(),
    ],
    ids=[
        "empty",
        "short",
        "long",
        "uppercase",
        "non-hex",
        "space",
        "non-ascii",
        "zeros",
        "none",
        "bytes",
    ],
)
def test_mac_equal_rejects_anything_but_the_exact_mac(candidate: object) -> None:
    assert sm3.mac_equal(KEY, DATA, candidate) is False  # type: ignore[arg-type]


def test_mac_equal_detects_changed_data_and_key() -> None:
    assert sm3.mac_equal(KEY, DATA, GOOD)
    assert not sm3.mac_equal(KEY, DATA + b"\x00", GOOD)
    assert not sm3.mac_equal(KEY, DATA[:-1] + b"\x2b", GOOD)
    assert not sm3.mac_equal(bytes(16), DATA, GOOD)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_mac_from_a_node_terminal_matches() -> None:
    # What a terminal written against Node's built-in crypto sends as fs-mac.
    script = (
        'const c = require("crypto");'
        'const [k, d] = process.argv.slice(1).map((h) => Buffer.from(h, "hex"));'
        'console.log(c.createHmac("sm3", k).update(d).digest("hex"));'
    )
    out = subprocess.run(
        ["node", "-e", script, KEY.hex(), DATA.hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert sm3.mac_equal(KEY, DATA, out.stdout.strip())
