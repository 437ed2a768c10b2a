"""The ceiling of Python gRPC here: a bare grpc.aio PosGateway that answers every call at once.

It does no work at all (no session, MAC, database or decision): Authorize and Complete answer a
canned approval. Driven by the same client as the switch (`echo_load`: loadtest.terminal.Terminal,
the same PIN block, MAC and in-flight count), its RPC/s is the most any Python gRPC server can answer
on this machine, so the switch's RPC/s is reported as a fraction of it.

    python -m loadtest.echo_server --listen 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Sequence

import grpc
import grpc.aio
from fuelswitch.v1 import pos_pb2

from loadtest.terminal import SERVICE, Terminal, TerminalSession

_ANSWERS = {
    "Authorize": pos_pb2.AuthorizeResponse(response_code="00", message="approved", hold_id="1",
                                           approved_amount=1, available_balance=1).SerializeToString(),
    "Complete": pos_pb2.CompleteResponse(response_code="00", message="completed", transaction_id="2",
                                         settled_amount=1, balance=1).SerializeToString(),
}


def _handler(answer: bytes) -> grpc.RpcMethodHandler:
    async def unary(_: bytes, __: grpc.aio.ServicerContext) -> bytes:
        return answer

    return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=None, response_serializer=None)


async def serve(listen: str, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {name: _handler(answer) for name, answer in _ANSWERS.items()}),))
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"echo server listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else server.wait_for_termination())
    finally:
        await server.stop(0)


async def echo_load(target: str, terminal_ids: Sequence[str], pans: Sequence[tuple[str, str]], duration_s: float,
                    in_flight: int) -> float:
    """Authorize+Complete pairs from `in_flight` lanes, as the self-checking workload sends them; RPC/s."""
    calls = 0
    async with grpc.aio.insecure_channel(target) as channel:
        terminals = []
        for terminal_id in terminal_ids:
            terminal = Terminal(channel, terminal_id, "00" * 32, "04" + "00" * 64)
            # No SignOn on a server that knows none: a made-up session gives the same client work.
            terminal._session = TerminalSession(secrets.token_hex(16), secrets.token_bytes(16),
                                                secrets.token_bytes(16), 2**62, "S", 0)
            terminals.append(terminal)
        deadline = time.monotonic() + duration_s

        async def lane(number: int) -> None:
            nonlocal calls
            terminal = terminals[number % len(terminals)]
            pan, pin = pans[number % len(pans)]
            while time.monotonic() < deadline:
                await terminal.authorize(pan, pin, 1_000, "92")
                await terminal.complete("1", 900, 1_220, "92", 738)
                calls += 2

        started = time.monotonic()
        await asyncio.gather(*(lane(n) for n in range(in_flight)))
        return calls / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    asyncio.run(serve(parser.parse_args(argv).listen))


if __name__ == "__main__":
    main()
