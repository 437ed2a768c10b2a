"""ISO 9564-1 format 0 PIN blocks under SM4, and PIN verification values."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch import pinblock, sm4
from switch.pinblock import PinBlockError

PIN_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
PAN = "4111111111111111"
PVK = bytes(range(32))

pins = st.text(alphabet="0123456789", min_size=4, max_size=12)
pans = st.text(alphabet="0123456789", min_size=8, max_size=19)


def raw_block(clear8: bytes) -> bytes:
    """Encrypt an arbitrary 16-byte clear block, to build malformed PIN blocks."""
    return sm4.encrypt_ecb(PIN_KEY, clear8 + b"\xff" * 8)


def clear_for(field_hex: str, pan: str = PAN) -> bytes:
    """The 8 clear bytes whose PIN field (after removing the PAN field) is `field_hex`."""
    return bytes(
        a ^ b for a, b in zip(bytes.fromhex(field_hex), pinblock.pan_field(pan), strict=True)
    )


# ---------------------------------------------------------------- fields and format 0


def test_textbook_format0_example() -> None:
    assert pinblock.pin_field("1234").hex().upper() == "041234FFFFFFFFFF"
    assert pinblock.pan_field(PAN).hex() == "0000111111111111"
    assert pinblock.format0("1234", PAN).hex().upper() == "041225EEEEEEEEEE"


def test_twelve_digit_pin() -> None:
    assert pinblock.pin_field("123456789012").hex().upper() == "0C123456789012FF"
    assert pinblock.format0("123456789012", "5555555555554444").hex().upper() == "0C1261032DC546BB"


@pytest.mark.parametrize(
    ("pan", "field"),
    [
        ("6228480402564890018", "0000040256489001"),  # 19 digits: drop check digit, keep 12
        ("1234567890123", "0000123456789012"),  # 13 digits: exactly 12 before the check
        ("12345678", "0000000001234567"),  # 8 digits: 7 before the check, zero padded
    ],
)
def test_pan_field_uses_12_rightmost_digits_before_check_digit(pan: str, field: str) -> None:
    assert pinblock.pan_field(pan).hex() == field


@pytest.mark.parametrize("pin", ["", "123", "1234567890123", "12a4", "12 34", "１２３４", "١٢٣٤"])
def test_pin_field_rejects_bad_pins_without_echoing_them(pin: str) -> None:
    with pytest.raises(PinBlockError, match="4 to 12 decimal digits") as excinfo:
        pinblock.pin_field(pin)
    assert_no_secret(excinfo.value, pin)


@pytest.mark.parametrize("pan", ["", "1234567", "12345678901234567890", "4111-1111-1111-1111"])
def test_pan_field_rejects_bad_pans(pan: str) -> None:
    with pytest.raises(PinBlockError, match="PAN must be 8 to 19 decimal digits"):
        pinblock.pan_field(pan)


# ---------------------------------------------------------------- encrypt / decrypt


def test_encrypted_block_is_sm4_of_format0_and_ff_fill() -> None:
    block = pinblock.encrypt_pin_block(PIN_KEY, "1234", PAN)
    assert len(block) == pinblock.PIN_BLOCK_LEN_BYTES
    clear = sm4.decrypt_ecb(PIN_KEY, block)
    assert clear == bytes.fromhex("041225EEEEEEEEEE") + b"\xff" * 8


@settings(max_examples=100, deadline=None)
@given(pin=pins, pan=pans, key=st.binary(min_size=16, max_size=16))
def test_round_trip(pin: str, pan: str, key: bytes) -> None:
    block = pinblock.encrypt_pin_block(key, pin, pan)
    assert pinblock.decrypt_pin(key, block, pan) == pin


def test_pin_with_leading_zeros_survives() -> None:
    block = pinblock.encrypt_pin_block(PIN_KEY, "0000", PAN)
    assert pinblock.decrypt_pin(PIN_KEY, block, PAN) == "0000"


@pytest.mark.parametrize("length", [0, 8, 15, 17, 32])
def test_decrypt_rejects_wrong_length(length: int) -> None:
    with pytest.raises(PinBlockError, match="must be 16 bytes"):
        pinblock.decrypt_pin(PIN_KEY, bytes(length), PAN)


def test_decrypt_with_wrong_key_reports_bad_fill() -> None:
    block = pinblock.encrypt_pin_block(PIN_KEY, "1234", PAN)
    with pytest.raises(PinBlockError, match="eight 0xFF bytes") as excinfo:
        pinblock.decrypt_pin(bytes(16), block, PAN)
    assert_no_secret(excinfo.value, "1234")


def test_decrypt_with_bad_padding_bytes() -> None:
    clear = pinblock.format0("1234", PAN) + b"\xff" * 7 + b"\x00"
    with pytest.raises(PinBlockError, match="eight 0xFF bytes"):
        pinblock.decrypt_pin(PIN_KEY, sm4.encrypt_ecb(PIN_KEY, clear), PAN)


def test_decrypt_wrong_key_length_is_a_plain_value_error() -> None:
    block = pinblock.encrypt_pin_block(PIN_KEY, "1234", PAN)
    with pytest.raises(ValueError, match="key must be 16 bytes") as excinfo:
        pinblock.decrypt_pin(bytes(8), block, PAN)
    assert not isinstance(excinfo.value, PinBlockError)


@pytest.mark.parametrize(
    ("field_hex", "message"),
    [
        ("141234FFFFFFFFFF", "format is 1"),
        ("341234FFFFFFFFFF", "format is 3"),
        ("031234FFFFFFFFFF", "PIN length 3"),
        ("0D1234567890123F", "PIN length 13"),
        ("0412A4FFFFFFFFFF", "non-decimal PIN digits"),
        ("041234FFFFFFFFFE", "fill after the PIN is not all F"),
        ("0412340FFFFFFFFF", "fill after the PIN is not all F"),
    ],
)
def test_decrypt_names_what_is_wrong(field_hex: str, message: str) -> None:
    with pytest.raises(PinBlockError, match=message) as excinfo:
        pinblock.decrypt_pin(PIN_KEY, raw_block(clear_for(field_hex)), PAN)
    assert_no_secret(excinfo.value, "1234")


def test_decrypt_with_wrong_pan_fails_or_yields_another_pin() -> None:
    block = pinblock.encrypt_pin_block(PIN_KEY, "1234", PAN)
    # With the PAN field XOR-ed in wrongly, the F fill no longer reads as F.
    with pytest.raises(PinBlockError, match="wrong PAN"):
        pinblock.decrypt_pin(PIN_KEY, block, "4111111111111129")


@settings(max_examples=100, deadline=None)
@given(pin=pins, clear=st.binary(min_size=8, max_size=8))
def test_errors_never_contain_the_pin(pin: str, clear: bytes) -> None:
    # Random clear blocks: whatever fails, the message must not carry PIN-like content.
    good = pinblock.encrypt_pin_block(PIN_KEY, pin, PAN)
    for block in (raw_block(clear), good[:8] + bytes(8), good[::-1]):
        try:
            got = pinblock.decrypt_pin(PIN_KEY, block, PAN)
        except PinBlockError as exc:
            assert_no_secret(exc, pin)
        else:
            assert 4 <= len(got) <= 12


def assert_no_secret(exc: BaseException, pin: str) -> None:
    for text in (str(exc), repr(exc)):
        assert not pin or pin not in text
    # A chained exception could smuggle the PIN into a logged traceback.
    assert exc.__cause__ is None
    assert exc.__context__ is None


# ---------------------------------------------------------------- PIN verification values


def test_pvv_is_truncated_hmac_sm3_of_pan_and_pin() -> None:
    from switch.sm3 import hmac_sm3

    pvv = pinblock.pin_verification_value(PVK, PAN, "1234")
    assert pvv == hmac_sm3(PVK, b"4111111111111111|1234")[:16]
    assert len(pvv) == pinblock.PVV_LEN_BYTES


def test_verify_pin_accepts_only_the_right_pin() -> None:
    pvv = pinblock.pin_verification_value(PVK, PAN, "1234")
    assert pinblock.verify_pin(PVK, PAN, "1234", pvv)
    assert not pinblock.verify_pin(PVK, PAN, "1235", pvv)
    assert not pinblock.verify_pin(PVK, PAN, "01234", pvv)
    assert not pinblock.verify_pin(bytes(32), PAN, "1234", pvv)  # other PVK


def test_pvv_is_bound_to_the_pan() -> None:
    pvv = pinblock.pin_verification_value(PVK, PAN, "1234")
    assert not pinblock.verify_pin(PVK, "4111111111111129", "1234", pvv)


@pytest.mark.parametrize(
    ("pan", "pin", "pvv"),
    [
        (PAN, "12a4", None),
        (PAN, "123", None),
        ("41111111", "12345678901234", None),
        ("not-a-pan", "1234", None),
        (PAN, "1234", b""),
        (PAN, "1234", b"\x00" * 16),
        (PAN, "1234", "a string"),
    ],
)
def test_verify_pin_is_false_for_malformed_input(pan: str, pin: str, pvv: bytes | None) -> None:
    stored = pinblock.pin_verification_value(PVK, PAN, "1234") if pvv is None else pvv
    assert pinblock.verify_pin(PVK, pan, pin, stored) is False


def test_short_pvk_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        pinblock.pin_verification_value(b"short", PAN, "1234")


@settings(max_examples=50, deadline=None)
@given(pin=pins, other=pins, pan=pans)
def test_verify_pin_property(pin: str, other: str, pan: str) -> None:
    pvv = pinblock.pin_verification_value(PVK, pan, pin)
    assert pinblock.verify_pin(PVK, pan, pin, pvv)
    assert pinblock.verify_pin(PVK, pan, other, pvv) == (other == pin)


# ---------------------------------------------------------------- an independent terminal

NODE_TERMINAL = r"""
const crypto = require("crypto");
const [keyHex, pin, pan] = process.argv.slice(1);
const pinField = ("0" + pin.length.toString(16) + pin).padEnd(16, "F");
const panField = "0000" + pan.slice(0, -1).slice(-12).padStart(12, "0");
const clear = Buffer.alloc(16, 0xff);
for (let i = 0; i < 8; i++) {
  clear[i] = parseInt(pinField.substr(2 * i, 2), 16) ^ parseInt(panField.substr(2 * i, 2), 16);
}
const cipher = crypto.createCipheriv("sm4-ecb", Buffer.from(keyHex, "hex"), null);
cipher.setAutoPadding(false);
const block = Buffer.concat([cipher.update(clear), cipher.final()]);
console.log(JSON.stringify({ block: block.toString("hex") }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize(("pin", "pan"), [("1234", PAN), ("123456789012", "6228480402564890018")])
def test_block_from_a_node_terminal_decrypts(pin: str, pan: str) -> None:
    # A terminal written against Node's built-in crypto, following CONTRACT.md alone.
    out = subprocess.run(
        ["node", "-e", NODE_TERMINAL, PIN_KEY.hex(), pin, pan],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    block = bytes.fromhex(json.loads(out.stdout)["block"])
    assert block == pinblock.encrypt_pin_block(PIN_KEY, pin, pan)
    assert pinblock.decrypt_pin(PIN_KEY, block, pan) == pin
