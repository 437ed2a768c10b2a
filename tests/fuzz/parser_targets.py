"""Coverage-guided fuzz targets (atheris / libFuzzer) for the parsers that read bytes from outside.

Run one target:  .venv/bin/python tests/fuzz/parser_targets.py TARGET [libFuzzer flags] [corpus dirs]
Write its seeds: .venv/bin/python tests/fuzz/parser_targets.py --seeds TARGET DIR
List targets:    .venv/bin/python tests/fuzz/parser_targets.py --list
tests/fuzz/test_parser_fuzz.py runs each for a bounded number of inputs; for a long hunt, e.g.
  .venv/bin/python tests/fuzz/parser_targets.py wechat_bill -max_total_time=600 corpus/

Targets and the only exceptions they may raise (everything else is a finding, and atheris stops
with the traceback and a crash-* file holding the input):

- `pinblock`     switch/pinblock.py: decrypt_pin over any clear block and PAN (the block is SM4-
                 encrypted first, so that the format checks, not the key, see the bytes), the same
                 for raw blocks, format0/verify_pin with fuzzed PIN and PAN text -> PinBlockError
- `wechat_v2`    WeChat Pay v2 XML notification as sent, and the same fields re-signed with the
                 merchant key (so that the mapping behind the signature is reached) -> ChannelError
- `wechat_v3`    v3 JSON: the input as body, and as the decrypted resource of an envelope that is
                 encrypted and RSA-signed here -> ChannelError
- `alipay`       Alipay form notification as sent, and re-signed (RSA2) -> ChannelError
- `unionpay`     UnionPay ACP form as sent, and re-signed with a certificate of a test PKI
- `ecny`         e-CNY JSON notification, SM2-signed here -> ChannelError
- `wechat_bill`, `alipay_statement`, `unionpay_zm`, `ecny_statement`: statement files, read to the
                 end -> ChannelError (StatementInvalid, SummaryMismatch, AmountInvalid, TimeInvalid)

Seeds are the valid fixtures of tests/ext (notifications, statements) and valid PIN blocks.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

import atheris  # noqa: E402

with atheris.instrument_imports(include=["ext", "switch"]):
    from ext import alipay as alipay_mod  # noqa: E402
    from ext import ecny as ecny_mod  # noqa: E402
    from ext import unionpay as unionpay_mod  # noqa: E402
    from ext import wechat_v2, wechat_v3  # noqa: E402, F401
    from ext.alipay_statement import parse_business_statement  # noqa: E402
    from ext.ecny_statement import parse_ecny_statement  # noqa: E402
    from ext.errors import ChannelError  # noqa: E402
    from ext.flatxml import parse_flat_xml  # noqa: E402
    from ext.unionpay_zm import parse_zm  # noqa: E402
    from ext.wechat import WechatAdapter, WechatConfig  # noqa: E402
    from ext.wechat_bill import parse_bill  # noqa: E402
    from ext.wire import parse_form  # noqa: E402
    from switch import pinblock  # noqa: E402

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from switch import sm2, sm4  # noqa: E402

PIN_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
PVK = bytes(range(32))
PAN = "9000011234567890127"


class Target:
    """One fuzz target: its input handler and its seeds (built lazily: keys cost time)."""

    def __init__(self, run: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
        self.run, self.seeds = run, seeds


# ------------------------------------------------------------------------------ PIN blocks


def _pin(data: bytes) -> None:
    if len(data) < 16:
        return
    clear, pan = data[:16], data[16:].decode("latin-1")
    for block in (sm4.encrypt_ecb(PIN_KEY, clear), clear):
        try:
            pin = pinblock.decrypt_pin(PIN_KEY, block, pan)
        except pinblock.PinBlockError:
            continue
        assert pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12, "decrypt_pin returned a bad PIN"
        pvv = pinblock.pin_verification_value(PVK, pan, pin)
        assert pinblock.verify_pin(PVK, pan, pin, pvv)
    text = data[16:].decode("utf-8", "replace")
    try:
        pinblock.format0(text[:12], pan)
    except pinblock.PinBlockError:
        pass
    assert pinblock.verify_pin(PVK, pan, text[:12], b"\x00" * 16) in (True, False)


def _pin_seeds() -> list[bytes]:
    seeds = []
    for pin, pan in (("1234", PAN), ("123456", "6216610200016587010"), ("000000000000", "12345678")):
        seeds.append(pinblock.format0(pin, pan) + b"\xff" * 8 + pan.encode())
    return seeds


# ------------------------------------------------------------------------------ notifications


def _tests_ext() -> Any:
    """The ext tests' builders of valid notifications and statements (imported late: pytest, keys)."""
    from tests.ext import test_alipay, test_ecny, test_unionpay, test_wechat
    from tests.ext.conftest import new_rsa_key, public_pem

    return test_wechat, test_alipay, test_unionpay, test_ecny, new_rsa_key, public_pem


