"""Set up a network through the CardAdmin API: a station, terminals with SM2 keys, funded cards."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
from fuelswitch.v1 import admin_pb2, admin_pb2_grpc

from loadtest.workload import TerminalSpec
from switch import sm2
from switch.protocol import MD_AUTHORIZATION


@dataclass(frozen=True)
class CardSpec:
    pan: str
    pin: str
    balance_fen: int
    card_id: str
    account_id: str


@dataclass(frozen=True)
class Network:
    station_id: str
    terminals: list[TerminalSpec]
    cards: list[CardSpec]


class Operator:
    """A CardAdmin client carrying the operator token."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = admin_pb2_grpc.CardAdminStub(channel)
        self.metadata = ((MD_AUTHORIZATION, f"Bearer {token}"),)

    async def call(self, method: str, request: Any) -> Any:
        return await getattr(self.stub, method)(request, metadata=self.metadata)


async def provision(
    channel: grpc.aio.Channel,
    token: str,
    *,
    terminals: int,
    cards: int,
    balance_fen: int,
    station_id: str = "ST-0001",
    pin: str = "123456",
    per_txn_limit: int = 0,
    partial_allowed: bool = True,
    reference_prefix: str = "",
) -> Network:
    """`reference_prefix` makes the funding top-ups' references unique, so that provisioning again
    on the same host (a second load run) is not refused as a reused reference."""
    op = Operator(channel, token)
    prefix = reference_prefix or f"provision-{station_id}"
    await op.call(
        "RegisterStation",
        admin_pb2.RegisterStationRequest(
            station_id=station_id,
            name="中石化 示范站",
            region="110105",
            latitude=39.93,
            longitude=116.45,
        ),
    )
    keys = await asyncio.to_thread(lambda: [sm2.generate_keypair() for _ in range(terminals)])
    specs = []
    for n, (private, public) in enumerate(keys, start=1):
        terminal_id = f"{station_id}-T{n:03d}"
        await op.call(
            "RegisterTerminal",
            admin_pb2.RegisterTerminalRequest(
                terminal_id=terminal_id, station_id=station_id, public_key=public
            ),
        )
        specs.append(TerminalSpec(terminal_id, private, public))
    card_specs = []
    for n in range(cards):
        account = await op.call(
            "CreateAccount", admin_pb2.CreateAccountRequest(kind="personal", holder_name=f"司机{n}")
        )
        card = await op.call(
            "IssueCard",
            admin_pb2.IssueCardRequest(
                account_id=account.account_id,
                pin=pin,
                per_transaction_limit=per_txn_limit,
                partial_allowed=partial_allowed,
            ),
        )
        if balance_fen:
            await op.call(
                "TopUp",
                admin_pb2.TopUpRequest(
                    account_id=account.account_id,
                    amount=balance_fen,
                    reference=f"{prefix}-{n}",
                ),
            )
        card_specs.append(CardSpec(card.pan, pin, balance_fen, card.card_id, account.account_id))
    return Network(station_id, specs, card_specs)
