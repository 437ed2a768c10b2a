"""Configuration of `fuelswitch serve`: command-line flags over FUELSWITCH_* variables over a TOML file."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:50051"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
# A station class (CardAdmin.RegisterStation, --hold-ttl-by-class): free text in these characters.
STATION_CLASS_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
HOLD_TTL_S_MIN, HOLD_TTL_S_MAX = 60, 24 * 3600


@dataclass(frozen=True)
class ServeConfig:
    listen: str = DEFAULT_LISTEN
    data_dir: Path = Path("data")
    operator_token: str = ""
    dsn: str = ""  # empty: start the embedded PostgreSQL under data_dir/postgres
    hold_ttl_s: int = 900
    # Hold lifetimes of station classes, "highway=1800,truck=3600" (seconds, 60..86400 each); a class
    # not listed uses hold_ttl_s. In TOML also a table: [hold_ttl_by_class] highway = 1800.
    hold_ttl_by_class: str = ""
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    master_key_file: Path | None = None  # None: FUELSWITCH_MASTER_KEY, else <data_dir>/keys/master.key
    session_ttl_s: int = 24 * 3600
    terminal_requests_per_s: float = 500.0  # per-terminal rate limit (RESOURCE_EXHAUSTED above it)
    terminal_burst: int = 1_000
    max_concurrent_rpcs: int = 4_096  # calls in progress; more get RESOURCE_EXHAUSTED from gRPC itself
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # require client certificates signed by this CA
    settlement_cutoff_hour: int = 0  # business days end at this hour in UTC+8 (0 = midnight)
    settlement_fee_bps: int = 0  # network fee on station sales, basis points
    reconcile_fee_tolerance_fen: int = 0  # channel fee differences up to this are not discrepancies
    channel_fee_bps: str = ""  # contracted channel fee rates, "wechat=60,alipay=60" (basis points)
    metrics_listen: str = ""  # HOST:PORT of the Prometheus /metrics endpoint; empty: off (docs/operations.md)
    log_format: str = "text"  # text (people) or json (one object per line, for log shippers)
    request_log: str = "problems"  # a log line per RPC: all, problems (answers other than 00/10/OK) or off
    db_probe_interval_s: float = 1.0  # how often the health monitor checks the database

    def validate(self) -> ServeConfig:
        if not self.operator_token:
            raise ValueError("an operator token is required (--operator-token or FUELSWITCH_OPERATOR_TOKEN)")
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen must be HOST:PORT, not {self.listen!r}")
        if not HOLD_TTL_S_MIN <= self.hold_ttl_s <= HOLD_TTL_S_MAX:
            raise ValueError("hold_ttl_s must be between 60 and 86400")
        self.hold_ttl_s_by_class()
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.tls_cert is None and host not in LOOPBACK_HOSTS:
            raise ValueError(f"listening on {host} without TLS would send keys and PIN blocks in clear; "
                             "give --tls-cert/--tls-key, or listen on 127.0.0.1")
        if not 60 <= self.session_ttl_s <= 24 * 3600:
            raise ValueError("session_ttl_s must be between 60 and 86400 (terminal keys live at most 24 h)")
        if not 0 <= self.settlement_cutoff_hour <= 23:
            raise ValueError("settlement_cutoff_hour must be an hour of the day, 0..23 (UTC+8)")
        if not 0 <= self.settlement_fee_bps <= 10_000:
            raise ValueError("settlement_fee_bps must be 0..10000 basis points")
        if self.reconcile_fee_tolerance_fen < 0:
            raise ValueError("reconcile_fee_tolerance_fen must not be negative")
        self.channel_fee_rates()
        if self.metrics_listen:
            metrics_host, _, metrics_port = self.metrics_listen.rpartition(":")
            if not metrics_host or not metrics_port.isdigit():
                raise ValueError(f"--metrics-listen must be HOST:PORT, not {self.metrics_listen!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError("log_format must be text or json")
        if self.request_log not in ("all", "problems", "off"):
            raise ValueError("request_log must be all, problems or off")
        if not 0.05 <= self.db_probe_interval_s <= 60:
            raise ValueError("db_probe_interval_s must be between 0.05 and 60")
        return self

    def hold_ttl_s_by_class(self) -> dict[str, int]:
        """`hold_ttl_by_class` as {station class: seconds}; ValueError naming what is wrong."""
        ttls: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in self.hold_ttl_by_class.split(","))):
            station_class, _, seconds = (part.strip() for part in item.partition("="))
            if (not STATION_CLASS_RE.match(station_class) or not seconds.isdigit()
                    or not HOLD_TTL_S_MIN <= int(seconds) <= HOLD_TTL_S_MAX):
                raise ValueError(f"hold_ttl_by_class wants CLASS=SECONDS (class: a-z, 0-9, '_', '-'; seconds "
                                 f"{HOLD_TTL_S_MIN}..{HOLD_TTL_S_MAX}), comma-separated, not {item!r}")
            if station_class in ttls:
                raise ValueError(f"hold_ttl_by_class names {station_class!r} twice")
            ttls[station_class] = int(seconds)
        return ttls

    def channel_fee_rates(self) -> dict[str, int]:
        """`channel_fee_bps` as {channel: basis points}; ValueError naming what is wrong."""
        rates: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in self.channel_fee_bps.split(","))):
            channel, _, bps = item.partition("=")
            if not channel.strip() or not bps.strip().isdigit() or int(bps) > 10_000:
                raise ValueError(f"channel_fee_bps wants CHANNEL=BASIS_POINTS (0..10000), comma-separated, "
                                 f"not {item!r}")
            rates[channel.strip()] = int(bps)
        return rates


def load_config(flags: dict[str, Any], environ: dict[str, str] | None = None) -> ServeConfig:
    """Merge, in rising precedence: defaults, the TOML file (`config`), FUELSWITCH_* variables, flags."""
    environ = dict(os.environ) if environ is None else environ
    merged: dict[str, Any] = {}
    config_file = flags.get("config") or environ.get("FUELSWITCH_CONFIG")
    if config_file:
        with open(config_file, "rb") as f:
            merged.update(tomllib.load(f))
    for field in fields(ServeConfig):
        env = environ.get("FUELSWITCH_" + field.name.upper())
        if env is not None:
            merged[field.name] = env
        if flags.get(field.name) is not None:
            merged[field.name] = flags[field.name]
    unknown = set(merged) - {f.name for f in fields(ServeConfig)}
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    typed: dict[str, Any] = {}
    for field in fields(ServeConfig):
        if field.name in merged:
            default = getattr(ServeConfig(), field.name)
            kind = Path if default is None else type(default)  # every optional setting is a file
            value = merged[field.name]
            if isinstance(value, dict):  # a TOML table for a "KEY=VALUE,..." setting (hold_ttl_by_class)
                value = ",".join(f"{key}={item}" for key, item in value.items())
            typed[field.name] = kind(value)
    return ServeConfig(**typed).validate()
