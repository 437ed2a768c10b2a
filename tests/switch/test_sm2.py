"""SM2: the GB/T 32918 / GM/T 0003 examples, gmssl as an independent twin, hostile input.

gmssl SM2 costs about 5 ms per scalar multiplication, so example counts stay small.
"""

from __future__ import annotations

import secrets

import pytest
from gmssl import sm2 as gmssl_sm2
from hypothesis import given, settings
from hypothesis import strategies as st

from switch import sm2
from switch.sm3 import sm3

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
TEST_CURVE = sm2.Curve(
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

N = sm2.SM2_P256.n


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return sm2.generate_keypair()


def gmssl_with_key(private_hex: str, public_hex_130: str, mode: int = 1) -> gmssl_sm2.CryptSM2:
    """A gmssl CryptSM2 for the key, set after construction to dodge its lstrip("04")."""
    engine = gmssl_sm2.CryptSM2(private_key="", public_key="", mode=mode)
    engine.private_key = private_hex
    engine.public_key = public_hex_130[2:]
    return engine


# ---------------------------------------------------------------- standard examples


def test_curve_is_gmssl_default_curve() -> None:
    table = {key: value.lower() for key, value in gmssl_sm2.default_ecc_table.items()}
    assert sm2.SM2_P256.gmssl_table() == table


def test_standard_private_key_gives_standard_public_key() -> None:
    assert sm2.public_key_from_private(STD_D) == STD_PUBLIC.lower()
    assert sm2.public_key_from_private(STD_D.lower()) == STD_PUBLIC.lower()


def test_standard_z_and_e() -> None:
    z = sm2.z_value(STD_PUBLIC)
    assert z.hex().upper() == STD_Z
    assert int.from_bytes(sm3(z + b"message digest"), "big") == STD_E


def test_standard_signature_with_the_standard_k() -> None:
    d = int(STD_D, 16)
    assert sm2._sign_e(sm2.SM2_P256, d, STD_E, STD_K) == (STD_R, STD_S)


def test_standard_signature_verifies() -> None:
    assert sm2.verify(STD_PUBLIC, b"message digest", STD_SIGNATURE)
    assert sm2.verify(STD_PUBLIC.lower(), b"message digest", STD_SIGNATURE)


def test_gb32918_2_example_over_the_test_curve() -> None:
    # Exercises a non-default user id (ENTL 0x0090) and a second curve through the same code.
    public = sm2._mul(TEST_CURVE, ALICE_D, TEST_CURVE.g)
    assert public == ALICE_PUBLIC
    z = sm2._z(TEST_CURVE, public, ALICE_ID)
    assert z.hex().upper() == ALICE_Z
    assert sm2._digest(TEST_CURVE, public, ALICE_ID, b"message digest") == ALICE_E
    assert sm2._sign_e(TEST_CURVE, ALICE_D, ALICE_E, ALICE_K) == (ALICE_R, ALICE_S)
    assert sm2._verify_e(TEST_CURVE, public, ALICE_E, ALICE_R, ALICE_S)
    assert not sm2._verify_e(TEST_CURVE, public, ALICE_E + 1, ALICE_R, ALICE_S)


def test_standard_encryption_with_the_standard_k() -> None:
    point = sm2._parse_public(sm2.SM2_P256, STD_PUBLIC)
    ciphertext = sm2._encrypt_k(sm2.SM2_P256, point, b"encryption standard", STD_K)
    assert ciphertext == STD_CIPHERTEXT


def test_standard_ciphertext_decrypts() -> None:
    # C1's x starts with byte 0x04 here: a decoder that "strips a 04 prefix if present"
    # would break on the standard's own example.
    assert sm2.decrypt(STD_D, STD_CIPHERTEXT) == b"encryption standard"


# ---------------------------------------------------------------- keys


def test_generated_keypair_format(keypair: tuple[str, str]) -> None:
    private, public = keypair
    assert len(private) == 64 and private == private.lower()
    assert 1 <= int(private, 16) <= N - 2
    assert len(public) == 130 and public.startswith("04") and public == public.lower()
    assert sm2.public_key_from_private(private) == public
    assert sm2.generate_keypair()[0] != private


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
    ],
    ids=["empty", "short", "zero", "n-1", "n", "non-hex", "space", "long"],
)
def test_bad_private_keys_are_refused_without_echo(private: str) -> None:
    for call in (
        lambda: sm2.public_key_from_private(private),
        lambda: sm2.sign(private, b"m"),
        lambda: sm2.decrypt(private, STD_CIPHERTEXT),
    ):
        with pytest.raises(ValueError, match="SM2 private key") as excinfo:
            call()
        if len(private) > 2:
            assert private not in str(excinfo.value)


