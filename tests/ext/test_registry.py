"""The channel registry the HTTP callback server routes /notify/<channel> through."""

from __future__ import annotations

import pytest

import ext
from ext import AlipayConfig, EcnyConfig, Registry, WechatConfig
from ext.errors import UnknownChannel
from ext.records import CHANNELS
from switch import sm2
from tests.ext.conftest import public_pem


def test_every_channel_has_an_adapter():
    assert tuple(ext.ADAPTER_TYPES) == CHANNELS == ("wechat", "alipay", "unionpay", "ecny")


def test_registry_routes_by_channel(channel_key):
    registry = Registry.from_configs(
        [
            WechatConfig(mch_id="1900000109", app_id="wx1", api_version="v2", api_key="k" * 32),
            AlipayConfig(app_id="2021000117600001", alipay_public_key=public_pem(channel_key)),
            EcnyConfig(merchant_no="M1", platform_keys={"K": sm2.generate_keypair()[1]}),
        ]
    )
    assert registry.channels() == ("wechat", "alipay", "ecny")
    assert registry["alipay"].ack(True).body == b"success"
    assert "wechat" in registry and "unionpay" not in registry
    with pytest.raises(UnknownChannel):
        registry["unionpay"]
    with pytest.raises(UnknownChannel):
        registry["../admin"]


def test_registry_refuses_duplicates_and_strangers(channel_key):
    config = AlipayConfig(app_id="2021000117600001", alipay_public_key=public_pem(channel_key))
    with pytest.raises(ValueError):
        Registry.from_configs([config, config])
    with pytest.raises(TypeError):
        Registry.from_configs([object()])  # type: ignore[list-item]
