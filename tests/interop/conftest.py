"""Fixtures for the interoperability tests: the Node.js terminal's packages and a real switch.

The switch runs in-process on a fresh database of the session's embedded PostgreSQL; the Node
terminal runs as a subprocess against its port, so the test must wait for it without blocking the
event loop (the switch serves from that same loop).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, admin_pb2_grpc, common_pb2

from switch import sm2
from switch.audit import check_conservation
from switch.config import ServeConfig
from switch.server import start_switch

NODE_DIR = Path(__file__).resolve().parent / "node_terminal"
NODE_MAJOR_MIN = 20  # engines.node in package.json; sm4-ecb and sm3 come from Node's OpenSSL 3
NPM_CI_TIMEOUT_S = 600
STAMP = NODE_DIR / "node_modules" / ".fuelswitch-installed"

OPERATOR_TOKEN = "interop-operator-token"
STATION_ID = "ST-INTEROP"
TERMINAL_ID = "ST-INTEROP-T01"
PRODUCT = "92"
LIST_PRICE = 738  # fen per litre; registered as the station price (the host uses its own list prices today)
INITIAL_BALANCE = 100_000
PIN = "2468"


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((NODE_DIR / name).read_bytes())
    return h.hexdigest()


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"`{tool}` is not on PATH: the Node.js interop test needs Node.js >= {NODE_MAJOR_MIN} with npm "
            "(https://nodejs.org/). It is not skipped on purpose: a missing toolchain must not pass.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def node_terminal() -> list[str]:
    """The command that runs the Node terminal, after `npm ci` if node_modules is missing or stale."""
    node = _require("node")
    npm = _require("npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < NODE_MAJOR_MIN:
        pytest.fail(f"Node.js {version} is too old: the interop terminal needs >= {NODE_MAJOR_MIN}", pytrace=False)
    digest = _lock_digest()
    if not STAMP.exists() or STAMP.read_text().strip() != digest:
        env = {**os.environ, "npm_config_update_notifier": "false"}
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
            env=env,
        )
        if result.returncode != 0:
            pytest.fail(
                f"`npm ci` in {NODE_DIR} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
        STAMP.write_text(digest + "\n")
    return [node, str(NODE_DIR / "terminal.mjs")]


@pytest.fixture
async def switch(fresh_db, tmp_path):
    config = ServeConfig(listen="127.0.0.1:0", data_dir=tmp_path, operator_token=OPERATOR_TOKEN, dsn=fresh_db)
    running = await start_switch(config)
    try:
        yield running
        await running.app.writer.flush()
        async with running.pool.acquire() as conn:
            report = await check_conservation(conn)
        assert report.ok, report
    finally:
        await running.stop(0.5)


@pytest.fixture
async def channel(switch):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{switch.port}") as ch:
        yield ch


class Admin:
    """CardAdmin with the operator token (`authorization: Bearer <token>`, see admin.proto)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = admin_pb2_grpc.CardAdminStub(channel)
        self.metadata = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)

    async def __call__(self, method: str, request):
        return await getattr(self.stub, method)(request, metadata=self.metadata)


@dataclass(frozen=True)
class Provisioned:
    target: str
    terminal_id: str
    private_key: str
    public_key: str
    account_id: str
    card_id: str
    pan: str
    pin: str


@pytest.fixture
async def admin(channel) -> Admin:
    return Admin(channel)


@pytest.fixture
async def provisioned(switch, admin) -> Provisioned:
    """A station with a list price, a terminal with a Python-generated SM2 key, a funded card."""
    await admin(
        "RegisterStation",
        admin_pb2.RegisterStationRequest(
            station_id=STATION_ID,
            name="Interop test station",
            region="GD-SZ",
            latitude=22.54,
            longitude=114.06,
            prices=[common_pb2.ProductPrice(product_code=PRODUCT, unit_price=LIST_PRICE)],
        ),
    )
    private_key, public_key = sm2.generate_keypair()
    await admin(
        "RegisterTerminal",
        admin_pb2.RegisterTerminalRequest(terminal_id=TERMINAL_ID, station_id=STATION_ID, public_key=public_key),
    )
    account = await admin("CreateAccount", admin_pb2.CreateAccountRequest(kind="personal", holder_name="Interop"))
    card = await admin("IssueCard", admin_pb2.IssueCardRequest(account_id=account.account_id, pin=PIN))
    await admin(
        "TopUp",
        admin_pb2.TopUpRequest(account_id=account.account_id, amount=INITIAL_BALANCE, reference="interop-initial"),
    )
    return Provisioned(
        target=f"127.0.0.1:{switch.port}",
        terminal_id=TERMINAL_ID,
        private_key=private_key,
        public_key=public_key,
        account_id=account.account_id,
        card_id=card.card_id,
        pan=card.pan,
        pin=PIN,
    )
