"""`fuelswitch serve`: the grpc.aio server with health and reflection, and a graceful shutdown."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from switch import admin_service, clearing_service, pos_service, status
from switch.abuse import AbuseConfig
from switch.app import App, AppConfig, wall_clock_ms
from switch.config import ServeConfig
from switch.errors import guard
from switch.health import HealthMonitor
from switch.keyring import load_master_key, read_legacy_pvk
from switch.metrics import MetricsServer, SwitchCollector
from switch.migrate import migrate
from switch.observe import Instrumented, RequestIds, RpcStats
from switch.pgembedded import EmbeddedPostgres

log = logging.getLogger("fuelswitch.server")

MESSAGE_BYTES_MAX = 1 << 20  # no POS message comes near 1 MiB; refuse bigger ones at the transport
POOL_SIZE_MAX = 8
GC_GEN0_THRESHOLD = 20_000  # allocations between young-generation collections (CPython default: 700)
SERVICES = (pos_service.SERVICE, admin_service.SERVICE, clearing_service.SERVICE)


@dataclass
class RunningSwitch:
    server: grpc.aio.Server
    app: App
    pool: asyncpg.Pool
    health: health_aio.HealthServicer
    port: int
    pg: EmbeddedPostgres | None
    clearing: clearing_service.Clearing | None = None  # its counters (conflicts, ...) for operators and tests
    monitor: HealthMonitor | None = None  # health status from the database probe and App.serving
    rpc_stats: RpcStats | None = None  # requests by method and code, latency histograms
    status_service: status.StatusService | None = None  # CardAdmin.GetStatus
    metrics: MetricsServer | None = None  # /metrics, when --metrics-listen is set

    async def stop(self, grace_s: float = 10.0) -> None:
        """Refuse new calls, let in-flight ones finish, commit everything decided, close the database."""
        if self.monitor is not None:
            await self.monitor.stop()  # NOT_SERVING from here on
        for service in ("", *SERVICES):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)
        await self.app.close()
        await self.pool.close()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)


async def start_switch(config: ServeConfig, clock_ms: Callable[[], int] = wall_clock_ms) -> RunningSwitch:
    """Start everything; `clock_ms` is the host's clock (tests move it to reach deadlines)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    pg = None
    dsn = config.dsn
    if not dsn:
        pg = EmbeddedPostgres(config.data_dir / "postgres")
        dsn = await asyncio.to_thread(pg.start)
    await migrate(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=POOL_SIZE_MAX)
    app = App(pool, load_master_key(config.data_dir, config.master_key_file),
              AppConfig(hold_ttl_ms=config.hold_ttl_s * 1000, session_ttl_ms=config.session_ttl_s * 1000,
                        hold_ttl_ms_by_class={name: s * 1000 for name, s in config.hold_ttl_s_by_class().items()},
                        abuse=AbuseConfig(requests_per_s=config.terminal_requests_per_s,
                                          burst=config.terminal_burst),
                        terminal_certificates=config.tls_client_ca is not None,
                        settlement_cutoff_hour=config.settlement_cutoff_hour,
                        settlement_fee_bps=config.settlement_fee_bps,
                        reconcile_fee_tolerance_fen=config.reconcile_fee_tolerance_fen,
                        channel_fee_bps=config.channel_fee_rates()),
              clock_ms, legacy_pvk=read_legacy_pvk(config.data_dir))
    await app.start()
    server = grpc.aio.server(maximum_concurrent_rpcs=config.max_concurrent_rpcs, options=[
        ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
        ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
        ("grpc.so_reuseport", 0),
    ])
    wrap = functools.partial(guard, clock_ms=app.clock_ms)
    clearing = clearing_service.Clearing(app, config.operator_token)
    rpc_stats, request_ids = RpcStats(), RequestIds()
    health = health_aio.HealthServicer()
    monitor = HealthMonitor(app, dsn, health, SERVICES, requests_total=rpc_stats.total,
                            interval_s=config.db_probe_interval_s)
    status_service = status.StatusService(app, monitor, config.operator_token)
    server.add_generic_rpc_handlers([
        Instrumented(handlers, rpc_stats, request_ids, config.request_log) for handlers in (
            pos_service.method_handlers(pos_service.PosGateway(app), wrap),
            admin_service.method_handlers(admin_service.CardAdmin(app, config.operator_token), wrap),
            status.method_handlers(status_service, wrap),
            clearing_service.method_handlers(clearing, wrap),
        )
    ])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                         reflection.SERVICE_NAME), server)
    credentials = server_credentials(config)
    port = (server.add_secure_port(config.listen, credentials) if credentials is not None
            else server.add_insecure_port(config.listen))
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    await server.start()
    # The state loaded at start lives for the whole run: keep it out of the collector's generations,
    # and collect the young generation less often (fewer pauses on the request path).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    await monitor.start()  # SERVING once the database answers
    metrics = None
    if config.metrics_listen:
        metrics = MetricsServer(config.metrics_listen, SwitchCollector(app, rpc_stats, monitor, status.version()))
    log.info("fuelswitch serving on port %d (database %s)", port, "embedded" if pg else "external")
    return RunningSwitch(server, app, pool, health, port, pg, clearing, monitor, rpc_stats, status_service, metrics)


def server_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    """TLS when a certificate is configured; with a client CA, every client must present a certificate."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
        root_certificates=client_ca, require_client_auth=client_ca is not None,
    )


async def serve_forever(config: ServeConfig) -> None:
    running = await start_switch(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fuelswitch listening on {config.listen.rpartition(':')[0]}:{running.port}", flush=True)
    await stop.wait()
    log.info("shutting down: draining in-flight calls")
    await running.stop(config.shutdown_grace_s)
