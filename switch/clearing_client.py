"""A Python client of the Clearing service, for channel adapters, the callback server and the CLI.

Takes clearing_pb2 messages or anything with a `to_proto()` that returns one (ext.records), splits
bulk calls to fit the service's limits (10,000 payments per SubmitPayments, 1 MiB per message), and
sends statements through ReconcileChunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import grpc
from fuelswitch.v1 import clearing_pb2, clearing_pb2_grpc

from switch.protocol import MD_AUTHORIZATION

PAYMENTS_PER_CALL_MAX = 10_000
MESSAGE_BYTES_BUDGET = 900_000  # under the host's 1 MiB message limit, with room for framing
LINES_PER_CHUNK = 5_000


def as_proto(item: Any) -> Any:
    """A clearing_pb2 message as is; an ext record through its `to_proto()`."""
    return item.to_proto() if hasattr(item, "to_proto") else item


def _sized(items: Iterable[Any], count_max: int) -> Iterator[list[Any]]:
    """Consecutive groups of at most `count_max` items and MESSAGE_BYTES_BUDGET serialized bytes."""
    group: list[Any] = []
    size = 0
    for item in items:
        item_size = item.ByteSize() + 8  # field tag, length prefix
        if group and (len(group) >= count_max or size + item_size > MESSAGE_BYTES_BUDGET):
            yield group
            group, size = [], 0
        group.append(item)
        size += item_size
    if group:
        yield group


class ClearingClient:
    def __init__(self, channel: grpc.aio.Channel, token: str, *, timeout_s: float | None = 300.0) -> None:
        self.stub = clearing_pb2_grpc.ClearingStub(channel)
        self.metadata = ((MD_AUTHORIZATION, f"Bearer {token}"),)
        self.timeout_s = timeout_s

    async def submit_payment(self, payment: Any) -> clearing_pb2.SubmitPaymentResponse:
        return await self.stub.SubmitPayment(as_proto(payment), metadata=self.metadata, timeout=self.timeout_s)

    async def submit_payments(self, payments: Iterable[Any]) -> list[clearing_pb2.SubmitPaymentResponse]:
        """One result per payment, in order; as many SubmitPayments calls as the limits need."""
        results: list[clearing_pb2.SubmitPaymentResponse] = []
        for group in _sized((as_proto(p) for p in payments), PAYMENTS_PER_CALL_MAX):
            response = await self.stub.SubmitPayments(clearing_pb2.SubmitPaymentsRequest(payments=group),
                                                      metadata=self.metadata, timeout=self.timeout_s)
            results.extend(response.results)
        return results

    async def submit_refund(self, refund: Any) -> clearing_pb2.SubmitRefundResponse:
        return await self.stub.SubmitRefund(as_proto(refund), metadata=self.metadata, timeout=self.timeout_s)

    async def reconcile(self, lines: Iterable[Any], *, channel: str = "",
                        business_date: str = "") -> clearing_pb2.ReconcileReport:
        """Send a whole statement in chunks. `channel`/`business_date` are needed only if it may be empty."""

        def chunks() -> Iterator[clearing_pb2.StatementLines]:
            first = True
            for group in _sized((as_proto(line) for line in lines), LINES_PER_CHUNK):
                yield clearing_pb2.StatementLines(lines=group, channel=channel if first else "",
                                                  business_date=business_date if first else "")
                first = False
            if first:  # no line at all
                yield clearing_pb2.StatementLines(channel=channel, business_date=business_date)

        return await self.reconcile_chunks(chunks())

    async def reconcile_chunks(self, chunks: Iterable[clearing_pb2.StatementLines]) -> clearing_pb2.ReconcileReport:
        """Chunks made by the caller (each under 1 MiB): the fastest path for very large statements."""
        return await self.stub.ReconcileChunks(iter(chunks), metadata=self.metadata, timeout=self.timeout_s)

    async def discrepancies(self, run_id: str, type_: str = "") -> AsyncIterator[clearing_pb2.Discrepancy]:
        """Every discrepancy of a run (optionally of one type), page by page."""
        token = ""
        while True:
            page = await self.stub.ListDiscrepancies(
                clearing_pb2.ListDiscrepanciesRequest(run_id=run_id, type=type_, page_token=token),
                metadata=self.metadata, timeout=self.timeout_s)
            for item in page.discrepancies:
                yield item
            token = page.next_page_token
            if not token:
                return

    async def resolve(self, run_id: str, channel_txn_id: str, decision: str, *, operator: str,
                      account_id: str = "", note: str = "") -> clearing_pb2.ResolveDiscrepancyResponse:
        request = clearing_pb2.ResolveDiscrepancyRequest(run_id=run_id, channel_txn_id=channel_txn_id,
                                                         decision=decision, account_id=account_id,
                                                         operator=operator, note=note)
        return await self.stub.ResolveDiscrepancy(request, metadata=self.metadata, timeout=self.timeout_s)

    async def settlement(self, business_date: str, station_id: str = "") -> clearing_pb2.GetSettlementResponse:
        request = clearing_pb2.GetSettlementRequest(business_date=business_date, station_id=station_id)
        return await self.stub.GetSettlement(request, metadata=self.metadata, timeout=self.timeout_s)