def test_key_whose_x_starts_with_04(keypair: tuple[str, str]) -> None:
    assert sm2.public_key_from_private(X04_D) == X04_PUBLIC
    signature = sm2.sign(X04_D, b"m")
    assert sm2.verify(X04_PUBLIC, b"m", signature)
    assert sm2.decrypt(X04_D, sm2.encrypt(X04_PUBLIC, b"k" * 32)) == b"k" * 32


# ---------------------------------------------------------------- sign / verify


def test_sign_then_verify(keypair: tuple[str, str]) -> None:
    private, public = keypair
    message = b"T0000001|00112233445566778899aabbccddeeff|1700000000000"
    signature = sm2.sign(private, message)
    assert len(signature) == 64
    assert sm2.verify(public, message, signature)


def test_signatures_are_randomized(keypair: tuple[str, str]) -> None:
    private, public = keypair
    first, second = sm2.sign(private, b"same"), sm2.sign(private, b"same")
    assert first != second
    assert sm2.verify(public, b"same", first) and sm2.verify(public, b"same", second)


def test_verify_rejects_changes(keypair: tuple[str, str]) -> None:
    private, public = keypair
    signature = sm2.sign(private, b"message")
    assert not sm2.verify(public, b"messagf", signature)
    assert not sm2.verify(public, b"message ", signature)
    assert not sm2.verify(public, b"message", signature, user_id=b"8765432187654321")
    assert not sm2.verify(STD_PUBLIC, b"message", signature)
    # r and s swapped, and each half flipped in its last bit
    assert not sm2.verify(public, b"message", signature[32:] + signature[:32])
    assert not sm2.verify(
        public, b"message", signature[:31] + bytes([signature[31] ^ 1]) + signature[32:]
    )
    assert not sm2.verify(public, b"message", signature[:63] + bytes([signature[63] ^ 1]))


@settings(max_examples=8, deadline=None)
@given(message=st.binary(max_size=200), bit=st.integers(0, 511))
def test_any_single_bit_flip_breaks_the_signature(message: bytes, bit: int) -> None:
    signature = bytearray(sm2.sign(X04_D, message))
    signature[bit // 8] ^= 1 << (bit % 8)
    assert not sm2.verify(X04_PUBLIC, message, bytes(signature))


def test_custom_user_id(keypair: tuple[str, str]) -> None:
    private, public = keypair
    signature = sm2.sign(private, b"m", user_id=b"ALICE123@YAHOO.COM")
    assert sm2.verify(public, b"m", signature, user_id=b"ALICE123@YAHOO.COM")
    assert not sm2.verify(public, b"m", signature)


def test_user_id_longer_than_entl_allows() -> None:
    too_long = b"x" * (sm2.USER_ID_MAX_BYTES + 1)
    with pytest.raises(ValueError, match="user id"):
        sm2.sign(STD_D, b"m", user_id=too_long)
    assert not sm2.verify(STD_PUBLIC, b"message digest", STD_SIGNATURE, user_id=too_long)


def test_our_signature_verifies_in_gmssl(keypair: tuple[str, str]) -> None:
    private, public = keypair
    signature = sm2.sign(private, b"to gmssl")
    assert gmssl_with_key(private, public).verify_with_sm3(signature.hex(), b"to gmssl")


def test_gmssl_signature_verifies_here(keypair: tuple[str, str]) -> None:
    private, public = keypair
    k_hex = f"{secrets.randbelow(N - 1) + 1:064x}"  # gmssl's own nonce source is `random`
    signature_hex = gmssl_with_key(private, public).sign_with_sm3(b"from gmssl", k_hex)
    assert sm2.verify(public, b"from gmssl", bytes.fromhex(signature_hex))


def _off_curve_public() -> str:
    x, y = int(STD_PUBLIC[2:66], 16), int(STD_PUBLIC[66:], 16)
    return f"04{x:064x}{(y + 1) % sm2.SM2_P256.p:064x}"


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
    STD_PUBLIC + "00",
    STD_PUBLIC[:-1] + "G",
    STD_PUBLIC[:-2] + " 3",
    _off_curve_public(),
    "04" + "ff" * 64,  # coordinates >= p
    "04" + "00" * 64,  # (0, 0), not on the curve
]


