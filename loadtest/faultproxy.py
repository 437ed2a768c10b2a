"""A fault-injecting TCP proxy (asyncio) to put between the switch and PostgreSQL.

    proxy = FaultProxy("127.0.0.1", pg_port)
    port = await proxy.start()          # the switch connects to 127.0.0.1:port instead
    proxy.blackhole()                   # the database "hangs"
    proxy.pass_through()                # ... and is back
    await proxy.close()

Modes (switched at any moment; they act on open connections and on new ones):

- `pass_through()`: bytes flow both ways (after the configured `latency_ms`, if any).
- `latency(ms)`: every chunk is delivered `ms` milliseconds after it arrived, in each direction
  (a query round trip gets 2 × ms slower); order is kept and throughput is not limited.
- `blackhole(discard=False)`: nothing is delivered any more and new connections are accepted but
  never reach PostgreSQL — the network partition or hung server that no error reveals.
  With `discard=False` the bytes are held and delivered when the mode returns to pass (a healed
  partition: TCP retransmits them). With `discard=True` they are dropped and the connections stay
  dead for ever, silently (state lost in a firewall, or a server restarted during the partition):
  a client waiting on such a connection learns nothing, whatever happens later.
- `drop()`: every open connection is reset (RST) and new ones are reset at once: a database that
  is down, or refuses connections.
- `reset_connections()`: reset every open connection once, leaving the mode as it is.

`stats` counts accepted connections, resets and bytes forwarded, for the test reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger("loadtest.faultproxy")

CHUNK_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 5.0  # upstream connect; a failure resets the client side
LATENCY_MS_MAX = 60_000


class Mode(enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    DROP = "drop"


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0  # reset at accept (drop mode) or upstream unreachable
    resets: int = 0  # open connections reset
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client


class _Pipe:
    """One direction of one connection: chunks queued with their delivery time, written in order."""

    def __init__(self, proxy: FaultProxy, conn: _Conn, writer: asyncio.StreamWriter, up: bool) -> None:
        self._proxy = proxy
        self._conn = conn
        self._writer = writer
        self._up = up
        self._queue: deque[tuple[float, bytes]] = deque()
        self._ready = asyncio.Event()

    def push(self, data: bytes) -> None:
        self._queue.append((time.monotonic() + self._proxy.latency_ms / 1000, data))
        self._ready.set()

    def wake(self) -> None:
        self._ready.set()

    async def run(self) -> None:
        proxy = self._proxy
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                if self._conn.dead or proxy.mode is Mode.BLACKHOLE:
                    if self._conn.dead:
                        self._queue.clear()
                    break  # held (or dropped) until the mode changes: wake() comes then
                due, data = self._queue[0]
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # latency injection: the delivery time of this chunk
                    continue  # the mode may have changed meanwhile
                self._queue.popleft()
                self._writer.write(data)
                await self._writer.drain()
                if self._up:
                    proxy.stats.bytes_up += len(data)
                else:
                    proxy.stats.bytes_down += len(data)


class _Conn:
    def __init__(self, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.client = client
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.dead = False  # blackholed with discard: nothing is ever delivered again
        self.tasks: list[asyncio.Task[None]] = []
        self.pipes: list[_Pipe] = []

    def writers(self) -> list[asyncio.StreamWriter]:
        return [self.client[1]] + ([self.upstream[1]] if self.upstream else [])


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed or refusing server does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen = (listen_host, listen_port)
        self.mode = Mode.PASS
        self.latency_ms = 0
        self.discard = False
        self.stats = ProxyStats()
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self.port = 0

    # -- lifetime -----------------------------------------------------------------------

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._kill(conn)
        if self._server is not None:
            await self._server.wait_closed()

    def dsn(self, upstream_dsn: str) -> str:
        """`upstream_dsn` (postgresql://user:pw@host:port/db) with host:port replaced by the proxy's."""
        scheme, rest = upstream_dsn.split("://", 1)
        credentials, _, tail = rest.rpartition("@")
        _, _, database = tail.partition("/")
        return f"{scheme}://{credentials}@{self.listen[0]}:{self.port}/{database}"

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- faults -------------------------------------------------------------------------

    def pass_through(self) -> None:
        self.mode = Mode.PASS
        self._wake()

    def latency(self, ms: int) -> None:
        if not 0 <= ms <= LATENCY_MS_MAX:
            raise ValueError(f"latency must be 0..{LATENCY_MS_MAX} ms")
        self.latency_ms = ms
        self.pass_through()

    def blackhole(self, *, discard: bool = False) -> None:
        self.mode = Mode.BLACKHOLE
        self.discard = discard
        if discard:
            for conn in self._conns:
                conn.dead = True

    def drop(self) -> None:
        self.mode = Mode.DROP
        self.reset_connections()

    def reset_connections(self) -> None:
        for conn in list(self._conns):
            self.stats.resets += 1
            self._kill(conn)

    # -- plumbing -----------------------------------------------------------------------

    def _wake(self) -> None:
        for conn in self._conns:
            for pipe in conn.pipes:
                pipe.wake()

    def _kill(self, conn: _Conn) -> None:
        for writer in conn.writers():
            _reset(writer)
        for task in conn.tasks:
            task.cancel()
        self._conns.discard(conn)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self.mode is Mode.DROP:
            self.stats.refused += 1
            _reset(writer)
            return
        conn = _Conn((reader, writer))
        self._conns.add(conn)
        if self.mode is Mode.BLACKHOLE:
            conn.dead = self.discard
            # Accepted, never connected upstream until the mode returns to pass (a hung server).
            while self.mode is Mode.BLACKHOLE and conn in self._conns:
                await asyncio.sleep(0.05)  # polling the mode: a test fixture, not a hot path
            if conn.dead or conn not in self._conns:
                return  # stays open and silent until the peer or close() ends it
        try:
            conn.upstream = await asyncio.wait_for(asyncio.open_connection(*self.upstream), CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError):
            self.stats.refused += 1
            self._conns.discard(conn)
            _reset(writer)
            return
        up = _Pipe(self, conn, conn.upstream[1], up=True)
        down = _Pipe(self, conn, writer, up=False)
        conn.pipes = [up, down]
        conn.tasks = [
            asyncio.create_task(self._read(conn, reader, up)),
            asyncio.create_task(self._read(conn, conn.upstream[0], down)),
            asyncio.create_task(self._guard(conn, up)),
            asyncio.create_task(self._guard(conn, down)),
        ]

    async def _read(self, conn: _Conn, reader: asyncio.StreamReader, pipe: _Pipe) -> None:
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                if conn.dead:
                    continue  # swallowed: the connection is silently gone
                pipe.push(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        if not conn.dead and conn in self._conns:
            self._end(conn)

    async def _guard(self, conn: _Conn, pipe: _Pipe) -> None:
        try:
            await pipe.run()
        except (OSError, ConnectionError):
            self._end(conn)

    def _end(self, conn: _Conn) -> None:
        """One side closed: close both (after what is queued, when possible) and forget the connection."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        for writer in conn.writers():
            with contextlib.suppress(Exception):
                writer.close()
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()
