"""Interoperability: a POS terminal written in Node.js from docs/pos-protocol.md alone.

tests/interop/node_terminal/terminal.mjs uses @grpc/grpc-js, @grpc/proto-loader, Node's crypto
(SM3, HMAC-SM3, SM4) and sm-crypto (SM2). It signs on, authorizes with an encrypted PIN block,
completes for less, asks the balance, and checks every response MAC. These tests drive it against
the real switch and check what a vendor would check, plus the server's own view of the account.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from fuelswitch.v1 import admin_pb2

from tests.interop.conftest import INITIAL_BALANCE, PRODUCT, STATION_ID

NODE_TIMEOUT_S = 60
AUTHORIZE_AMOUNT = 30_000
FUEL_VOLUME_ML = 27_100  # at ¥7.38/L: 27100 × 738 / 1000 = 19999.8 → 20000 fen


def amount_for(volume_ml: int, unit_price: int) -> int:
    """round_half_up(volume_ml × unit_price / 1000), the completion rule of the doc's §8.2."""
    return (volume_ml * unit_price * 2 + 1000) // 2000


def fuelled(out: dict[str, Any]) -> int:
    """The completion amount: the terminal prices the fuel at the unit_price the host returned."""
    unit_price = out["authorize"]["unit_price"]
    assert unit_price > 0, "the host sent no list price for the product"
    return amount_for(FUEL_VOLUME_ML, unit_price)


@dataclass
class NodeRun:
    returncode: int
    output: dict[str, Any]
    stderr: str
    seconds: float