@pytest.mark.parametrize("signature", GARBAGE_SIGNATURES)
def test_verify_is_false_for_garbage_signatures(signature: bytes) -> None:
    assert sm2.verify(STD_PUBLIC, b"message digest", signature) is False


@pytest.mark.parametrize("public", GARBAGE_PUBLIC_KEYS)
def test_verify_is_false_for_garbage_public_keys(public: str) -> None:
    assert sm2.verify(public, b"message digest", STD_SIGNATURE) is False


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
    public: object, message: object, signature: object
) -> None:
    assert sm2.verify(public, message, signature) is False  # type: ignore[arg-type]


def test_verify_accepts_bytearray() -> None:
    assert sm2.verify(STD_PUBLIC, bytearray(b"message digest"), bytearray(STD_SIGNATURE))


# ---------------------------------------------------------------- encrypt / decrypt


def test_session_keys_round_trip(keypair: tuple[str, str]) -> None:
    private, public = keypair
    keys = secrets.token_bytes(32)  # mac_key(16) || pin_key(16)
    ciphertext = sm2.encrypt(public, keys)
    assert len(ciphertext) == 64 + 32 + 32
    x, y = int.from_bytes(ciphertext[:32], "big"), int.from_bytes(ciphertext[32:64], "big")
    assert sm2._on_curve(sm2.SM2_P256, x, y)  # C1 is a bare x || y, no 0x04
    assert sm2.decrypt(private, ciphertext) == keys
    assert sm2.encrypt(public, keys) != ciphertext  # fresh k each time


@settings(max_examples=6, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=100))
def test_round_trip_any_length(plaintext: bytes) -> None:
    assert sm2.decrypt(X04_D, sm2.encrypt(X04_PUBLIC, plaintext)) == plaintext


def test_our_ciphertext_decrypts_in_gmssl(keypair: tuple[str, str]) -> None:
    private, public = keypair
    ciphertext = sm2.encrypt(public, b"for gmssl, C1C3C2")
    assert gmssl_with_key(private, public, mode=1).decrypt(ciphertext) == b"for gmssl, C1C3C2"


def test_gmssl_ciphertext_decrypts_here(keypair: tuple[str, str]) -> None:
    private, public = keypair
    ciphertext = gmssl_with_key(private, public, mode=1).encrypt(b"from gmssl")
    assert sm2.decrypt(private, ciphertext) == b"from gmssl"


def test_encrypt_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="plaintext"):
        sm2.encrypt(STD_PUBLIC, b"")
    with pytest.raises(ValueError, match="plaintext"):
        sm2.encrypt(STD_PUBLIC, bytes(sm2.PLAINTEXT_MAX_BYTES + 1))
    for public in GARBAGE_PUBLIC_KEYS:
        with pytest.raises(ValueError, match="SM2 public key"):
            sm2.encrypt(public, b"k")


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("ciphertext", "message"),
    [
        (_flip(STD_CIPHERTEXT, 70), "C3 check"),  # C3
        (_flip(STD_CIPHERTEXT, len(STD_CIPHERTEXT) - 1), "C3 check"),  # C2
        (_flip(STD_CIPHERTEXT, 5), "not a point on the curve"),  # C1
        (b"\x04" + STD_CIPHERTEXT, "not a point on the curve"),  # 65-byte C1 with prefix
        (STD_CIPHERTEXT[:96], "must be"),  # no C2
        (b"", "must be"),
        (bytes(97), "not a point on the curve"),
        (bytes(sm2.CIPHERTEXT_MAX_BYTES + 1), "must be"),
    ],
    ids=["c3", "c2", "c1", "prefixed-c1", "no-c2", "empty", "zeros", "too-long"],
)
def test_decrypt_refuses_bad_ciphertexts(ciphertext: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sm2.decrypt(STD_D, ciphertext)


def test_decrypt_with_the_wrong_key(keypair: tuple[str, str]) -> None:
    private, _ = keypair
    with pytest.raises(ValueError, match="C3 check"):
        sm2.decrypt(private, STD_CIPHERTEXT)