class Channels:
    """Adapters configured as in tests/ext, with the keys needed to re-sign fuzzed content."""

    def __init__(self) -> None:
        w, a, u, e, new_rsa_key, public_pem = _tests_ext()
        self.w, self.a, self.u, self.e = w, a, u, e
        self.rsa = new_rsa_key()
        self.v2 = WechatAdapter(WechatConfig(mch_id=w.MCH_ID, app_id=w.APP_ID, api_version="v2", api_key=w.API_KEY))
        self.v3 = WechatAdapter(WechatConfig(mch_id=w.MCH_ID, app_id=w.APP_ID, api_v3_key=w.API_V3_KEY,
                                             platform_keys={w.SERIAL: public_pem(self.rsa)}))
        self.alipay = alipay_mod.AlipayAdapter(alipay_mod.AlipayConfig(
            app_id=a.APP_ID, alipay_public_key=public_pem(self.rsa), seller_id=a.SELLER_ID))
        self.pki = u.Pki()
        self.unionpay = unionpay_mod.UnionpayAdapter(unionpay_mod.UnionpayConfig(
            mer_id=u.MER_ID, root_cert_pem=u.pem(self.pki.root), middle_cert_pem=u.pem(self.pki.middle)))
        self.ecny_private, ecny_public = sm2.generate_keypair()
        self.ecny = ecny_mod.EcnyAdapter(ecny_mod.EcnyConfig(merchant_no=e.MERCHANT_NO,
                                                             platform_keys={e.SERIAL: ecny_public}))


_channels: Channels | None = None


def channels() -> Channels:
    global _channels
    if _channels is None:
        _channels = Channels()
    return _channels


def _expect_channel_error(call: Callable[[], Any]) -> None:
    try:
        call()
    except ChannelError:
        pass


def _wechat_v2(data: bytes) -> None:
    c = channels()
    _expect_channel_error(lambda: c.v2.parse_notification({}, data))
    try:
        fields = parse_flat_xml(data, "xml")
    except ChannelError:
        return
    fields.pop("sign", None)
    fields["sign"] = c.w.v2_sign(fields, c.w.API_KEY, fields.get("sign_type", "MD5"))
    body = "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items() if "]]>" not in v) + "</xml>"
    _expect_channel_error(lambda: c.v2.parse_notification({}, body.encode("utf-8", "surrogatepass")))


def _wechat_v2_seeds() -> list[bytes]:
    w = channels().w
    inner = {"refund_status": "SUCCESS", "refund_id": "50000000382019052709732678859",
             "transaction_id": "4200002501202501150000000001", "refund_fee": "2500",
             "success_time": "2025-01-15 11:00:00"}
    return [w.signed_v2(w.v2_payment_fields()), w.signed_v2(w.v2_payment_fields(), sign_type="HMAC-SHA256"),
            w.v2_refund_body(inner)]


def _v3_request(c: Channels, resource_plain: bytes, original_type: str) -> tuple[dict[str, str], bytes]:
    associated = "transaction" if original_type == "transaction" else "refund"
    nonce = "fdasflkja484"
    ciphertext = AESGCM(c.w.API_V3_KEY.encode()).encrypt(nonce.encode(), resource_plain, associated.encode())
    envelope = c.w.envelope({"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                             "ciphertext": base64.b64encode(ciphertext).decode(), "associated_data": associated,
                             "nonce": nonce})
    return c.w.v3_request(c.rsa, envelope)


def _wechat_v3(data: bytes) -> None:
    c = channels()
    headers, _ = _V3_HEADERS
    _expect_channel_error(lambda: c.v3.parse_notification(headers, data))
    kind = ("transaction", "refund", "other")[data[0] % 3] if data else "transaction"
    headers, body = _v3_request(c, data, kind)
    _expect_channel_error(lambda: c.v3.parse_notification(headers, body))


_V3_HEADERS: tuple[dict[str, str], bytes] = ({}, b"")


def _wechat_v3_seeds() -> list[bytes]:
    global _V3_HEADERS
    c = channels()
    _V3_HEADERS = _v3_request(c, json.dumps(c.w.transaction()).encode(), "transaction")
    refund = {"mchid": c.w.MCH_ID, "refund_status": "SUCCESS", "refund_id": "50000000382019052709732678859",
              "transaction_id": "4200002501202501150000000001", "success_time": "2025-01-15T11:00:00+08:00",
              "amount": {"refund": 2500, "currency": "CNY"}}
    # The first byte picks the resource type: '{' (123 % 3 == 0) a transaction, '\n' (10 % 3 == 1) a refund.
    return [json.dumps(c.w.transaction()).encode(), b"\n" + json.dumps(refund).encode()]


