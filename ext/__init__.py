"""Payment-channel adapters: each channel's signed notifications and daily statements, verified and
turned into the normalized clearing records (ext.records, proto fuelswitch.v1 Clearing).

The HTTP callback server builds one adapter per configured channel, routes ``/notify/<channel>``
through a `Registry`, and answers each notification with `adapter.ack(...)`:

    registry = Registry.from_configs([WechatConfig(...), AlipayConfig(...)])
    adapter = registry[channel]            # UnknownChannel -> 404
    try:
        record = adapter.parse_notification(headers, body, now_ms=clock_ms())
    except NotificationIgnored:
        answer = adapter.ack(True)         # authentic, not a money event: stop the retries
    except ChannelError:
        answer = adapter.ack(False)        # forged, malformed or not ours: the channel retries
    else:
        ...submit record.to_proto() to Clearing; ack(True) once it answered (even "duplicate")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from ext.alipay import AlipayAdapter, AlipayConfig
from ext.ecny import EcnyAdapter, EcnyConfig
from ext.errors import UnknownChannel
from ext.records import CHANNELS, Payment, Refund, StatementLine
from ext.unionpay import UnionpayAdapter, UnionpayConfig
from ext.wechat import WechatAdapter, WechatConfig
from ext.wire import Ack

__all__ = [
    "ADAPTER_TYPES",
    "AlipayAdapter",
    "AlipayConfig",
    "ChannelAdapter",
    "EcnyAdapter",
    "EcnyConfig",
    "Registry",
    "UnionpayAdapter",
    "UnionpayConfig",
    "WechatAdapter",
    "WechatConfig",
]

ChannelConfig = WechatConfig | AlipayConfig | UnionpayConfig | EcnyConfig


class ChannelAdapter(Protocol):
    """What every adapter offers the callback server and the reconciliation job."""

    @property
    def channel(self) -> str: ...

    def parse_notification(
        self, headers: Mapping[str, str], body: bytes, *, now_ms: int | None = None
    ) -> Payment | Refund: ...

    def ack(self, ok: bool) -> Ack: ...

    def parse_statement(
        self, data: bytes, *, business_date: str | None = None
    ) -> Iterator[StatementLine]: ...


# Channel name -> (config type, adapter type): the one place a new channel is registered.
ADAPTER_TYPES: Mapping[str, tuple[type[ChannelConfig], Callable[[Any], ChannelAdapter]]] = {
    "wechat": (WechatConfig, WechatAdapter),
    "alipay": (AlipayConfig, AlipayAdapter),
    "unionpay": (UnionpayConfig, UnionpayAdapter),
    "ecny": (EcnyConfig, EcnyAdapter),
}
assert tuple(ADAPTER_TYPES) == CHANNELS


class Registry:
    """Channel name -> configured adapter; each channel at most once."""

    def __init__(self, adapters: Iterable[ChannelAdapter]) -> None:
        self._adapters: dict[str, ChannelAdapter] = {}
        for adapter in adapters:
            if adapter.channel not in CHANNELS:
                raise ValueError(f"unknown channel {adapter.channel!r}")
            if adapter.channel in self._adapters:
                raise ValueError(f"channel {adapter.channel!r} registered twice")
            self._adapters[adapter.channel] = adapter

    @classmethod
    def from_configs(cls, configs: Iterable[ChannelConfig]) -> Registry:
        adapters = []
        for config in configs:
            for config_type, adapter_type in ADAPTER_TYPES.values():
                if isinstance(config, config_type):
                    adapters.append(adapter_type(config))
                    break
            else:
                raise TypeError(f"not a channel configuration: {type(config).__name__}")
        return cls(adapters)

    def __getitem__(self, channel: str) -> ChannelAdapter:
        try:
            return self._adapters[channel]
        except KeyError:
            raise UnknownChannel(f"no adapter for channel {channel!r}") from None

    def __contains__(self, channel: object) -> bool:
        return channel in self._adapters

    def channels(self) -> tuple[str, ...]:
        return tuple(self._adapters)
