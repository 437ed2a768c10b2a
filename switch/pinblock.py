"""ISO 9564-1 format 0 PIN blocks under SM4, and keyed PIN verification values.

Wire layout (CONTRACT.md "Encodings"): the 8-byte format-0 block (PIN field XOR PAN
field) followed by eight 0xFF bytes, encrypted with SM4-ECB under the session PIN key.

PINs are checked the way an HSM does with a PIN verification key (PVK): the host keeps
only HMAC-SM3(PVK, PAN "|" PIN), never the PIN.

No PIN ever appears in an exception message: errors say what is wrong with a block,
never what it holds.
"""

from __future__ import annotations

import hmac
import re

from switch import sm3, sm4

PIN_LEN_MIN_DIGITS = 4
PIN_LEN_MAX_DIGITS = 12
# ISO/IEC 7812-1 card numbers are 8 to 19 digits.
PAN_LEN_MIN_DIGITS = 8
PAN_LEN_MAX_DIGITS = 19
FORMAT0_LEN_BYTES = 8
PIN_BLOCK_LEN_BYTES = 16
PVV_LEN_BYTES = 16
PVK_LEN_MIN_BYTES = 16

# The PAN field uses the 12 rightmost PAN digits excluding the check digit.
_PAN_FIELD_DIGITS = 12
_FORMAT0_CONTROL = "0"
_FILL_BYTES = b"\xff" * (PIN_BLOCK_LEN_BYTES - FORMAT0_LEN_BYTES)
_FIELD_LEN_NIBBLES = 2 * FORMAT0_LEN_BYTES
# ASCII digits only: str.isdigit() would also accept "²" or Arabic-Indic digits.
_DIGITS_RE = re.compile(r"[0-9]+")


class PinBlockError(ValueError):
    """A malformed PIN, PAN or PIN block. The message never contains the PIN."""


def _is_digits(text: object, len_min: int, len_max: int) -> bool:
    return (
        isinstance(text, str)
        and len_min <= len(text) <= len_max
        and _DIGITS_RE.fullmatch(text) is not None
    )


def _check_pin(pin: str) -> None:
    if not _is_digits(pin, PIN_LEN_MIN_DIGITS, PIN_LEN_MAX_DIGITS):
        raise PinBlockError(
            f"PIN must be {PIN_LEN_MIN_DIGITS} to {PIN_LEN_MAX_DIGITS} decimal digits"
        )


def _check_pan(pan: str) -> None:
    # The PAN is card data too: say what is wrong, never echo it.
    if not _is_digits(pan, PAN_LEN_MIN_DIGITS, PAN_LEN_MAX_DIGITS):
        raise PinBlockError(
            f"PAN must be {PAN_LEN_MIN_DIGITS} to {PAN_LEN_MAX_DIGITS} decimal digits"
        )


def pin_field(pin: str) -> bytes:
    """The 8-byte format-0 PIN field: 0, PIN length, PIN digits, F fill."""
    _check_pin(pin)
    return bytes.fromhex(f"{_FORMAT0_CONTROL}{len(pin):X}{pin}".ljust(_FIELD_LEN_NIBBLES, "F"))


def pan_field(pan: str) -> bytes:
    """The 8-byte PAN field: 0000 then the 12 rightmost digits before the check digit."""
    _check_pan(pan)
    digits = pan[:-1][-_PAN_FIELD_DIGITS:].rjust(_PAN_FIELD_DIGITS, "0")
    return bytes.fromhex("0000" + digits)


def format0(pin: str, pan: str) -> bytes:
    """The 8-byte ISO 9564-1 format 0 block: PIN field XOR PAN field."""
    return _xor(pin_field(pin), pan_field(pan))


def encrypt_pin_block(pin_key16: bytes, pin: str, pan: str) -> bytes:
    """The 16-byte encrypted PIN block a terminal sends: SM4-ECB(format 0 || 8 x 0xFF)."""
    return sm4.encrypt_ecb(pin_key16, format0(pin, pan) + _FILL_BYTES)


def decrypt_pin(pin_key16: bytes, encrypted16: bytes, pan: str) -> str:
    """The PIN inside an encrypted PIN block, or PinBlockError saying what is wrong.

    A wrong PIN key almost always shows as bad 0xFF fill; a wrong PAN as bad digits or
    fill (or, rarely, a different valid-looking PIN that then fails verification).
    ValueError (not PinBlockError) if the key is not 16 bytes: that is a host bug.
    """
    if len(encrypted16) != PIN_BLOCK_LEN_BYTES:
        raise PinBlockError(
            f"encrypted PIN block must be {PIN_BLOCK_LEN_BYTES} bytes, got {len(encrypted16)}"
        )
    pan_bytes = pan_field(pan)
    clear = sm4.decrypt_ecb(pin_key16, bytes(encrypted16))
    if clear[FORMAT0_LEN_BYTES:] != _FILL_BYTES:
        raise PinBlockError(
            "PIN block does not end in eight 0xFF bytes (wrong PIN key or block layout)"
        )
    field = _xor(clear[:FORMAT0_LEN_BYTES], pan_bytes).hex().upper()
    if field[0] != _FORMAT0_CONTROL:
        raise PinBlockError(f"PIN block format is {field[0]}; only format 0 is accepted")
    pin_len = int(field[1], 16)
    if not PIN_LEN_MIN_DIGITS <= pin_len <= PIN_LEN_MAX_DIGITS:
        raise PinBlockError(
            f"PIN length {pin_len} in PIN block is outside "
            f"{PIN_LEN_MIN_DIGITS}-{PIN_LEN_MAX_DIGITS}"
        )
    pin = field[2 : 2 + pin_len]
    if _DIGITS_RE.fullmatch(pin) is None:
        raise PinBlockError("PIN block holds non-decimal PIN digits (wrong PAN?)")
    if field[2 + pin_len :] != "F" * (_FIELD_LEN_NIBBLES - 2 - pin_len):
        raise PinBlockError("PIN block fill after the PIN is not all F (wrong PAN?)")
    return pin


def pin_verification_value(pvk: bytes, pan: str, pin: str) -> bytes:
    """HMAC-SM3(pvk, PAN "|" PIN) truncated to 16 bytes: what the host stores per card.

    Bound to the PAN so that a PVV copied to another card does not verify there.
    """
    if len(pvk) < PVK_LEN_MIN_BYTES:
        raise ValueError(f"PVK must be at least {PVK_LEN_MIN_BYTES} bytes, got {len(pvk)}")
    _check_pan(pan)
    _check_pin(pin)
    return sm3.hmac_sm3(pvk, f"{pan}|{pin}".encode("ascii"))[:PVV_LEN_BYTES]


def verify_pin(pvk: bytes, pan: str, pin: str, pvv: bytes) -> bool:
    """True when `pin` matches the stored `pvv`; constant-time in the PVV.

    A malformed PIN or PAN is simply not a match (False); a short PVK raises ValueError.
    """
    try:
        expected = pin_verification_value(pvk, pan, pin)
    except PinBlockError:
        return False
    if not isinstance(pvv, bytes):
        return False
    return hmac.compare_digest(expected, pvv)


def _xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))