def _alipay(data: bytes) -> None:
    c = channels()
    _expect_channel_error(lambda: c.alipay.parse_notification({}, data))
    try:
        params = parse_form(data, "utf-8")
    except ChannelError:
        return
    params["charset"] = "utf-8"
    try:
        body = c.a.form(c.a.sign_params(c.rsa, params))
    except UnicodeEncodeError:  # a lone surrogate: the harness cannot sign it, nor could Alipay
        return
    _expect_channel_error(lambda: c.alipay.parse_notification({}, body))


def _alipay_seeds() -> list[bytes]:
    c = channels()
    return [c.a.form(c.a.sign_params(c.rsa, c.a.paid())), c.a.form(c.a.sign_params(c.rsa, c.a.refunded()))]


def _unionpay(data: bytes) -> None:
    c = channels()
    _expect_channel_error(lambda: c.unionpay.parse_notification({}, data, now_ms=c.u.NOW_MS))
    try:
        params = parse_form(data, "utf-8")
    except ChannelError:
        return
    params.pop("signature", None)
    params.pop("signPubKeyCert", None)
    try:
        body = c.u.signed(params, c.pki.sign_key, c.pki.sign_cert)
    except UnicodeEncodeError:
        return
    _expect_channel_error(lambda: c.unionpay.parse_notification({}, body, now_ms=c.u.NOW_MS))


def _unionpay_seeds() -> list[bytes]:
    c = channels()
    consume = c.u.consume()
    refund = c.u.consume(txnType="04", origQryId="772501101000000000077")
    return [urlencode(consume).encode(), urlencode(refund).encode()]


def _ecny(data: bytes) -> None:
    c = channels()
    timestamp, nonce = 1736906405, "c9f0f895fb98ab91"
    signature = sm2.sign(c.ecny_private, f"{timestamp}\n{nonce}\n".encode() + data + b"\n")
    headers = {"Ecny-Timestamp": str(timestamp), "Ecny-Nonce": nonce, "Ecny-Serial": c.e.SERIAL,
               "Ecny-Signature": base64.b64encode(signature).decode()}
    _expect_channel_error(lambda: c.ecny.parse_notification(headers, data))


def _ecny_seeds() -> list[bytes]:
    e = channels().e
    refund = e.payment(event_type="REFUND", txn_no="E202501150000000009", orig_txn_no="E202501100000000077",
                       amount=2500, fee=1, finish_time="2025-01-15T11:00:00+08:00", attach=None)
    return [json.dumps(e.payment(), ensure_ascii=False).encode(), json.dumps(refund, ensure_ascii=False).encode()]


# ------------------------------------------------------------------------------ statements


def _statement(parse: Callable[[bytes], Any]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        try:
            for _ in parse(data):
                pass
        except ChannelError:
            pass

    return run


def _zm(data: bytes) -> Any:
    return parse_zm(data, mer_id=channels().u.MER_ID, business_date="2025-01-15")


def _ecny_statement(data: bytes) -> Any:
    return parse_ecny_statement(data, merchant_no=channels().e.MERCHANT_NO, business_date="2025-01-15")


TARGETS: dict[str, Target] = {
    "pinblock": Target(_pin, _pin_seeds),
    "wechat_v2": Target(_wechat_v2, _wechat_v2_seeds),
    "wechat_v3": Target(_wechat_v3, _wechat_v3_seeds),
    "alipay": Target(_alipay, _alipay_seeds),
    "unionpay": Target(_unionpay, _unionpay_seeds),
    "ecny": Target(_ecny, _ecny_seeds),
    "wechat_bill": Target(_statement(lambda d: parse_bill(d, business_date="2025-01-15")),
                          lambda: [channels().w.bill(), channels().w.bill(newline="\n")]),
    "alipay_statement": Target(_statement(lambda d: parse_business_statement(d, business_date=None)),
                               lambda: [channels().a.statement()]),
    "unionpay_zm": Target(_statement(_zm), lambda: [channels().u.ZM]),
    "ecny_statement": Target(_statement(_ecny_statement), lambda: [channels().e.ecny_statement()]),
}


def write_seeds(name: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = TARGETS[name].seeds()
    for n, seed in enumerate(seeds):
        (directory / f"seed-{n}").write_bytes(seed)
    return len(seeds)


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--list"]:
        print(" ".join(TARGETS))
        return
    if argv[1:2] == ["--seeds"]:
        print(write_seeds(argv[2], Path(argv[3])))
        return
    target = TARGETS[argv[1]]
    if argv[1] != "pinblock":
        target.seeds()  # keys and adapters made before fuzzing; wechat_v3's raw path reuses the seed's headers
    atheris.Setup([argv[0], *argv[2:]], target.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
