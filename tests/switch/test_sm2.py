"""SM2: the GB/T 32918 / GM/T 0003 examples, OpenSSL against gmssl, hostile input.

`switch.sm2` runs on OpenSSL; `switch.sm2_reference` wraps gmssl with the same API. The behaviour
tests run on both (the `impl` fixture), the cross tests hand signatures and ciphertexts from one
to the other, and only the reference can replay the standard's fixed-k examples. gmssl costs about
5 ms per scalar multiplication, so example counts on it stay small.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from types import ModuleType

import psutil
import pytest
from gmssl import sm2 as gmssl_sm2
from hypothesis import given, settings
from hypothesis import strategies as st

from switch import _sm2_openssl, sm2, sm2_reference
from switch.sm3 import sm3

ref = sm2_reference

# GM/T 0003.5-2012 / GB/T 32918.5-2017, examples over the recommended curve.
STD_D = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
STD_PUBLIC = (
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
STD_K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
# Annex A: signature of "message digest" with the default user id.
STD_Z = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3"
STD_E = 0xF0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640
STD_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
STD_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
STD_SIGNATURE = bytes.fromhex(f"{STD_R:064x}{STD_S:064x}")
# Annex C: encryption of "encryption standard"; here in C1 || C3 || C2 order.
STD_C1 = (
    "04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
    "E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0"
)
STD_C3 = "59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766"
STD_C2 = "21886CA989CA9C7D58087307CA93092D651EFA"
STD_CIPHERTEXT = bytes.fromhex(STD_C1 + STD_C3 + STD_C2)

# GB/T 32918.2-2016 Annex A: signature over the 256-bit test curve, user id ALICE123@YAHOO.COM.
TEST_CURVE = ref.Curve(
    p=0x8542D69E4C044F18E8B92435BF6FF7DE457283915C45517D722EDB8B08F1DFC3,
    a=0x787968B4FA32C3FD2417842E73BBFEFF2F3C848B6831D7E0EC65228B3937E498,
    b=0x63E4C6D3B23B0C849CF84241484BFE48F61D59A5B16BA06E6E12D1DA27C5249A,
    gx=0x421DEBD61B62EAB6746434EBC3CC315E32220B3BADD50BDC4C4E6C147FEDD43D,
    gy=0x0680512BCBB42C07D47349D2153B70C4E5D7FDFCBFA36EA1A85841B9E46E09A2,
    n=0x8542D69E4C044F18E8B92435BF6FF7DD297720630485628D5AE74EE7C32E79B7,
)
ALICE_D = 0x128B2FA8BD433C6C068C8D803DFF79792A519A55171B1B650C23661D15897263
ALICE_PUBLIC = (
    0x0AE4C7798AA0F119471BEE11825BE46202BB79E2A5844495E97C04FF4DF2548A,
    0x7C0240F88F1CD4E16352A73C17B7F16F07353E53A176D684A9FE0C6BB798E857,
)
ALICE_ID = b"ALICE123@YAHOO.COM"
ALICE_Z = "F4A38489E32B45B6F876E3AC2168CA392362DC8F23459C1D1146FC3DBFB7BC9A"
ALICE_E = 0xB524F552CD82B8B028476E005C377FB19A87E6FC682D48BB5D42E3D9B9EFFE76
ALICE_K = 0x6CB28D99385C175C94F94E934817663FC176D925DD72B727260DBAAE1FB2F96F
ALICE_R = 0x40F1EC59F793D9F49E09DCEF49130D4194F79FB1EED2CAA55BACDB49C4E755D1
ALICE_S = 0x6FC6DAC32C5D5CF10C77DFB20F7C2EB667A457872FB09EC56327A67EC7DEEBE7

# d = 11 is the smallest key whose public x starts with byte 0x04: the key that
# gmssl's `public_key.lstrip("04")` would corrupt.
X04_D = f"{11:064x}"
X04_PUBLIC = (
    "04"
    "04b3cb10c9c6d8e27c1aab770f67f543125dcdd589c2ff82668c74d78ce20ace"
    "63516355287e39fe4918e5c02e2b0b930c94816e63c4bc72739a8fd805174a4b"
)

# Nonces that put a leading zero byte in r, s (signing "message digest" with STD_D) or in C1's
# x, y (encrypting with STD_PUBLIC): DER carries such integers shortened, so the conversion to
# 32-byte fields must pad them back. Found by search with the reference.
K_SHORT_R, K_SHORT_S, K_SHORT_X, K_SHORT_Y = 240, 121, 327, 107
# The nonce whose key stream for a 1-byte message against STD_PUBLIC is all zero.
K_ZERO_KEY_STREAM = 470

N = ref.SM2_P256.n
PRIVATE_SCALARS = st.integers(1, N - 2).map(lambda d: f"{d:064x}")
USER_IDS = st.sampled_from([sm2.DEFAULT_USER_ID, ALICE_ID, b""]) | st.binary(max_size=40)

IMPLEMENTATIONS = [sm2, ref]
IMPLEMENTATION_IDS = ["openssl", "gmssl"]
# For @given tests, which cannot take a function-scoped fixture.
both = pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IMPLEMENTATION_IDS)


@pytest.fixture(params=IMPLEMENTATIONS, ids=IMPLEMENTATION_IDS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return sm2.generate_keypair()


def gmssl_with_key(private_hex: str, public_hex_130: str, mode: int = 1) -> gmssl_sm2.CryptSM2:
    """A gmssl CryptSM2 for the key, set after construction to dodge its lstrip("04")."""
    engine = gmssl_sm2.CryptSM2(private_key="", public_key="", mode=mode)
    engine.private_key = private_hex
    engine.public_key = public_hex_130[2:]
    return engine


def _std_point() -> ref.Point:
    return ref._parse_public(ref.SM2_P256, STD_PUBLIC)


# ---------------------------------------------------------------- the reference replays the standard


def test_reference_curve_is_gmssl_default_curve() -> None:
    table = {key: value.lower() for key, value in gmssl_sm2.default_ecc_table.items()}
    assert ref.SM2_P256.gmssl_table() == table


def test_openssl_curve_is_the_standard_curve() -> None:
    assert tuple(sm2.SM2_P256) == (
        ref.SM2_P256.p, ref.SM2_P256.a, ref.SM2_P256.b, ref.SM2_P256.gx, ref.SM2_P256.gy, ref.SM2_P256.n
    )


def test_constants_agree() -> None:
    names = [
        "DEFAULT_USER_ID", "PRIVATE_KEY_HEX_LEN_CHARS", "PUBLIC_KEY_HEX_LEN_CHARS",
        "SIGNATURE_LEN_BYTES", "C1_LEN_BYTES", "C3_LEN_BYTES", "PLAINTEXT_MAX_BYTES",
        "CIPHERTEXT_MIN_BYTES", "CIPHERTEXT_MAX_BYTES",
    ]
    assert [getattr(sm2, name) for name in names] == [getattr(ref, name) for name in names]
    # OpenSSL 3.0 refuses an 8191-byte user id although ENTL could count it.
    assert sm2.USER_ID_MAX_BYTES == ref.USER_ID_MAX_BYTES - 1 == 8190


def test_standard_signature_with_the_standard_k() -> None:
    d = int(STD_D, 16)
    assert ref._sign_e(ref.SM2_P256, d, STD_E, STD_K) == (STD_R, STD_S)


def test_gb32918_2_example_over_the_test_curve() -> None:
    # Exercises a non-default user id (ENTL 0x0090) and a second curve through the same code.
    public = ref._mul(TEST_CURVE, ALICE_D, TEST_CURVE.g)
    assert public == ALICE_PUBLIC
    z = ref._z(TEST_CURVE, public, ALICE_ID)
    assert z.hex().upper() == ALICE_Z
    assert ref._digest(TEST_CURVE, public, ALICE_ID, b"message digest") == ALICE_E
    assert ref._sign_e(TEST_CURVE, ALICE_D, ALICE_E, ALICE_K) == (ALICE_R, ALICE_S)
    assert ref._verify_e(TEST_CURVE, public, ALICE_E, ALICE_R, ALICE_S)
    assert not ref._verify_e(TEST_CURVE, public, ALICE_E + 1, ALICE_R, ALICE_S)


def test_standard_encryption_with_the_standard_k() -> None:
    ciphertext = ref._encrypt_k(ref.SM2_P256, _std_point(), b"encryption standard", STD_K)
    assert ciphertext == STD_CIPHERTEXT


# ---------------------------------------------------------------- both implementations: examples, keys


def test_standard_private_key_gives_standard_public_key(impl: ModuleType) -> None:
    assert impl.public_key_from_private(STD_D) == STD_PUBLIC.lower()
    assert impl.public_key_from_private(STD_D.lower()) == STD_PUBLIC.lower()


def test_standard_z_and_e(impl: ModuleType) -> None:
    z = impl.z_value(STD_PUBLIC)
    assert z.hex().upper() == STD_Z
    assert int.from_bytes(sm3(z + b"message digest"), "big") == STD_E
    assert impl.z_value(STD_PUBLIC, ALICE_ID) == ref._z(ref.SM2_P256, _std_point(), ALICE_ID)


def test_standard_signature_verifies(impl: ModuleType) -> None:
    assert impl.verify(STD_PUBLIC, b"message digest", STD_SIGNATURE)
    assert impl.verify(STD_PUBLIC.lower(), b"message digest", STD_SIGNATURE)


def test_standard_ciphertext_decrypts(impl: ModuleType) -> None:
    # C1's x starts with byte 0x04 here: a decoder that "strips a 04 prefix if present"
    # would break on the standard's own example.
    assert impl.decrypt(STD_D, STD_CIPHERTEXT) == b"encryption standard"


def test_generated_keypair_format(impl: ModuleType) -> None:
    private, public = impl.generate_keypair()
    assert len(private) == 64 and private == private.lower()
    assert 1 <= int(private, 16) <= N - 2
    assert len(public) == 130 and public.startswith("04") and public == public.lower()
    assert impl.public_key_from_private(private) == public
    assert impl.generate_keypair()[0] != private


@pytest.mark.parametrize(
    "private",
    [
        "",
        "00",
        "0" * 64,  # d = 0
        f"{N - 1:064x}",  # d = n-1: 1 + d is not invertible
        f"{N:064x}",
        "g" * 64,
        " " + STD_D[1:],
        STD_D + "00",
        "0x" + STD_D[2:],
        STD_D[:32] + "_" + STD_D[33:],
    ],
    ids=["empty", "short", "zero", "n-1", "n", "non-hex", "space", "long", "0x", "underscore"],
)
def test_bad_private_keys_are_refused_without_echo(impl: ModuleType, private: str) -> None:
    for call in (
        lambda: impl.public_key_from_private(private),
        lambda: impl.sign(private, b"m"),
        lambda: impl.decrypt(private, STD_CIPHERTEXT),
    ):
        with pytest.raises(ValueError, match="SM2 private key") as excinfo:
            call()
        if len(private) > 2:
            assert private not in str(excinfo.value)


@pytest.mark.parametrize("private", [None, 12345, STD_D.encode()], ids=["none", "int", "bytes"])
def test_private_keys_of_the_wrong_type_are_value_errors(impl: ModuleType, private: object) -> None:
    with pytest.raises(ValueError, match="SM2 private key"):
        impl.sign(private, b"m")


def test_key_whose_x_starts_with_04(impl: ModuleType) -> None:
    assert impl.public_key_from_private(X04_D) == X04_PUBLIC
    signature = impl.sign(X04_D, b"m")
    assert impl.verify(X04_PUBLIC, b"m", signature)
    assert impl.decrypt(X04_D, impl.encrypt(X04_PUBLIC, b"k" * 32)) == b"k" * 32


# ---------------------------------------------------------------- both implementations: sign / verify


def test_sign_then_verify(impl: ModuleType, keypair: tuple[str, str]) -> None:
    private, public = keypair
    message = b"T0000001|00112233445566778899aabbccddeeff|1700000000000"
    signature = impl.sign(private, message)
    assert isinstance(signature, bytes) and len(signature) == 64
    assert impl.verify(public, message, signature)


def test_signatures_are_randomized(impl: ModuleType, keypair: tuple[str, str]) -> None:
    private, public = keypair
    first, second = impl.sign(private, b"same"), impl.sign(private, b"same")
    assert first != second
    assert impl.verify(public, b"same", first) and impl.verify(public, b"same", second)


def test_verify_rejects_changes(impl: ModuleType, keypair: tuple[str, str]) -> None:
    private, public = keypair
    signature = impl.sign(private, b"message")
    assert not impl.verify(public, b"messagf", signature)
    assert not impl.verify(public, b"message ", signature)
    assert not impl.verify(public, b"message", signature, user_id=b"8765432187654321")
    assert not impl.verify(STD_PUBLIC, b"message", signature)
    # r and s swapped, and each half flipped in its last bit
    assert not impl.verify(public, b"message", signature[32:] + signature[:32])
    assert not impl.verify(
        public, b"message", signature[:31] + bytes([signature[31] ^ 1]) + signature[32:]
    )
    assert not impl.verify(public, b"message", signature[:63] + bytes([signature[63] ^ 1]))


@both
@settings(max_examples=8, deadline=None)
@given(message=st.binary(max_size=200), bit=st.integers(0, 511))
def test_any_single_bit_flip_breaks_the_signature(impl: ModuleType, message: bytes, bit: int) -> None:
    signature = bytearray(impl.sign(X04_D, message))
    signature[bit // 8] ^= 1 << (bit % 8)
    assert not impl.verify(X04_PUBLIC, message, bytes(signature))


def test_custom_user_id(impl: ModuleType, keypair: tuple[str, str]) -> None:
    private, public = keypair
    signature = impl.sign(private, b"m", user_id=ALICE_ID)
    assert impl.verify(public, b"m", signature, user_id=ALICE_ID)
    assert not impl.verify(public, b"m", signature)


def test_user_id_longer_than_entl_allows(impl: ModuleType) -> None:
    too_long = b"x" * (impl.USER_ID_MAX_BYTES + 1)
    with pytest.raises(ValueError, match="user id"):
        impl.sign(STD_D, b"m", user_id=too_long)
    with pytest.raises(ValueError, match="user id"):
        impl.z_value(STD_PUBLIC, too_long)
    assert not impl.verify(STD_PUBLIC, b"message digest", STD_SIGNATURE, user_id=too_long)
    longest = b"x" * impl.USER_ID_MAX_BYTES
    assert impl.verify(STD_PUBLIC, b"m", impl.sign(STD_D, b"m", user_id=longest), user_id=longest)


def _off_curve_public() -> str:
    x, y = int(STD_PUBLIC[2:66], 16), int(STD_PUBLIC[66:], 16)
    return f"04{x:064x}{(y + 1) % ref.SM2_P256.p:064x}"


def _coordinates_above_p_public() -> str:
    """A point on the curve spelled with x + p instead of x (p is about 2**256 - 2**224)."""
    curve = ref.SM2_P256
    p = curve.p
    for x in range(1, 1000):
        rhs = (x**3 + curve.a * x + curve.b) % p
        y = pow(rhs, (p + 1) // 4, p)  # a square root, as p = 3 mod 4
        if y * y % p == rhs:
            assert ref._on_curve(curve, x, y) and x + p < 2**256
            return f"04{x + p:064x}{y:064x}"
    raise AssertionError("no small x on the curve")


GARBAGE_SIGNATURES = [
    b"",
    STD_SIGNATURE[:63],
    STD_SIGNATURE + b"\x00",
    bytes(64),  # r = s = 0
    bytes(32) + STD_SIGNATURE[32:],  # r = 0
    STD_SIGNATURE[:32] + bytes(32),  # s = 0
    N.to_bytes(32, "big") + STD_SIGNATURE[32:],  # r = n
    STD_SIGNATURE[:32] + N.to_bytes(32, "big"),  # s = n
    STD_R.to_bytes(32, "big") + (N - STD_R).to_bytes(32, "big"),  # r + s = n
    b"\xff" * 64,
    STD_SIGNATURE.hex().encode(),  # hex text instead of raw bytes
]

GARBAGE_PUBLIC_KEYS = [
    "",
    STD_PUBLIC[2:],  # no 04 prefix
    "02" + STD_PUBLIC[2:66],  # compressed form
    "03" + STD_PUBLIC[2:],
    "06" + STD_PUBLIC[2:],  # hybrid form
    STD_PUBLIC + "00",
    STD_PUBLIC[:-1] + "G",
    STD_PUBLIC[:-2] + " 3",
    _off_curve_public(),
    _coordinates_above_p_public(),
    "04" + "ff" * 64,  # coordinates >= p
    "04" + "00" * 64,  # (0, 0), not on the curve
]


@pytest.mark.parametrize("signature", GARBAGE_SIGNATURES)
def test_verify_is_false_for_garbage_signatures(impl: ModuleType, signature: bytes) -> None:
    assert impl.verify(STD_PUBLIC, b"message digest", signature) is False


@pytest.mark.parametrize("public", GARBAGE_PUBLIC_KEYS)
def test_verify_is_false_for_garbage_public_keys(impl: ModuleType, public: str) -> None:
    assert impl.verify(public, b"message digest", STD_SIGNATURE) is False


@pytest.mark.parametrize(
    ("public", "message", "signature"),
    [
        (None, b"m", STD_SIGNATURE),
        (STD_PUBLIC.encode(), b"message digest", STD_SIGNATURE),
        (STD_PUBLIC, "message digest", STD_SIGNATURE),
        (STD_PUBLIC, None, STD_SIGNATURE),
        (STD_PUBLIC, b"message digest", None),
        (STD_PUBLIC, b"message digest", STD_SIGNATURE.hex()),
        (12345, 67890, 3.5),
    ],
)
def test_verify_is_false_for_wrong_types(
    impl: ModuleType, public: object, message: object, signature: object
) -> None:
    assert impl.verify(public, message, signature) is False


def test_verify_accepts_bytearray(impl: ModuleType) -> None:
    assert impl.verify(STD_PUBLIC, bytearray(b"message digest"), bytearray(STD_SIGNATURE))
    assert impl.verify(
        STD_PUBLIC, b"message digest", STD_SIGNATURE, user_id=bytearray(sm2.DEFAULT_USER_ID)
    )


# ---------------------------------------------------------------- both implementations: encrypt / decrypt


def test_session_keys_round_trip(impl: ModuleType, keypair: tuple[str, str]) -> None:
    private, public = keypair
    keys = secrets.token_bytes(32)  # mac_key(16) || pin_key(16)
    ciphertext = impl.encrypt(public, keys)
    assert isinstance(ciphertext, bytes) and len(ciphertext) == 64 + 32 + 32
    x, y = int.from_bytes(ciphertext[:32], "big"), int.from_bytes(ciphertext[32:64], "big")
    assert ref._on_curve(ref.SM2_P256, x, y)  # C1 is a bare x || y, no 0x04
    assert impl.decrypt(private, ciphertext) == keys
    assert impl.encrypt(public, keys) != ciphertext  # fresh k each time


@both
@settings(max_examples=6, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=100))
def test_round_trip_any_length(impl: ModuleType, plaintext: bytes) -> None:
    assert impl.decrypt(X04_D, impl.encrypt(X04_PUBLIC, plaintext)) == plaintext


def test_round_trip_at_the_size_limits(impl: ModuleType) -> None:
    for plaintext in (b"\x00", secrets.token_bytes(sm2.PLAINTEXT_MAX_BYTES)):
        assert impl.decrypt(X04_D, impl.encrypt(X04_PUBLIC, plaintext)) == plaintext


def test_encrypt_refuses_bad_input(impl: ModuleType) -> None:
    with pytest.raises(ValueError, match="plaintext"):
        impl.encrypt(STD_PUBLIC, b"")
    with pytest.raises(ValueError, match="plaintext"):
        impl.encrypt(STD_PUBLIC, bytes(sm2.PLAINTEXT_MAX_BYTES + 1))
    for public in [*GARBAGE_PUBLIC_KEYS, None, STD_PUBLIC.encode()]:
        with pytest.raises(ValueError, match="SM2 public key"):
            impl.encrypt(public, b"k")
        with pytest.raises(ValueError, match="SM2 public key"):
            impl.z_value(public)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


def _zero_key_stream_ciphertext() -> bytes:
    """A well-formed ciphertext whose key stream t is all zero, so C2 = M (GB/T 32918.4 A5)."""
    curve, k, message = ref.SM2_P256, K_ZERO_KEY_STREAM, b"\x5a"
    c1 = ref._mul(curve, k, curve.g)
    x2, y2 = (ref._int_bytes(v) for v in ref._mul(curve, k, _std_point()))
    assert ref._kdf(x2 + y2, 1) == b"\x00"
    assert ref._encrypt_k(curve, _std_point(), message, k) is None  # the reference redraws k
    return ref._int_bytes(c1[0]) + ref._int_bytes(c1[1]) + sm3(x2 + message + y2) + message


@pytest.mark.parametrize(
    ("ciphertext", "message"),
    [
        (_flip(STD_CIPHERTEXT, 70), "C3 check"),  # C3
        (_flip(STD_CIPHERTEXT, len(STD_CIPHERTEXT) - 1), "C3 check"),  # C2
        (STD_CIPHERTEXT + b"\x00", "C3 check"),  # C2 one byte longer
        (STD_CIPHERTEXT[:-1], "C3 check"),  # C2 one byte shorter
        (_flip(STD_CIPHERTEXT, 5), "not a point on the curve"),  # C1
        (b"\x04" + STD_CIPHERTEXT, "not a point on the curve"),  # 65-byte C1 with prefix
        (STD_CIPHERTEXT[:96], "must be"),  # no C2
        (b"", "must be"),
        (bytes(97), "not a point on the curve"),
        (b"\xff" * 97, "not a point on the curve"),  # coordinates >= p
        (bytes(sm2.CIPHERTEXT_MAX_BYTES + 1), "must be"),
    ],
    ids=[
        "c3", "c2", "c2-longer", "c2-shorter", "c1", "prefixed-c1", "no-c2", "empty", "zeros",
        "above-p", "too-long",
    ],
)
def test_decrypt_refuses_bad_ciphertexts(impl: ModuleType, ciphertext: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        impl.decrypt(STD_D, ciphertext)


def test_decrypt_refuses_an_all_zero_key_stream(impl: ModuleType) -> None:
    # GB/T 32918.4 7.1 B4. The reference says so; OpenSSL refuses it inside EVP_PKEY_decrypt
    # without telling which check failed.
    message = "all-zero key stream" if impl is ref else "SM2 ciphertext"
    with pytest.raises(ValueError, match=message):
        impl.decrypt(STD_D, _zero_key_stream_ciphertext())


@both
@settings(max_examples=10, deadline=None)
@given(bit=st.integers(0, 8 * len(STD_CIPHERTEXT) - 1))
def test_any_single_bit_flip_breaks_the_ciphertext(impl: ModuleType, bit: int) -> None:
    tampered = bytearray(STD_CIPHERTEXT)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ValueError, match="SM2 ciphertext"):
        impl.decrypt(STD_D, bytes(tampered))


def test_decrypt_with_the_wrong_key(impl: ModuleType, keypair: tuple[str, str]) -> None:
    private, _ = keypair
    with pytest.raises(ValueError, match="C3 check"):
        impl.decrypt(private, STD_CIPHERTEXT)


# ---------------------------------------------------------------- OpenSSL against gmssl


@settings(max_examples=60, deadline=None)
@given(private=PRIVATE_SCALARS, message=st.binary(max_size=300), user_id=USER_IDS)
def test_signatures_cross_between_openssl_and_gmssl(private: str, message: bytes, user_id: bytes) -> None:
    public = sm2.public_key_from_private(private)
    assert ref.public_key_from_private(private) == public
    assert sm2.z_value(public, user_id) == ref.z_value(public, user_id)
    assert ref.verify(public, message, sm2.sign(private, message, user_id), user_id)
    assert sm2.verify(public, message, ref.sign(private, message, user_id), user_id)


@settings(max_examples=60, deadline=None)
@given(private=PRIVATE_SCALARS, plaintext=st.binary(min_size=1, max_size=200))
def test_ciphertexts_cross_between_openssl_and_gmssl(private: str, plaintext: bytes) -> None:
    public = sm2.public_key_from_private(private)
    assert ref.decrypt(private, sm2.encrypt(public, plaintext)) == plaintext
    assert sm2.decrypt(private, ref.encrypt(public, plaintext)) == plaintext


def test_openssl_reads_short_integers() -> None:
    # Values with a leading zero byte: r, s into the low-level verify; C1's x, y into OpenSSL's
    # decrypt, where DER carries them one byte shorter.
    d, curve = int(STD_D, 16), ref.SM2_P256
    for k, short in ((K_SHORT_R, 0), (K_SHORT_S, 32)):
        signed = ref._sign_e(curve, d, STD_E, k)
        assert signed is not None
        signature = signed[0].to_bytes(32, "big") + signed[1].to_bytes(32, "big")
        assert signature[short] == 0
        assert sm2.verify(STD_PUBLIC, b"message digest", signature)
    for k, short in ((K_SHORT_X, 0), (K_SHORT_Y, 32)):
        ciphertext = ref._encrypt_k(curve, _std_point(), b"encryption standard", k)
        assert ciphertext is not None and ciphertext[short] == 0
        assert sm2.decrypt(STD_D, ciphertext) == b"encryption standard"


def _until(produce: Callable[[], bytes], short: Callable[[bytes], bool], tries: int = 5000) -> bytes:
    for _ in range(tries):
        out = produce()
        if short(out):
            return out
    raise AssertionError(f"no output with a leading zero coordinate byte in {tries} tries")


def test_openssl_writes_short_integers_back_to_32_bytes() -> None:
    # OpenSSL's own r, s come out of DER shortened, and C1's x or y has a leading zero byte, about
    # once in 128 tries.
    signature = _until(lambda: sm2.sign(STD_D, b"m"), lambda sig: sig[0] == 0 or sig[32] == 0)
    assert len(signature) == 64 and ref.verify(STD_PUBLIC, b"m", signature)
    ciphertext = _until(lambda: sm2.encrypt(STD_PUBLIC, b"k" * 32), lambda ct: ct[0] == 0 or ct[32] == 0)
    assert len(ciphertext) == 128 and ref.decrypt(STD_D, ciphertext) == b"k" * 32


def test_openssl_encrypt_redraws_k_on_an_all_zero_key_stream() -> None:
    # A 1-byte key stream is zero once in 256 nonces; the wrapper then draws a fresh k (A5) rather
    # than send C2 = M.
    plaintext = b"\x5a"
    assert all(sm2.encrypt(STD_PUBLIC, plaintext)[96:] != plaintext for _ in range(2000))


# ---------------------------------------------------------------- the low-level OpenSSL path, fixed k
# encrypt and verify run on OpenSSL's low-level EC API (k*G and s*G from precomputed multiples of G).
# A fixed k replays the standard and the reference exactly.


def _ossl_encrypt_k(public_hex: str, plaintext: bytes, k: int) -> bytes:
    return _sm2_openssl._encrypt_with_k(_sm2_openssl.public_key(public_hex), plaintext, k)


def test_openssl_replays_the_standard_encryption_with_the_standard_k() -> None:
    assert _ossl_encrypt_k(STD_PUBLIC, b"encryption standard", STD_K) == STD_CIPHERTEXT


@settings(max_examples=40, deadline=None)
@given(
    private=PRIVATE_SCALARS,
    plaintext=st.binary(min_size=1, max_size=130),  # up to five KDF blocks
    k=st.integers(1, N - 1) | st.sampled_from([1, 2, 3, N - 2, N - 1, 2**255, 2**128 + 1]),
)
def test_openssl_encryption_with_a_fixed_k_is_the_reference_s(private: str, plaintext: bytes, k: int) -> None:
    public = sm2.public_key_from_private(private)
    expected = ref._encrypt_k(ref.SM2_P256, ref._parse_public(ref.SM2_P256, public), plaintext, k)
    if expected is None:  # an all-zero key stream: both refuse this k
        with pytest.raises(ValueError, match="all-zero key stream"):
            _ossl_encrypt_k(public, plaintext, k)
    else:
        assert _ossl_encrypt_k(public, plaintext, k) == expected


def test_openssl_encryption_pads_short_coordinates_of_c1() -> None:
    for k, short in ((K_SHORT_X, 0), (K_SHORT_Y, 32)):
        ciphertext = _ossl_encrypt_k(STD_PUBLIC, b"encryption standard", k)
        assert ciphertext[short] == 0 and len(ciphertext) == 96 + len(b"encryption standard")
        assert ciphertext == ref._encrypt_k(ref.SM2_P256, _std_point(), b"encryption standard", k)


def test_openssl_encryption_refuses_an_all_zero_key_stream_for_a_fixed_k() -> None:
    with pytest.raises(ValueError, match="all-zero key stream"):
        _ossl_encrypt_k(STD_PUBLIC, b"\x5a", K_ZERO_KEY_STREAM)
    # The same k with a longer message has a non-zero key stream.
    assert sm2.decrypt(STD_D, _ossl_encrypt_k(STD_PUBLIC, b"\x5a\x5a", K_ZERO_KEY_STREAM)) == b"\x5a\x5a"


@pytest.mark.parametrize("k", [0, N, N + 1, -1, 2**256, 1.0, None], ids=str)
def test_a_fixed_k_must_be_a_nonzero_scalar(k: object) -> None:
    with pytest.raises(ValueError, match="k must be"):
        _sm2_openssl._encrypt_with_k(_sm2_openssl.public_key(STD_PUBLIC), b"m", k)  # type: ignore[arg-type]


def test_encryption_to_small_multiples_of_g() -> None:
    # d = 1 makes P = G, so k*P (the ladder) must equal C1 = k*G (the precomputed table): then
    # C3 = SM3(x1 || M || y1). d = 2 and n-2 (P = -2G) cross with the reference.
    plaintext = secrets.token_bytes(32)
    ciphertext = sm2.encrypt(sm2.public_key_from_private(f"{1:064x}"), plaintext)
    assert ciphertext[64:96] == sm3(ciphertext[:32] + plaintext + ciphertext[32:64])
    for d in (1, 2, N - 2):
        private = f"{d:064x}"
        public = sm2.public_key_from_private(private)
        for message in (b"\x00", plaintext, secrets.token_bytes(sm2.PLAINTEXT_MAX_BYTES)):
            assert ref.decrypt(private, sm2.encrypt(public, message)) == message
            assert sm2.decrypt(private, ref.encrypt(public, message)) == message


def test_verify_refuses_a_signature_whose_sum_point_is_at_infinity() -> None:
    # B6 with s*G + t*P = O: s + (r + s) d = 0 mod n, i.e. s = -r d / (1 + d). There is no x1.
    d = int(STD_D, 16)
    r = STD_R
    s = (-r * d * pow(1 + d, -1, N)) % N
    assert 0 < s < N and (r + s) % N != 0
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert sm2.verify(STD_PUBLIC, b"message digest", signature) is False
    assert ref.verify(STD_PUBLIC, b"message digest", signature) is False


def test_verify_refuses_r_plus_s_equal_to_n_with_a_matching_point() -> None:
    # t = 0 (B5) would make the sum s*G alone; refused before any multiplication.
    for r in (1, STD_R, N - 1):
        signature = r.to_bytes(32, "big") + (N - r).to_bytes(32, "big")
        assert sm2.verify(STD_PUBLIC, b"message digest", signature) is False


@pytest.mark.parametrize("message", [b"", b"\x00", b"x" * 55, b"y" * 64, secrets.token_bytes(65_536)],
                         ids=["empty", "zero-byte", "55", "64", "64KiB"])
def test_signatures_of_edge_length_messages_cross(message: bytes) -> None:
    private, public = X04_D, X04_PUBLIC
    assert ref.verify(public, message, sm2.sign(private, message))
    assert sm2.verify(public, message, ref.sign(private, message))
    assert not sm2.verify(public, message + b"\x00", sm2.sign(private, message))


def test_ciphertexts_of_the_largest_plaintext_cross() -> None:
    plaintext = secrets.token_bytes(sm2.PLAINTEXT_MAX_BYTES)
    assert ref.decrypt(X04_D, sm2.encrypt(X04_PUBLIC, plaintext)) == plaintext
    assert sm2.decrypt(X04_D, ref.encrypt(X04_PUBLIC, plaintext)) == plaintext


def test_public_keys_that_are_not_finite_curve_points_are_refused_by_the_parser() -> None:
    p = ref.SM2_P256.p
    gy = f"{ref.SM2_P256.gy:064x}"
    for public in (
        "04" + "00" * 64,  # the usual stand-in for the point at infinity: not on the curve
        "00",  # the SEC 1 spelling of the point at infinity
        _off_curve_public(),
        _coordinates_above_p_public(),
        f"04{p:064x}{gy}",  # x = p
    ):
        with pytest.raises(ValueError, match="SM2 public key"):
            _sm2_openssl.public_key(public)
        assert sm2.verify(public, b"message digest", STD_SIGNATURE) is False
        assert ref.verify(public, b"message digest", STD_SIGNATURE) is False


def test_our_signature_verifies_in_gmssl(keypair: tuple[str, str]) -> None:
    private, public = keypair
    signature = sm2.sign(private, b"to gmssl")
    assert gmssl_with_key(private, public).verify_with_sm3(signature.hex(), b"to gmssl")


def test_gmssl_signature_verifies_here(keypair: tuple[str, str]) -> None:
    private, public = keypair
    k_hex = f"{secrets.randbelow(N - 1) + 1:064x}"  # gmssl's own nonce source is `random`
    signature_hex = gmssl_with_key(private, public).sign_with_sm3(b"from gmssl", k_hex)
    assert sm2.verify(public, b"from gmssl", bytes.fromhex(signature_hex))


def test_our_ciphertext_decrypts_in_gmssl(keypair: tuple[str, str]) -> None:
    private, public = keypair
    ciphertext = sm2.encrypt(public, b"for gmssl, C1C3C2")
    assert gmssl_with_key(private, public, mode=1).decrypt(ciphertext) == b"for gmssl, C1C3C2"


def test_gmssl_ciphertext_decrypts_here(keypair: tuple[str, str]) -> None:
    private, public = keypair
    ciphertext = gmssl_with_key(private, public, mode=1).encrypt(b"from gmssl")
    assert sm2.decrypt(private, ciphertext) == b"from gmssl"


# ---------------------------------------------------------------- the OpenSSL wrapper itself


def test_parsed_keys_are_cached_and_the_cache_is_bounded() -> None:
    first = _sm2_openssl.public_key(STD_PUBLIC)
    assert _sm2_openssl.public_key(STD_PUBLIC) is first
    assert _sm2_openssl.private_key(STD_D) is _sm2_openssl.private_key(STD_D)
    # Differently cased spellings of one key are distinct cache entries: enough of them evict it.
    digits = list(STD_PUBLIC[2:].lower())
    letters = [i for i, c in enumerate(digits) if c in "abcdef"]
    assert 2 ** len(letters) > _sm2_openssl.KEY_CACHE_MAX + 1
    for n in range(1, _sm2_openssl.KEY_CACHE_MAX + 1):
        spelling = digits.copy()
        for bit, i in enumerate(letters):
            if n >> bit & 1:
                spelling[i] = spelling[i].upper()
        _sm2_openssl.public_key("04" + "".join(spelling))
    again = _sm2_openssl.public_key(STD_PUBLIC)
    assert again is not first and again.xy == first.xy


def test_key_objects_are_made_by_the_parsers_only() -> None:
    with pytest.raises(TypeError):
        _sm2_openssl.PrivateKey()
    with pytest.raises(TypeError):
        _sm2_openssl.PublicKey()


def test_threads_share_keys_safely(keypair: tuple[str, str]) -> None:
    # The GIL is released around the EC math: many threads on the same cached keys (EVP_PKEYs,
    # EC_POINTs) and the one precomputed EC_GROUP.
    private, public = keypair
    failures: list[str] = []

    def work(worker: int) -> None:
        for i in range(40):
            message = f"{worker}:{i}".encode()
            if not sm2.verify(public, message, sm2.sign(private, message)):
                failures.append(f"signature {worker}:{i}")
            if sm2.verify(public, message + b"!", sm2.sign(private, message)):
                failures.append(f"forgery {worker}:{i}")
            if sm2.decrypt(private, sm2.encrypt(public, message)) != message:
                failures.append(f"ciphertext {worker}:{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.slow
def test_no_openssl_object_leaks() -> None:
    # Every path, success and failure, in a loop: RSS must not grow with the call count.
    good_signature = sm2.sign(STD_D, b"m")
    bad_c3 = _flip(STD_CIPHERTEXT, 70)

    def round_trip(i: int) -> None:
        private = f"{i + 2:064x}"  # a fresh private key (and public key) to parse each time
        public = sm2.public_key_from_private(private)
        assert sm2.verify(public, b"m", sm2.sign(private, b"m"))
        assert sm2.decrypt(private, sm2.encrypt(public, b"k" * 32)) == b"k" * 32
        assert not sm2.verify(STD_PUBLIC, b"x", good_signature)
        assert not sm2.verify(_off_curve_public(), b"m", good_signature)
        assert not sm2.verify(public, b"m", bytes(64))
        for ciphertext in (bad_c3, bytes(97)):
            with pytest.raises(ValueError):
                sm2.decrypt(STD_D, ciphertext)
        with pytest.raises(ValueError, match="all-zero key stream"):
            _ossl_encrypt_k(STD_PUBLIC, b"\x5a", K_ZERO_KEY_STREAM)

    rounds = 2000
    for i in range(rounds):  # warm-up: fill the key caches and the allocator's pools
        round_trip(i)
    before = psutil.Process(os.getpid()).memory_info().rss
    for i in range(rounds, 2 * rounds):
        round_trip(i)
    grown = psutil.Process(os.getpid()).memory_info().rss - before
    # Even 100 bytes lost per call would be about 2 MB here.
    assert grown < 1_000_000, f"RSS grew by {grown:,} bytes over {rounds} rounds"
