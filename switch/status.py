"""CardAdmin.GetStatus: the operational status of this switch process, behind the operator token.

Registered as a generic handler of its own for the CardAdmin service (grpc tries generic handlers in
order), so the account and card routes in switch/admin_service.py stay as they are.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from importlib import metadata
from typing import Any

import grpc
from fuelswitch.v1 import admin_pb2

from switch.app import App
from switch.errors import parsing
from switch.health import HealthMonitor
from switch.histogram import NS_PER_S
from switch.operator_auth import require_operator

SERVICE = "fuelswitch.v1.CardAdmin"


@functools.cache
def version() -> str:
    try:
        return metadata.version("fuelswitch")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class StatusService:
    def __init__(self, app: App, monitor: HealthMonitor, operator_token: str) -> None:
        self.app = app
        self.monitor = monitor
        self._token = operator_token.encode()

    async def get_status(self, _: admin_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
                         ) -> admin_pb2.SwitchStatus:
        require_operator(context, self._token)
        return await self.status()

    async def status(self) -> admin_pb2.SwitchStatus:
        app, monitor = self.app, self.monitor
        # The core walks its holds to count the pending ones: off the event loop (it releases the GIL).
        core = await asyncio.to_thread(app.state.ledger.stats)
        per_s, window_s = monitor.requests_per_s()
        writer = app.writer
        return admin_pb2.SwitchStatus(
            serving="SERVING" if monitor.serving else "NOT_SERVING",
            version=version(),
            started_at_ms=monitor.started_ms,
            uptime_s=round(monitor.uptime_s, 3),
            database_reachable=monitor.database_up,
            database_checked_at_ms=monitor.database_checked_ms,
            recovering=not app.available,
            journal_queue_depth=writer.queue_depth,
            last_commit_ms=round(writer.stats.last_commit_ns * 1000 / NS_PER_S, 3),
            journal_commits=writer.stats.commits,
            journal_commit_failures=writer.stats.failures,
            open_holds=core["holds_pending"],
            accounts=core["accounts"],
            sessions=len(app.sessions),
            requests_per_s=round(per_s, 2),
            requests_window_s=round(window_s, 1),
            key_versions=[admin_pb2.KeyVersion(purpose=p, version=v)
                          for p, v in sorted(app.keyring.versions().items())],
            host_time_ms=app.clock_ms(),
        )


def method_handlers(status: StatusService, guard: Callable[..., Any]) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(SERVICE, {
        "GetStatus": grpc.unary_unary_rpc_method_handler(
            guard(parsing(admin_pb2.GetStatusRequest, status.get_status)),  # raw bytes: INVALID_ARGUMENT if unparseable
            response_serializer=lambda m: m.SerializeToString(),
        ),
    })
