"""The channels HTTP gateway against a fake Clearing: each channel's success and failure answers, what
reaches Clearing and what does not, and the configuration file. The real switch is in
tests/switch/test_channels_e2e.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ext import AlipayConfig, EcnyConfig, Registry, UnionpayConfig, WechatConfig
from ext.records import Payment, Refund
from switch import sm2
from switch.channel_gateway import build_app, load_config
from tests.ext import test_alipay as ali
from tests.ext import test_ecny as ecny
from tests.ext import test_unionpay as up
from tests.ext import test_wechat as wx
from tests.ext.conftest import new_rsa_key, public_pem

# Every sample notification is of 2025-01-15 10:00 Beijing; UnionPay's certificates are checked at up.NOW.
CLOCK_MS = 1736906405000


@dataclass(frozen=True)
class Case:
    path: str
    headers: dict[str, str]
    body: bytes
    tamper: tuple[bytes, bytes]  # a byte change that breaks the signature
    ok: tuple[int, bytes]  # the channel's success answer
    fail_body: bytes
    now_ms: int = CLOCK_MS


@dataclass
class Keys:
    rsa: object
    pki: up.Pki
    sm2: tuple[str, str]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(new_rsa_key(), up.Pki(), sm2.generate_keypair())


def registries(keys: Keys) -> dict[str, Registry]:
    v2 = WechatConfig(mch_id=wx.MCH_ID, app_id=wx.APP_ID, api_version="v2", api_key=wx.API_KEY)
    v3 = WechatConfig(mch_id=wx.MCH_ID, app_id=wx.APP_ID, api_v3_key=wx.API_V3_KEY,
                      platform_keys={wx.SERIAL: public_pem(keys.rsa)})
    others = [AlipayConfig(app_id=ali.APP_ID, alipay_public_key=public_pem(keys.rsa), seller_id=ali.SELLER_ID),
              UnionpayConfig(mer_id=up.MER_ID, root_cert_pem=up.pem(keys.pki.root),
                             middle_cert_pem=up.pem(keys.pki.middle)),
              EcnyConfig(merchant_no=ecny.MERCHANT_NO, platform_keys={ecny.SERIAL: keys.sm2[1]})]
    return {"v2": Registry.from_configs([v2, *others]), "v3": Registry.from_configs([v3, *others])}


def cases(keys: Keys) -> dict[str, Case]:
    v3_headers, v3_body = wx.v3_request(keys.rsa, wx.envelope(wx.encrypt_resource(wx.transaction(), "transaction")))
    ecny_headers, ecny_body = ecny.request(keys.sm2[0], ecny.payment())
    return {
        "wechat-v2": Case("wechat", {}, wx.signed_v2(wx.v2_payment_fields()),
                          (b"<total_fee><![CDATA[10000]]>", b"<total_fee><![CDATA[90000]]>"),
                          (200, b"<xml><return_code><![CDATA[SUCCESS]]></return_code>"
                                b"<return_msg><![CDATA[OK]]></return_msg></xml>"),
                          b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[FAIL]]></return_msg>"
                          b"</xml>"),
        "wechat-v3": Case("wechat", v3_headers, v3_body, (b"10:00:05", b"10:00:06"), (204, b""),
                          '{"code": "FAIL", "message": "失败"}'.encode()),
        "alipay": Case("alipay", {}, ali.form(ali.sign_params(keys.rsa, ali.paid())),
                       (b"total_amount=100.00", b"total_amount=900.00"), (200, b"success"), b"fail"),
        "unionpay": Case("unionpay", {}, up.signed(up.consume(), keys.pki.sign_key, keys.pki.sign_cert),
                         (b"txnAmt=10000", b"txnAmt=90000"), (200, b"ok"), b"fail", up.NOW_MS),
        "ecny": Case("ecny", ecny_headers, ecny_body, (b'"amount": 10000', b'"amount": 90000'),
                     (200, b'{"code":"SUCCESS"}'), b'{"code":"FAIL"}'),
    }


class FakeClearing:
    """Answers every call with `result`, or raises `error`; records what reached it."""

    def __init__(self, result: str = "applied", error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.calls: list[Payment | Refund] = []

    async def _answer(self, record: Payment | Refund) -> SimpleNamespace:
        self.calls.append(record)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(result=self.result, message="why", transaction_id="7")

    submit_payment = submit_refund = _answer


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="test")


async def post(keys: Keys, name: str, clearing: FakeClearing, *, body: bytes | None = None,
               path: str | None = None) -> tuple[int, bytes, str]:
    case = cases(keys)[name]
    registry = registries(keys)["v2" if name == "wechat-v2" else "v3"]
    app = build_app(registry, clearing, clock_ms=lambda: case.now_ms)
    async with TestClient(TestServer(app)) as client:
        reply = await client.post(f"/notify/{path or case.path}", data=case.body if body is None else body,
                                  headers=case.headers)
        return reply.status, await reply.read(), reply.headers.get("Content-Type", "")


NAMES = ["wechat-v2", "wechat-v3", "alipay", "unionpay", "ecny"]


@pytest.mark.parametrize("name", NAMES)
async def test_a_verified_notification_is_answered_success_after_clearing(keys, name):
    clearing = FakeClearing()
    status, body, _ = await post(keys, name, clearing)
    assert (status, body) == cases(keys)[name].ok
    assert [(type(r), r.amount, r.account_id) for r in clearing.calls] == [(Payment, 10_000, "1001")]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("result", ["duplicate", "conflict"])
async def test_replays_and_conflicts_are_answered_success(keys, name, result):
    status, body, _ = await post(keys, name, FakeClearing(result))
    assert (status, body) == cases(keys)[name].ok


@pytest.mark.parametrize("name", NAMES)
async def test_a_tampered_notification_is_refused_with_400_and_never_reaches_clearing(keys, name, caplog):
    case, clearing = cases(keys)[name], FakeClearing()
    old, new = case.tamper
    assert case.body.count(old) == 1
    with caplog.at_level(logging.WARNING, logger="fuelswitch.channels"):
        status, body, _ = await post(keys, name, clearing, body=case.body.replace(old, new))
    assert (status, body, clearing.calls) == (400, case.fail_body, [])
    assert any(r.levelno == logging.WARNING and "refused" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("clearing", "status"), [
    (FakeClearing(error=rpc_error(grpc.StatusCode.UNAVAILABLE)), 503),
    (FakeClearing(error=rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)), 503),
    (FakeClearing(error=rpc_error(grpc.StatusCode.UNAUTHENTICATED)), 500),
    (FakeClearing("rejected"), 409),
], ids=["unavailable", "deadline", "unauthenticated", "rejected"])
async def test_when_the_switch_did_not_take_it_the_channel_is_told_to_retry(keys, name, clearing, status):
    answer = await post(keys, name, clearing)
    assert answer[:2] == (status, cases(keys)[name].fail_body)


async def test_refunds_go_to_submit_refund(keys):
    headers, body = wx.v3_request(keys.rsa, wx.envelope(wx.encrypt_resource(wx.refund_resource(), "refund"),
                                                        "REFUND.SUCCESS"))
    clearing = FakeClearing()
    app = build_app(registries(keys)["v3"], clearing, clock_ms=lambda: CLOCK_MS)
    async with TestClient(TestServer(app)) as client:
        reply = await client.post("/notify/wechat", data=body, headers=headers)
        assert reply.status == 204
    assert [type(r) for r in clearing.calls] == [Refund]


async def test_ignored_notifications_stop_the_retries_without_moving_money(keys):
    body = ali.form(ali.sign_params(keys.rsa, ali.paid(trade_status="WAIT_BUYER_PAY")))
    clearing = FakeClearing()
    assert (await post(keys, "alipay", clearing, body=body))[:2] == (200, b"success")
    assert clearing.calls == []


async def test_unknown_channels_and_oversized_bodies(keys):
    clearing = FakeClearing()
    assert (await post(keys, "alipay", clearing, path="paypal"))[0] == 404
    assert (await post(keys, "alipay", clearing, body=b"x" * 70_000))[0] == 413
    assert clearing.calls == []


# -- configuration -------------------------------------------------------------------------

def test_config_reads_keys_from_files_and_env_over_file(tmp_path, keys):
    (tmp_path / "ali.pem").write_text(public_pem(keys.rsa))
    (tmp_path / "wx.pem").write_text(public_pem(keys.rsa))
    (tmp_path / "v3.key").write_text(wx.API_V3_KEY + "\n")
    config = tmp_path / "channels.toml"
    config.write_text(f"""
