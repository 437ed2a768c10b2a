"""An offline-upload client in its own process, so that benchmarks measure the switch, not the client.

    python -m loadtest.offline_upload SPEC.json

SPEC: {"target", "terminal": [id, private_hex, public_hex], "pans": [...], "records": N, "seed",
"per_message": M}. The process signs on, builds and MACs every record, prints `ready`, waits for a line
on stdin, uploads them all in streams of at most 20,000 records (the host's limit per stream),
concurrently, and prints one JSON line: records, seconds, applied, duplicate, rejected. With
per_message M > 1 the streams are UploadOfflineBatch carrying M records per message; otherwise
UploadOffline, one record per message.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Iterator

import grpc
from fuelswitch.v1 import pos_pb2

from loadtest.terminal import Terminal, offline_record_bytes
from switch import sm3

STREAM_RECORDS_MAX = 20_000
AMOUNT_MAX_FEN = 500  # small sales: the cards' balances stay positive, so every record applies


def build_records(terminal: Terminal, pans: list[str], count: int, seed: int, first_stan: int) -> list[bytes]:
    rng = random.Random(seed)
    now = terminal.now_ms()
    bodies = []
    for n in range(count):
        amount = rng.randint(100, AMOUNT_MAX_FEN)
        record = pos_pb2.OfflineTransaction(pan=rng.choice(pans), amount=amount, volume_ml=amount * 1000 // 738,
                                            product_code="92", unit_price=738, transaction_time_ms=now - 60_000,
                                            pump=1 + n % 8)
        record.header.terminal_id = terminal.terminal_id
        record.header.stan = first_stan + n
        record.header.terminal_time_ms = now
        bodies.append(offline_record_bytes(record, terminal.session.mac_key))
    return bodies


def _messages(bodies: list[bytes], per_message: int) -> Iterator[bytes]:
    if per_message <= 1:
        yield from bodies
        return
    for at in range(0, len(bodies), per_message):
        yield pos_pb2.OfflineBatch(records=bodies[at:at + per_message]).SerializeToString()


async def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    async with grpc.aio.insecure_channel(spec["target"]) as channel:
        terminal = Terminal(channel, *spec["terminal"], timeout_s=300.0)
        await terminal.sign_on()
        bodies = build_records(terminal, spec["pans"], spec["records"], spec["seed"],
                               first_stan=int(spec.get("first_stan", 1_000_000)))
        per_message = int(spec.get("per_message", 1))
        method = "UploadOfflineBatch" if per_message > 1 else "UploadOffline"
        upload = channel.stream_unary(f"/fuelswitch.v1.PosGateway/{method}",
                                      request_serializer=None, response_deserializer=None)
        metadata = terminal.session_metadata(sm3.mac_hex(terminal.session.mac_key, b""))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        started = time.perf_counter()
        answers = await asyncio.gather(*(upload(_messages(bodies[at:at + STREAM_RECORDS_MAX], per_message),
                                                metadata=metadata, timeout=300.0)
                                         for at in range(0, len(bodies), STREAM_RECORDS_MAX)))
        seconds = time.perf_counter() - started
    results = [pos_pb2.OfflineUploadResult.FromString(raw) for raw in answers]
    print(json.dumps({"records": len(bodies), "seconds": seconds, "streams": len(results),
                      "applied": sum(r.applied for r in results), "duplicate": sum(r.duplicate for r in results),
                      "rejected": sum(r.rejected for r in results)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
