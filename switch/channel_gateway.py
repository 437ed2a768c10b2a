"""`fuelswitch channels serve`: the HTTP callback server the payment channels notify.

`POST /notify/<channel>` (wechat, alipay, unionpay, ecny): the channel's adapter (ext/) verifies the
notification and maps it to a normalized record, the record goes to the switch through Clearing,
and only once Clearing has answered (the switch answers after the credit is durable) is the channel
told "success" in its own format. Every refusal is the channel's failure answer, so it sends the
notification again later; the HTTP status says why:

    400  forged or malformed (signature, certificate, merchant, attach): logged as a WARNING
    409  the switch rejected it for now (a refund ahead of its payment, an unknown account, ...)
    503  the switch is unreachable, recovering or busy
    500  the switch refused the call itself (wrong operator token, invalid field): logged as an ERROR

A replay is answered "success" again: Clearing is exactly-once by (channel, channel transaction id),
so it reports "duplicate" and moves nothing. A "conflict" (same id, other content) is answered
"success" too, as docs/clearing.md §2.4 says: retrying cannot help, finance sees it at reconciliation.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from aiohttp import web

from ext import ADAPTER_TYPES, ChannelAdapter, Registry
from ext.errors import ChannelError, NotificationIgnored
from ext.records import Payment, Refund
from ext.wire import NOTIFICATION_BODY_MAX_BYTES, Ack

log = logging.getLogger("fuelswitch.channels")

ENV_TOKEN = "FUELSWITCH_OPERATOR_TOKEN"
ENV_TARGET = "FUELSWITCH_TARGET"
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_TARGET = "127.0.0.1:50051"
CALL_TIMEOUT_S = 10.0  # channels give up on an answer after 5-30 s; they then retry anyway
SHUTDOWN_GRACE_S = 10.0
REFUSED, REJECTED, UNAVAILABLE, FAILED = 400, 409, 503, 500
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED})
SETTINGS = ("listen", "target", "operator_token", "call_timeout_s", "target_ca")


class Clearing(Protocol):
    """What the gateway needs of switch.clearing_client.ClearingClient (a fake in unit tests)."""

    async def submit_payment(self, payment: Any) -> Any: ...
    async def submit_refund(self, refund: Any) -> Any: ...


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def failure(adapter: ChannelAdapter, status: int) -> web.Response:
    """The channel's own failure answer, under an HTTP status that says why."""
    return _response(adapter.ack(False)._replace(status=status))


def _response(ack: Ack) -> web.Response:
    if not ack.body:
        return web.Response(status=ack.status)
    return web.Response(status=ack.status, body=ack.body, content_type=ack.content_type)


def build_app(registry: Registry, clearing: Clearing, clock_ms: Callable[[], int] = wall_clock_ms) -> web.Application:
    async def notify(request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        if channel not in registry:
            return web.Response(status=404, text=f"no channel {channel!r} configured\n")
        adapter = registry[channel]
        body = await request.read()  # over client_max_size: 413 from aiohttp, before we parse anything
        try:
            record = adapter.parse_notification(request.headers, body, now_ms=clock_ms())
        except NotificationIgnored as exc:  # authentic, not a money event: stop the channel's retries
            log.info("%s notification ignored (%s): %s", channel, exc.native_status, exc)
            return _response(adapter.ack(True))
        except ChannelError as exc:
            log.warning("%s notification refused from %s: %s: %s", channel, request.remote,
                        type(exc).__name__, exc)
            return failure(adapter, REFUSED)
        try:
            if isinstance(record, Payment):
                answer = await clearing.submit_payment(record)
            else:
                answer = await clearing.submit_refund(record)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in RETRYABLE:
                log.warning("%s %s: the switch did not take it (%s); the channel will retry", channel,
                            _key(record), exc.code().name)
                return failure(adapter, UNAVAILABLE)
            log.error("%s %s: the switch refused the call: %s: %s", channel, _key(record), exc.code().name,
                      exc.details())
            return failure(adapter, FAILED)
        if answer.result == "rejected":
            log.warning("%s %s rejected by the switch: %s", channel, _key(record), answer.message)
            return failure(adapter, REJECTED)
        log.info("%s %s: %s (transaction %s)", channel, _key(record), answer.result, answer.transaction_id)
        return _response(adapter.ack(True))

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=NOTIFICATION_BODY_MAX_BYTES)
    app.router.add_post("/notify/{channel}", notify)
    app.router.add_get("/healthz", health)
    return app


def _key(record: Payment | Refund) -> str:
    if isinstance(record, Payment):
        return f"payment {record.channel_txn_id} ({record.amount} fen to account {record.account_id})"
    return f"refund {record.channel_refund_id} ({record.amount} fen of {record.channel_txn_id})"