target = "10.0.0.1:50051"
operator_token = "from-file"

[wechat]
mch_id = "{wx.MCH_ID}"
app_id = "{wx.APP_ID}"
api_version = "v3"
api_v3_key_file = "v3.key"
platform_keys_file = {{ "{wx.SERIAL}" = "wx.pem" }}

[alipay]
app_id = "{ali.APP_ID}"
alipay_public_key_file = "ali.pem"

[ecny]
merchant_no = "{ecny.MERCHANT_NO}"
platform_keys = {{ "{ecny.SERIAL}" = "{keys.sm2[1]}" }}
""")
    loaded = load_config(config, {"listen": "127.0.0.1:9000"}, environ={"FUELSWITCH_OPERATOR_TOKEN": "from-env"})
    assert loaded.registry.channels() == ("wechat", "alipay", "ecny")
    assert (loaded.listen, loaded.target, loaded.operator_token) == ("127.0.0.1:9000", "10.0.0.1:50051", "from-env")


@pytest.mark.parametrize(("text", "message"), [
    ('[paypal]\nkey = "x"\n', "unknown keys"),
    ('operator_token = "t"\n', "no channel"),
    ('[alipay]\napp_id = "1"\nalipay_public_key = "not a key"\n', None),
    ('operator_token = "t"\n[alipay]\napp_id = "1"\nalipay_public_key = "k"\nsign_type = "RSA"\n', "alipay"),
    ('[ecny]\nmerchant_no = "M1"\nplatform_keys = { k = "04ab" }\n', None),
])
def test_config_errors_are_refused_at_start(tmp_path, text, message):
    config = tmp_path / "channels.toml"
    config.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(config, environ={"FUELSWITCH_OPERATOR_TOKEN": "t"})


def test_config_needs_an_operator_token(tmp_path, keys):
    config = tmp_path / "channels.toml"
    config.write_text(f'[ecny]\nmerchant_no = "M1"\nplatform_keys = {{ k = "{keys.sm2[1]}" }}\n')
    with pytest.raises(ValueError, match="operator token"):
        load_config(config, environ={})
