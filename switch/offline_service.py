"""The PosGateway calls for offline operation: SyncHotlist (read-only) and UploadOffline (client stream).

All authenticate like every other call (docs/pos-protocol.md §5). SyncHotlist changes nothing, so
its STAN is not recorded. The upload streams' MAC is over the empty byte string; each record
carries its own MAC, checked before the record is looked at (§9.3). UploadOffline and
UploadOfflineBatch differ only in how many records one stream message carries.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

import grpc
from fuelswitch.v1 import pos_pb2
from fuelswitch.v1.common_pb2 import ProductPrice
from google.protobuf.message import DecodeError

from switch import offline, sm3
from switch import policy as P
from switch.errors import RequestInvalid
from switch.journal import JournalUnavailable
from switch.protocol import MD_MAC, Unauthenticated
from switch.sessions import Session, SessionTable

if TYPE_CHECKING:
    from switch.pos_service import PosGateway

# Per stream: a terminal holds a few hundred; the answer (about 35 bytes a record) stays under 1 MiB.
UPLOAD_RECORDS_MAX = 20_000
BATCH_RECORDS_MAX = 5_000  # records in one UploadOfflineBatch message
# Chunks of one stream decided but not yet committed: the next chunk is decided while the previous
# one commits, so the loop does not sit idle during PostgreSQL's part (a failed commit fails every
# later one too, and the stream ends with 91).
CHUNKS_COMMITTING_MAX = 2
# Chunks of all uploads together waiting for the journal: live decisions share its commits, so this
# bounds how much offline work a live call can find ahead of it.
CHUNKS_IN_JOURNAL_MAX = 8


def _retrieve_failure(commit: asyncio.Future[None]) -> None:
    if not commit.cancelled():
        commit.exception()


def _one_record(message: bytes) -> Sequence[bytes]:
    return (message,)


def _batch_records(message: bytes) -> Sequence[bytes]:
    try:
        records = pos_pb2.OfflineBatch.FromString(message).records
    except DecodeError as exc:
        raise RequestInvalid("OfflineBatch does not parse") from exc
    if len(records) > BATCH_RECORDS_MAX:
        raise RequestInvalid(f"at most {BATCH_RECORDS_MAX} records per OfflineBatch message")
    return records


class OfflineGateway:
    def __init__(self, gateway: PosGateway) -> None:
        self.gateway = gateway
        self.app = gateway.app
        self._journal_lane = asyncio.Semaphore(CHUNKS_IN_JOURNAL_MAX)

    async def sync_hotlist(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        app = self.app
        now = app.clock_ms()
        session = await self.gateway.authenticate(raw, context, now)
        try:
            req = pos_pb2.SyncHotlistRequest.FromString(raw)
        except DecodeError as exc:
            raise RequestInvalid("SyncHotlistRequest does not parse") from exc
        SessionTable.check_header(session, req.header.terminal_id, req.header.terminal_time_ms, now)
        station_id = app.state.terminals[session.terminal_id].station_id
        page = app.state.hotlist.page(req.since_version)
        limits = app.config.offline.for_station(app.state.stations.get(station_id))
        response = pos_pb2.SyncHotlistResponse(
            response_code=P.APPROVED, message="ok", version=page.version, full_snapshot=page.full_snapshot,
            more=page.more, station_id=station_id, offline_limits=limits.message(),
            entries=[pos_pb2.HotlistEntry(pan_sm3=e.pan_sm3, masked_pan=e.masked_pan, response_code=e.code,
                                          removed=e.removed, version=e.version, floor_limit=e.wire_floor_limit)
                     for e in page.entries],
            prices=[ProductPrice(product_code=product, unit_price=price)
                    for product, price in app.state.prices.current(station_id, now)],
        )
        body = response.SerializeToString()
        context.set_trailing_metadata(((MD_MAC, sm3.mac_hex(session.mac_key, body)),))
        return body

    async def upload(self, messages: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        """UploadOffline: one record per stream message."""
        return await self._upload(messages, context, _one_record)

    async def upload_batches(self, messages: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        """UploadOfflineBatch: many records per stream message, so gRPC's per-message cost is paid per batch."""
        return await self._upload(messages, context, _batch_records)

    async def _upload(self, messages: AsyncIterator[bytes], context: grpc.aio.ServicerContext,
                      records_of: Callable[[bytes], Sequence[bytes]]) -> bytes:
        app = self.app
        session = await self.gateway.authenticate(b"", context, app.clock_ms())
        total = pos_pb2.OfflineUploadResult(response_code=P.APPROVED, message="processed")
        committing: deque[asyncio.Future[None]] = deque()
        try:
            await self._receive(session, messages, records_of, total, committing, offline.UploadTally())
        finally:  # a stream that ends early leaves its chunks committing: their failures are not news
            for commit in committing:
                commit.add_done_callback(_retrieve_failure)
        body = total.SerializeToString()
        context.set_trailing_metadata(((MD_MAC, sm3.mac_hex(session.mac_key, body)),))
        return body

    async def _receive(self, session: Session, messages: AsyncIterator[bytes],
                       records_of: Callable[[bytes], Sequence[bytes]], total: pos_pb2.OfflineUploadResult,
                       committing: deque[asyncio.Future[None]], tally: offline.UploadTally) -> None:
        app = self.app
        pending: list[pos_pb2.OfflineTransaction] = []
        received = 0
        async for message in messages:
            records = records_of(message)
            received += len(records)
            if received > UPLOAD_RECORDS_MAX:
                raise RequestInvalid(f"at most {UPLOAD_RECORDS_MAX} records per upload")
            now = app.clock_ms()
            for raw in records:
                pending.append(self._authentic(session, raw, now))
                if len(pending) >= offline.CHUNK_RECORDS:
                    await self._journal_lane.acquire()
                    committing.append(self._decide(session, pending, total, tally))
                    pending = []
                    if len(committing) > CHUNKS_COMMITTING_MAX:
                        await committing.popleft()  # JournalUnavailable ends the stream: upload again
                    else:
                        await asyncio.sleep(0)  # let live calls in between chunks of a big message
        if pending:
            await self._journal_lane.acquire()
            committing.append(self._decide(session, pending, total, tally))
        while committing:  # the answer goes out only once every chunk is durable
            await committing.popleft()

    def _authentic(self, session: Session, raw: bytes, now: int) -> pos_pb2.OfflineTransaction:
        """Frame and MAC first, then parse; a bad record ends the stream (records before it stay applied)."""
        try:
            body, mac = offline.split_record(raw)
        except offline.RecordRefused as exc:
            raise RequestInvalid(str(exc)) from exc
        if not sm3.mac_equal(session.mac_key, body, mac):
            raise Unauthenticated("bad-mac", "an offline record's MAC does not match its bytes")
        try:
            record = pos_pb2.OfflineTransaction.FromString(raw)
        except DecodeError as exc:
            raise RequestInvalid("OfflineTransaction does not parse") from exc
        if not record.HasField("header") or record.header.stan == 0:
            raise RequestInvalid("every record needs a header with a non-zero stan")
        SessionTable.check_header(session, record.header.terminal_id, record.header.terminal_time_ms, now)
        return record

    def _decide(self, session: Session, records: list[pos_pb2.OfflineTransaction],
                total: pos_pb2.OfflineUploadResult, tally: offline.UploadTally) -> asyncio.Future[None]:
        """Decide a chunk now and hand it to the journal writer; the returned future is its commit."""
        app = self.app
        if not app.available:
            self._journal_lane.release()
            raise JournalUnavailable("host is recovering; upload again")
        terminal = app.state.terminals[session.terminal_id]
        try:
            chunk = offline.decide_chunk(app.state, app.keyring, terminal.terminal_id, terminal.station_id,
                                         app.clock_ms(), app.config.offline, records, tally)
        except BaseException:
            self._journal_lane.release()
            raise
        commit = app.writer.submit(chunk.records)
        commit.add_done_callback(lambda _: self._journal_lane.release())
        for result in chunk.results:
            total.results.append(result)
            if result.status == "applied":
                total.applied += 1
            elif result.status == "duplicate":
                total.duplicate += 1
            else:
                total.rejected += 1
        return commit
