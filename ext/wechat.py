"""WeChat Pay (微信支付) adapter: API v2 or v3 notifications, and the daily trade bill.

A merchant is configured for one API version; notifications of the other version are refused, so
a v3 merchant cannot be attacked through v2's weaker MD5 scheme. See ext.wechat_v2, ext.wechat_v3
and ext.wechat_bill for the formats, and docs/channels.md for the field mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ext import wechat_v2, wechat_v3
from ext.flatxml import cdata_xml
from ext.records import Payment, Refund, StatementLine
from ext.wechat_bill import parse_bill
from ext.wire import Ack, check_body

CHANNEL = "wechat"
# WeChat's own recommendation for the v3 timestamp check is five minutes.
TIMESTAMP_SKEW_MAX_S = 300


@dataclass(frozen=True)
class WechatConfig:
    """One WeChat Pay merchant (商户号) and the keys of its API version."""

    mch_id: str
    app_id: str
    api_version: Literal["v2", "v3"] = "v3"
    api_key: str = ""  # v2: the 32-character API key (API密钥)
    v2_sign_types: tuple[str, ...] = wechat_v2.SIGN_TYPES
    api_v3_key: str = ""  # v3: the 32-byte APIv3 key
    # v3: Wechatpay-Serial -> platform certificate or WeChat Pay public key, PEM.
    platform_keys: Mapping[str, str] = field(default_factory=dict)
    timestamp_skew_max_s: int = TIMESTAMP_SKEW_MAX_S

    def __post_init__(self) -> None:
        if not self.mch_id or not self.app_id:
            raise ValueError("mch_id and app_id are required")
        if self.api_version == "v2":
            if not self.api_key or not set(self.v2_sign_types) <= set(wechat_v2.SIGN_TYPES):
                raise ValueError(f"v2 needs api_key and sign types among {wechat_v2.SIGN_TYPES}")
        elif self.api_version == "v3":
            if (
                len(self.api_v3_key.encode()) != wechat_v3.API_V3_KEY_BYTES
                or not self.platform_keys
            ):
                raise ValueError("v3 needs a 32-byte api_v3_key and at least one platform key")
        else:
            raise ValueError(f"api_version must be 'v2' or 'v3', not {self.api_version!r}")


class WechatAdapter:
    channel = CHANNEL

    def __init__(self, config: WechatConfig) -> None:
        self.config = config
        # Parse the PEMs once: a bad key is a start-up error, not a per-notification one.
        self._keys = {
            serial: wechat_v3.load_platform_key(pem) for serial, pem in config.platform_keys.items()
        }

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now_ms: int | None = None
    ) -> Payment | Refund:
        """Verify, then map. `now_ms` turns on v3's timestamp check (the v2 scheme has none)."""
        check_body(body)
        config = self.config
        if config.api_version == "v2":
            return wechat_v2.parse(
                body,
                api_key=config.api_key,
                sign_types=config.v2_sign_types,
                mch_id=config.mch_id,
                app_id=config.app_id,
            )
        return wechat_v3.parse(
            headers,
            body,
            keys=self._keys,
            api_v3_key=config.api_v3_key.encode(),
            mch_id=config.mch_id,
            app_id=config.app_id,
            now_ms=now_ms,
            skew_max_s=config.timestamp_skew_max_s,
        )

    def ack(self, ok: bool) -> Ack:
        """v2: XML return_code SUCCESS/FAIL (HTTP 200). v3: 204 without body, or 500 with a JSON error."""
        if self.config.api_version == "v2":
            code = "SUCCESS" if ok else "FAIL"
            return Ack(
                200,
                "application/xml",
                cdata_xml({"return_code": code, "return_msg": "OK" if ok else "FAIL"}),
            )
        if ok:
            return Ack(204, "", b"")
        error = json.dumps({"code": "FAIL", "message": "失败"}, ensure_ascii=False).encode()
        return Ack(500, "application/json", error)

    def parse_statement(
        self, data: bytes, *, business_date: str | None = None
    ) -> Iterator[StatementLine]:
        """The trade bill of `business_date` (the bill_date downloaded; the file itself has none)."""
        return parse_bill(data, business_date=business_date)