async def run_node(command: list[str], config: dict[str, Any], *flags: str) -> NodeRun:
    """Run the Node terminal without blocking the loop the in-process switch serves from."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command,
        *flags,
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(config).encode()), NODE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the Node terminal did not finish within {NODE_TIMEOUT_S} s") from None
    text = stdout.decode()
    try:
        output = json.loads(text)
    except json.JSONDecodeError:
        raise AssertionError(f"Node terminal printed no JSON (exit {proc.returncode}):\n{text}\n{stderr.decode()}") from None
    return NodeRun(proc.returncode, output, stderr.decode(), time.monotonic() - started)


def terminal_input(p, **overrides) -> dict[str, Any]:
    return {
        "target": p.target,
        "terminal_id": p.terminal_id,
        "private_key": p.private_key,
        "pan": p.pan,
        "pin": p.pin,
        "product_code": PRODUCT,
        "pump": 3,
        "authorize_amount": AUTHORIZE_AMOUNT,
        "fuel_volume_ml": FUEL_VOLUME_ML,
        "stan": 1,
        **overrides,
    }


def masked(pan: str) -> str:
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


async def account_of(admin, account_id):
    return await admin("GetAccount", admin_pb2.GetAccountRequest(account_id=account_id))


def test_doc_test_vectors_in_node(node_terminal):
    """Node's crypto and protobuf encoding reproduce every test vector of the doc's §12 (no server)."""
    proc = subprocess.run([*node_terminal, "--self-test"], capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout)["self_test"]
    assert results and all(v == "ok" for v in results.values()), results


async def test_sign_on_authorize_complete_balance(node_terminal, provisioned, admin):
    run = await run_node(node_terminal, terminal_input(provisioned))
    assert run.returncode == 0, f"{run.stderr}\n{json.dumps(run.output, indent=2)}"
    out = run.output

    sign_on = out["sign_on"]
    assert sign_on["response_code"] == "00" and sign_on["session_id"]
    assert sign_on["station_id"] == STATION_ID
    assert sign_on["clock_corrections"] == 0
    assert out["public_key"] == provisioned.public_key  # the Node side derived the same public key
    # Not served yet (doc, "What this host implements today"); the terminal carries on online.
    assert out["sync_hotlist"].get("grpc_status", "OK") in ("UNIMPLEMENTED", "OK")

    auth = out["authorize"]
    assert auth["response_mac_verified"] is True
    assert auth["response_code"] == "00"
    assert auth["approved_amount"] == AUTHORIZE_AMOUNT
    assert auth["available_balance"] == INITIAL_BALANCE - AUTHORIZE_AMOUNT
    assert auth["hold_id"] and len(auth["approval_code"]) == 6
    amount = fuelled(out)
    assert 0 < amount < AUTHORIZE_AMOUNT

    done = out["complete"]
    assert done["response_mac_verified"] is True
    assert done["response_code"] == "00" and done["transaction_id"]
    assert done["request"] == {"amount": amount, "volume_ml": FUEL_VOLUME_ML, "unit_price": auth["unit_price"]}
    assert done["discount_amount"] == 0
    assert done["settled_amount"] == amount
    assert done["balance"] == INITIAL_BALANCE - amount
    assert done["available"] == INITIAL_BALANCE - amount  # the rest of the hold is released

    bal = out["balance_inquiry"]
    assert bal["response_mac_verified"] is True
    assert bal["response_code"] == "00"
    assert bal["balance"] == bal["available"] == INITIAL_BALANCE - amount
    assert bal["masked_pan"] == masked(provisioned.pan)

    account = await account_of(admin, provisioned.account_id)
    assert (account.balance, account.held, account.available) == (INITIAL_BALANCE - amount, 0, INITIAL_BALANCE - amount)
    assert run.seconds < 30, f"the Node terminal took {run.seconds:.1f} s"


async def test_wrong_pin_is_declined_55(node_terminal, provisioned, admin):
    run = await run_node(node_terminal, terminal_input(provisioned), "--wrong-pin")
    assert run.returncode == 0, f"{run.stderr}\n{json.dumps(run.output, indent=2)}"
    auth = run.output["authorize"]
    assert auth["response_code"] == "55"  # §10: incorrect PIN
    assert auth["hold_id"] == "" and auth["approved_amount"] == 0 and auth["approval_code"] == ""
    assert auth["response_mac_verified"] is True  # a decline is a normal, MACed response
    assert "complete" not in run.output
    bal = run.output["balance_inquiry"]  # with the right PIN: nothing was held
    assert bal["response_code"] == "00" and bal["balance"] == bal["available"] == INITIAL_BALANCE
    account = await account_of(admin, provisioned.account_id)
    assert (account.balance, account.held) == (INITIAL_BALANCE, 0)


async def test_tampered_mac_is_unauthenticated_and_uses_no_stan(node_terminal, provisioned, admin):
    run = await run_node(node_terminal, terminal_input(provisioned, stan=500), "--tamper-mac")
    assert run.returncode == 0, f"{run.stderr}\n{json.dumps(run.output, indent=2)}"
    out = run.output
    bad = out["tampered_authorize"]
    assert bad["grpc_status"] == "UNAUTHENTICATED" and bad["token"] == "bad-mac"  # §5 step 3
    assert bad["details"].startswith("bad-mac: ")
    # The same bytes under the same STAN, with the right MAC, are processed afresh (§6.1).
    assert out["authorize"]["stan"] == bad["stan"] == out["sync_hotlist"]["stan"] + 1
    assert out["authorize"]["response_code"] == "00"
    assert out["complete"]["response_code"] == "00"
    assert out["balance_inquiry"]["balance"] == INITIAL_BALANCE - fuelled(out)
    account = await account_of(admin, provisioned.account_id)
    assert (account.balance, account.held) == (INITIAL_BALANCE - fuelled(out), 0)


async def test_sign_on_recovers_from_clock_skew(node_terminal, provisioned, admin):
    """A terminal clock 10 minutes slow: SignOn fails with clock-skew and fs-host-time-ms (§4)."""
    run = await run_node(node_terminal, terminal_input(provisioned, clock_skew_ms=-600_000))
    assert run.returncode == 0, f"{run.stderr}\n{json.dumps(run.output, indent=2)}"
    assert run.output["sign_on"]["clock_corrections"] == 1
    assert run.output["balance_inquiry"]["balance"] == INITIAL_BALANCE - fuelled(run.output)