# -- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayConfig:
    registry: Registry
    listen: str = DEFAULT_LISTEN
    target: str = DEFAULT_TARGET
    operator_token: str = ""
    call_timeout_s: float = CALL_TIMEOUT_S
    target_ca: str = ""  # PEM file: reach the switch over TLS


def load_config(path: str | Path, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> GatewayConfig:
    """The TOML file (settings and one table per channel), FUELSWITCH_* variables over it, flags over both.

    In a channel table, `<field>_file = "path"` reads the field from a file (relative to the TOML
    file), and a table of paths does so for a mapping such as `platform_keys`: keys stay out of the
    configuration text.
    """
    path = Path(path)
    environ = dict(os.environ) if environ is None else environ
    with path.open("rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - set(SETTINGS) - set(ADAPTER_TYPES)
    if unknown:
        raise ValueError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    configs = []
    for channel, (config_type, _) in ADAPTER_TYPES.items():
        if channel in data:
            fields = _with_files(data[channel], path.parent, channel)
            try:
                configs.append(config_type(**fields))
            except TypeError as exc:
                raise ValueError(f"[{channel}]: {exc}") from None
    if not configs:
        raise ValueError(f"{path}: no channel configured (tables {', '.join(ADAPTER_TYPES)})")
    settings = {k: data[k] for k in SETTINGS if k in data}
    for key, variable in (("operator_token", ENV_TOKEN), ("target", ENV_TARGET)):
        if environ.get(variable):
            settings[key] = environ[variable]
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = GatewayConfig(registry=Registry.from_configs(configs), **settings)
    if not config.operator_token:
        raise ValueError(f"an operator token is required (--token, {ENV_TOKEN} or operator_token)")
    if not 0 < float(config.call_timeout_s) <= 60:
        raise ValueError("call_timeout_s must be 0..60 s")
    return config


def _with_files(table: dict[str, Any], base: Path, channel: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in table.items():
        if key.endswith("_file"):
            name = key.removesuffix("_file")
            if isinstance(value, dict):
                fields[name] = {k: _read(base, v, channel, key) for k, v in value.items()}
            else:
                fields[name] = _read(base, value, channel, key)
        else:
            fields[key] = tuple(value) if isinstance(value, list) else value
    return fields


def _read(base: Path, name: Any, channel: str, key: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"[{channel}] {key}: a file name is expected")
    return (base / name).read_text().strip()


# -- running --------------------------------------------------------------------------------


async def serve(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    from switch.clearing_client import ClearingClient

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if config.target_ca:
        credentials = grpc.ssl_channel_credentials(Path(config.target_ca).read_bytes())
        channel = grpc.aio.secure_channel(config.target, credentials)
    else:
        channel = grpc.aio.insecure_channel(config.target)
    async with channel:
        client = ClearingClient(channel, config.operator_token, timeout_s=float(config.call_timeout_s))
        runner = web.AppRunner(build_app(config.registry, client), access_log=None,
                               shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        host, _, port = config.listen.rpartition(":")
        site = web.TCPSite(runner, host.strip("[]"), int(port))
        await site.start()
        bound = runner.addresses[0]
        print(f"fuelswitch channels listening on {host}:{bound[1]}", flush=True)
        log.info("channels %s, switch at %s", ", ".join(config.registry.channels()), config.target)
        try:
            await stop.wait()
        finally:
            # Stop taking notifications, let those in flight get their Clearing answer.
            await runner.cleanup()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fuelswitch channels",
                                     description="payment-channel notifications into Clearing")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="run the HTTP callback server (POST /notify/<channel>)")
    p.add_argument("--config", required=True, help="TOML file: channel keys and settings (docs/clearing.md §9)")
    p.add_argument("--listen", help=f"HOST:PORT for HTTP (default {DEFAULT_LISTEN})")
    p.add_argument("--target", help=f"gRPC address of the switch (${ENV_TARGET}; default {DEFAULT_TARGET})")
    p.add_argument("--token", dest="operator_token", help=f"operator token (prefer ${ENV_TOKEN})")
    p.add_argument("--target-ca", dest="target_ca", help="PEM CA of the switch's TLS certificate")
    p.add_argument("--call-timeout-s", dest="call_timeout_s", type=float,
                   help=f"deadline of each Clearing call (default {CALL_TIMEOUT_S:g})")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: getattr(args, k) for k in SETTINGS if k in vars(args)}
    try:
        config = load_config(args.config, overrides)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"fuelswitch channels: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvloop

    uvloop.run(serve(config))
    return 0
