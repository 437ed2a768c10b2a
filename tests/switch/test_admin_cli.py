"""`fuelswitch admin ...` against a real in-process gRPC server with a recording fake CardAdmin."""

from __future__ import annotations

import csv
import io
import json
import socket
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, admin_pb2_grpc, common_pb2

from switch import admin_cli

TOKEN = "op-secret-42"
PAN = "9000010000000002343"
MASKED = "900001*********2343"
PAN_2 = "9000010000000009876"
MASKED_2 = "900001*********9876"
PUBLIC_KEY = "04" + "Ab" * 64


def _account(**overrides: Any) -> Any:
    fields: dict[str, Any] = dict(
        account_id="A1",
        kind="fleet",
        balance=1234567,
        held=5000,
        available=1229567,
        points=88,
        tier="silver",
        holder_name="深圳物流有限公司",
        created_at_ms=1714521600000,
        card_ids=["C1", "C2"],
    )
    fields.update(overrides)
    return admin_pb2.Account(**fields)


def _card(*, with_pan: bool) -> Any:
    return admin_pb2.Card(
        card_id="C1",
        pan=PAN if with_pan else "",
        masked_pan=MASKED,
        state="active",
        account_id="A1",
        expiry="2030-12",
        label="粤B12345",
        issued_at_ms=1714521600000,
        controls=admin_pb2.CardControls(per_transaction_limit=50000, partial_allowed=True),
    )


def _txn(n: int, **overrides: Any) -> Any:
    fields: dict[str, Any] = dict(
        transaction_id=f"T{n}",
        kind="sale",
        account_id="A1",
        card_id="C1",
        masked_pan=MASKED,
        amount=25830,
        balance_change=-25830,
        balance_after=100005,
        product_code="95",
        volume_ml=35000,
        unit_price=738,
        station_id="S1",
        terminal_id="T-01",
        stan=n,
        time_ms=1714521600000 + n,
        points=25,
    )
    fields.update(overrides)
    return admin_pb2.Transaction(**fields)


def _station(own: Any, **overrides: Any) -> Any:
    """A station whose effective limits are `own` over the network defaults."""
    effective = admin_pb2.OfflineLimitSettings(floor_limit=30000, max_count=200, max_total=2000000,
                                               max_per_card_per_day=2)
    effective.MergeFrom(own)
    fields: dict[str, Any] = dict(station_id="S1", name="Shennan Rd", station_class="highway", hold_ttl_s=1800,
                                  offline_limits=own, effective_offline_limits=effective)
    fields.update(overrides)
    return admin_pb2.Station(**fields)


PAGE_1 = admin_pb2.ListTransactionsResponse(
    transactions=[
        _txn(3),
        _txn(
            2,
            kind="topup",
            card_id="",
            masked_pan="",
            amount=5,
            balance_change=5,
            product_code="",
            volume_ml=0,
            unit_price=0,
            reference="=HYPERLINK(1)",
        ),
    ],
    next_page_token="p2",
)
PAGE_2 = admin_pb2.ListTransactionsResponse(
    transactions=[_txn(1, kind="refund", amount=100, balance_change=100, balance_after=-1)],
)


class FakeAdmin(admin_pb2_grpc.CardAdminServicer):
    """Checks the bearer token, records every request, answers with canned messages."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, str]]] = []
        self.loop_pages = False
        # A buggy server leaking the full PAN outside IssueCard: the CLI must still mask it.
        self.leak_pan = True

    def _enter(self, rpc: str, request: Any, context: grpc.ServicerContext) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self.calls.append((rpc, request, metadata))
        if metadata.get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "operator token missing or wrong")

    def CreateAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("CreateAccount", request, context)
        return _account(
            kind=request.kind, holder_name=request.holder_name, balance=0, held=0, available=0
        )

    def IssueCard(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("IssueCard", request, context)
        return _card(with_pan=True)

    def SetCardState(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("SetCardState", request, context)
        card = _card(with_pan=self.leak_pan)
        card.state = request.state
        return card

    def ResetPin(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("ResetPin", request, context)
        return _card(with_pan=self.leak_pan)

    def TopUp(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("TopUp", request, context)
        return admin_pb2.TopUpResponse(balance=1234567, available=1229567, transaction_id="T9")

    def GetAccount(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("GetAccount", request, context)
        if request.account_id != "A1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no account {request.account_id}")
        return _account()

    def GetCard(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("GetCard", request, context)
        return _card(with_pan=self.leak_pan)

    def ListTransactions(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("ListTransactions", request, context)
        if self.loop_pages:
            return admin_pb2.ListTransactionsResponse(
                transactions=[_txn(1)], next_page_token="again"
            )
        return PAGE_2 if request.page_token == "p2" else PAGE_1

    def RegisterStation(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("RegisterStation", request, context)
        return admin_pb2.Station(
            station_id=request.station_id,
            name=request.name,
            region=request.region,
            latitude=request.latitude,
            longitude=request.longitude,
            prices=[common_pb2.ProductPrice(product_code="95", unit_price=738)],
        )

    def SetStationOfflineLimits(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("SetStationOfflineLimits", request, context)
        return _station(request.limits)

    def SetCardOfflineLimit(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("SetCardOfflineLimit", request, context)
        card = _card(with_pan=self.leak_pan)
        if request.HasField("floor_limit"):
            card.offline_floor_limit = request.floor_limit
        return card

    def ListStations(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("ListStations", request, context)
        return admin_pb2.ListStationsResponse(stations=[
            _station(admin_pb2.OfflineLimitSettings(floor_limit=10000)),
            _station(admin_pb2.OfflineLimitSettings(), station_id="S2", station_class="standard", hold_ttl_s=900),
        ])

    def RegisterTerminal(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("RegisterTerminal", request, context)
        return admin_pb2.Terminal(
            terminal_id=request.terminal_id,
            station_id=request.station_id,
            public_key=request.public_key,
            registered_at_ms=1714521600000,
        )

    def SetTerminalState(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._enter("SetTerminalState", request, context)
        return admin_pb2.Terminal(terminal_id=request.terminal_id, station_id="S1", state=request.state,
                                  state_reason=request.reason)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Harness:
    def __init__(self, fake: FakeAdmin, target: str) -> None:
        self.fake = fake
        self.target = target

    def run(self, *argv: str, token: str | None = TOKEN, target: str | None = None) -> Result:
        full = ["--target", target or self.target, "--timeout", "5"]
        if token is not None:
            full += ["--token", token]
        out, err = io.StringIO(), io.StringIO()
        code = admin_cli.main(full + list(argv), stdout=out, stderr=err)
        result = Result(code, out.getvalue(), err.getvalue())
        assert "Traceback" not in result.err
        return result

    def only_request(self, rpc: str) -> Any:
        assert [c[0] for c in self.fake.calls] == [rpc]
        return self.fake.calls[0][1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(admin_cli.ENV_TOKEN, raising=False)
    monkeypatch.delenv(admin_cli.ENV_TARGET, raising=False)


@pytest.fixture
def cli() -> Iterator[Harness]:
    fake = FakeAdmin()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    admin_pb2_grpc.add_CardAdminServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Harness(fake, f"127.0.0.1:{port}")
    finally:
        server.stop(None)


# --- money helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fen", "plain", "symbol"),
    [
        (0, "0.00", "¥0.00"),
        (5, "0.05", "¥0.05"),
        (-5, "-0.05", "-¥0.05"),
        (123456, "1234.56", "¥1,234.56"),
        (-100, "-1.00", "-¥1.00"),
        (2**63 - 1, "92233720368547758.07", "¥92,233,720,368,547,758.07"),
    ],
)
def test_format_yuan_is_exact(fen: int, plain: str, symbol: str) -> None:
    assert admin_cli.format_yuan(fen) == plain
    assert admin_cli.format_yuan_symbol(fen) == symbol


@pytest.mark.parametrize(
    ("yuan", "fen"),
    [
        ("12.34", 1234),
        ("0.1", 10),
        ("100", 10000),
        ("0.01", 1),
        ("1.50", 150),
        ("92233720368547758.07", 2**63 - 1),
    ],
)
def test_top_up_yuan_converts_exactly(cli: Harness, yuan: str, fen: int) -> None:
    result = cli.run("top-up", "--account", "A1", "--yuan", yuan, "--reference", "R1")
    assert result.code == 0, result.err
    assert cli.only_request("TopUp").amount == fen


@pytest.mark.parametrize(
    "yuan",
    [
        "1.005",
        "0.001",
        "0",
        "0.00",
        "-1",
        "1e3",
        "NaN",
        "１２",
        "12.",
        ".5",
        "1,000",
        "92233720368547758.08",
    ],
)
def test_top_up_bad_yuan_is_refused_before_sending(cli: Harness, yuan: str) -> None:
    result = cli.run("top-up", "--account", "A1", "--yuan", yuan, "--reference", "R1")
    assert result.code == 2
    assert "--yuan" in result.err
    assert cli.fake.calls == []


@pytest.mark.parametrize("fen", ["0", "12.5", "-3", "1_000", " 12"])
def test_top_up_bad_fen_is_refused(cli: Harness, fen: str) -> None:
    result = cli.run("top-up", "--account", "A1", "--amount", fen, "--reference", "R1")
    assert result.code == 2
    assert cli.fake.calls == []


def test_top_up_needs_exactly_one_amount(cli: Harness) -> None:
    both = cli.run("top-up", "--account", "A1", "--amount", "1", "--yuan", "1", "--reference", "R")
    neither = cli.run("top-up", "--account", "A1", "--reference", "R")
    assert (both.code, neither.code) == (2, 2)
    assert cli.fake.calls == []


# --- requests and metadata --------------------------------------------------------------------


def test_top_up_sends_fields_and_bearer_token(cli: Harness) -> None:
    result = cli.run("top-up", "--account", "A1", "--amount", "1234", "--reference", "RCPT-7")
    assert result.code == 0, result.err
    rpc, request, metadata = cli.fake.calls[0]
    assert rpc == "TopUp"
    assert (request.account_id, request.amount, request.reference) == ("A1", 1234, "RCPT-7")
    assert metadata["authorization"] == f"Bearer {TOKEN}"
    assert "1234 fen (¥12.34)" in result.out
    assert "1234567 fen (¥12,345.67)" in result.out


def test_token_and_target_from_environment(cli: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(admin_cli.ENV_TOKEN, TOKEN)
    monkeypatch.setenv(admin_cli.ENV_TARGET, cli.target)
    out, err = io.StringIO(), io.StringIO()
    assert admin_cli.main(["get-account", "A1"], stdout=out, stderr=err) == 0, err.getvalue()
    assert cli.fake.calls[0][2]["authorization"] == f"Bearer {TOKEN}"


def test_create_account(cli: Harness) -> None:
    result = cli.run("create-account", "--kind", "family", "--holder", "王芳", "--tier", "gold")
    assert result.code == 0, result.err
    request = cli.only_request("CreateAccount")
    assert (request.kind, request.holder_name, request.tier) == ("family", "王芳", "gold")
    assert "王芳" in result.out


def test_create_account_rejects_unknown_kind(cli: Harness) -> None:
    assert cli.run("create-account", "--kind", "corporate", "--holder", "X").code == 2
    assert cli.fake.calls == []


def test_issue_card_sends_fields_and_shows_full_pan_once(cli: Harness) -> None:
    result = cli.run(
        "issue-card", "--account", "A1", "--pin", "123456", "--parent-card", "C0",
        "--per-txn-limit", "50000", "--expiry", "2030-12", "--label", "粤B12345",
    )  # fmt: skip
    assert result.code == 0, result.err
    request = cli.only_request("IssueCard")
    assert request.account_id == "A1"
    assert request.pin == "123456"
    assert request.parent_card_id == "C0"
    assert request.per_transaction_limit == 50000
    assert request.partial_allowed is True
    assert request.expiry == "2030-12"
    assert request.label == "粤B12345"
    assert PAN in result.out
    assert MASKED in result.out
    assert "123456" not in result.out  # the PIN is never echoed


def test_issue_card_no_partial_and_defaults(cli: Harness) -> None:
    assert cli.run("issue-card", "--account", "A1", "--pin", "1234", "--no-partial").code == 0
    request = cli.only_request("IssueCard")
    assert request.partial_allowed is False
    assert (request.parent_card_id, request.per_transaction_limit, request.expiry) == ("", 0, "")


def test_issue_card_pin_from_stdin(cli: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("4321\n"))
    assert cli.run("issue-card", "--account", "A1", "--pin", "-").code == 0
    assert cli.only_request("IssueCard").pin == "4321"


@pytest.mark.parametrize(
    "argv",
    [
        ["--pin", "12"],
        ["--pin", "1234567"],
        ["--pin", "12a4"],
        ["--pin", "1234", "--expiry", "2030-13"],
        ["--pin", "1234", "--per-txn-limit", "-1"],
    ],
)
def test_issue_card_bad_input_is_refused(cli: Harness, argv: list[str]) -> None:
    result = cli.run("issue-card", "--account", "A1", *argv)
    assert result.code == 2
    assert cli.fake.calls == []
    assert "12a4" not in result.err  # a PIN is never echoed, even a bad one


def test_issue_card_json_carries_pan(cli: Harness) -> None:
    result = cli.run("issue-card", "--account", "A1", "--pin", "1234", "--json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert document["pan"] == PAN
    assert document["masked_pan"] == MASKED
    assert document["controls"]["per_transaction_limit"] == "50000"


def test_set_card_state(cli: Harness) -> None:
    result = cli.run(
        "set-card-state", "--card", "C1", "--state", "lost", "--reason", "customer call"
    )
    assert result.code == 0, result.err
    request = cli.only_request("SetCardState")
    assert (request.card_id, request.state, request.reason) == ("C1", "lost", "customer call")
    assert MASKED in result.out and PAN not in result.out


def test_set_card_state_refuses_expired(cli: Harness) -> None:
    assert cli.run("set-card-state", "--card", "C1", "--state", "expired").code == 2
    assert cli.fake.calls == []


def test_reset_pin(cli: Harness) -> None:
    result = cli.run("reset-pin", "--card", "C1", "--pin", "9876")
    assert result.code == 0, result.err
    request = cli.only_request("ResetPin")
    assert (request.card_id, request.pin) == ("C1", "9876")
    assert PAN not in result.out and "9876" not in result.out.replace(MASKED, "")


def test_get_card_table_and_json_are_masked_even_if_server_leaks_pan(cli: Harness) -> None:
    table = cli.run("get-card", "C1")
    assert table.code == 0, table.err
    assert MASKED in table.out
    assert PAN not in table.out
    document = json.loads(cli.run("get-card", "C1", "--json").out)
    assert document["pan"] == ""
    assert document["masked_pan"] == MASKED
    assert [c[1].card_id for c in cli.fake.calls] == ["C1", "C1"]


def test_get_account_table(cli: Harness) -> None:
    result = cli.run("get-account", "A1")
    assert result.code == 0, result.err
    assert cli.only_request("GetAccount").account_id == "A1"
    assert "1234567 fen (¥12,345.67)" in result.out
    assert "5000 fen (¥50.00)" in result.out
    assert "深圳物流有限公司" in result.out


def test_json_output_and_global_options_after_subcommand(cli: Harness) -> None:
    result = cli.run("get-account", "A1", "--json")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert document["account_id"] == "A1"
    assert document["balance"] == "1234567"  # proto3 JSON: int64 as a string
    assert document["holder_name"] == "深圳物流有限公司"
    assert document["card_ids"] == ["C1", "C2"]


def test_json_output_keeps_zero_fields(cli: Harness) -> None:
    result = cli.run("--json", "create-account", "--kind", "personal", "--holder", "Li Lei")
    document = json.loads(result.out)
    assert document["balance"] == "0"
    assert document["kind"] == "personal"


def test_register_station(cli: Harness) -> None:
    result = cli.run(
        "register-station", "--id", "S1", "--name", "Shennan Rd", "--region", "GD-SZ",
        "--lat", "22.5431", "--lon", "114.0579", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    request = cli.only_request("RegisterStation")
    assert (request.station_id, request.name, request.region) == ("S1", "Shennan Rd", "GD-SZ")
    assert (request.latitude, request.longitude) == (22.5431, 114.0579)
    assert json.loads(result.out)["prices"] == [
        {"product_code": "95", "unit_price": "738", "effective_from_ms": "0"}
    ]


def test_register_station_class(cli: Harness) -> None:
    result = cli.run("register-station", "--id", "S1", "--name", "G4", "--class", "highway")
    assert result.code == 0, result.err
    assert cli.only_request("RegisterStation").station_class == "highway"
    assert cli.run("register-station", "--id", "S1", "--name", "G4").code == 0
    assert cli.fake.calls[1][1].station_class == ""  # not given: the switch keeps the current class
    for bad in ("Highway", "a b", "x" * 33, ""):
        assert cli.run("register-station", "--id", "S1", "--name", "G4", "--class", bad).code == 2
    assert len(cli.fake.calls) == 2


def test_set_offline_limits_of_a_station(cli: Harness) -> None:
    result = cli.run("set-offline-limits", "--station", "S1", "--floor-limit", "20000", "--max-per-card-per-day", "3")
    assert result.code == 0, result.err
    limits = cli.only_request("SetStationOfflineLimits").limits
    assert (limits.HasField("floor_limit"), limits.floor_limit, limits.max_per_card_per_day) == (True, 20000, 3)
    assert not limits.HasField("max_count") and not limits.HasField("max_total")  # network defaults
    assert "20000 fen (¥200.00)" in result.out and "200 (network default)" in result.out
    assert "class" in result.out and "highway" in result.out and "1800 s" in result.out


def test_set_offline_limits_of_a_card(cli: Harness) -> None:
    result = cli.run("set-offline-limits", "--card", "C1", "--floor-limit", "0")
    assert result.code == 0, result.err
    request = cli.only_request("SetCardOfflineLimit")
    assert (request.card_id, request.HasField("floor_limit"), request.floor_limit) == ("C1", True, 0)
    assert "never offline" in result.out and PAN not in result.out
    cleared = cli.run("--json", "set-offline-limits", "--card", "C1")
    assert not cli.fake.calls[1][1].HasField("floor_limit")  # the station's limit applies again
    assert "offline_floor_limit" not in json.loads(cleared.out)


@pytest.mark.parametrize("argv", [
    ["--card", "C1", "--max-count", "5"],
    ["--card", "C1", "--station", "S1"],
    [],
    ["--station", "S1", "--floor-limit", "-1"],
    ["--station", "S1", "--max-count", "1000001"],
    ["--station", "S1", "--max-total", "1.5"],
])
def test_set_offline_limits_bad_usage(cli: Harness, argv: list[str]) -> None:
    assert cli.run("set-offline-limits", *argv).code == 2
    assert cli.fake.calls == []


def test_list_stations(cli: Harness) -> None:
    result = cli.run("list-stations", "--class", "highway")
    assert result.code == 0, result.err
    assert cli.only_request("ListStations").station_class == "highway"
    rows = {line.split()[0]: line.split()[-6:] for line in result.out.splitlines() if line.strip().startswith("S")}
    assert rows["S1"] == ["highway", "1800", "10000", "200*", "2000000*", "2*"]  # * = the network default
    assert rows["S2"] == ["standard", "900", "30000*", "200*", "2000000*", "2*"]
    assert "* = network default" in result.out and "2 stations" in result.out
    document = json.loads(cli.run("--json", "list-stations").out)
    assert [s["station_class"] for s in document["stations"]] == ["highway", "standard"]


@pytest.mark.parametrize(
    "argv", [["--lat", "22.5"], ["--lat", "91", "--lon", "0"], ["--lat", "nan", "--lon", "0"]]
)
def test_register_station_bad_coordinates(cli: Harness, argv: list[str]) -> None:
    assert cli.run("register-station", "--id", "S1", "--name", "N", *argv).code == 2
    assert cli.fake.calls == []


def test_register_terminal(cli: Harness) -> None:
    result = cli.run(
        "register-terminal", "--id", "T-01", "--station", "S1", "--public-key", PUBLIC_KEY
    )
    assert result.code == 0, result.err
    request = cli.only_request("RegisterTerminal")
    assert (request.terminal_id, request.station_id) == ("T-01", "S1")
    assert request.public_key == PUBLIC_KEY.lower()


def test_set_terminal_state(cli: Harness) -> None:
    result = cli.run("set-terminal-state", "--id", "T-01", "--state", "revoked", "--reason", "stolen")
    assert result.code == 0, result.err
    request = cli.only_request("SetTerminalState")
    assert (request.terminal_id, request.state, request.reason) == ("T-01", "revoked", "stolen")
    assert "revoked (stolen)" in result.out
    assert cli.run("set-terminal-state", "--id", "T-01", "--state", "paused").code == 2


@pytest.mark.parametrize("key", ["04" + "ab" * 63, "05" + "ab" * 64, "04" + "zz" * 64])
def test_register_terminal_bad_key(cli: Harness, key: str) -> None:
    assert (
        cli.run("register-terminal", "--id", "T", "--station", "S", "--public-key", key).code == 2
    )
    assert cli.fake.calls == []


# --- errors -----------------------------------------------------------------------------------


def test_missing_token_is_usage_error(cli: Harness) -> None:
    result = cli.run("get-account", "A1", token=None)
    assert result.code == 2
    assert "token" in result.err and admin_cli.ENV_TOKEN in result.err
    assert cli.fake.calls == []


def test_unauthenticated_from_server(cli: Harness) -> None:
    result = cli.run("get-account", "A1", token="wrong")
    assert result.code == 1
    assert result.err.startswith("error: UNAUTHENTICATED: operator token missing or wrong")
    assert cli.fake.calls[0][2]["authorization"] == "Bearer wrong"


def test_not_found_from_server(cli: Harness) -> None:
    result = cli.run("get-account", "A404")
    assert result.code == 1
    assert "error: NOT_FOUND: no account A404" in result.err


def test_unreachable_target_fails_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = admin_cli.main(
        ["--target", f"127.0.0.1:{port}", "--token", TOKEN, "--timeout", "2",
         "top-up", "--account", "A1", "--amount", "100", "--reference", "R1"],
    stdout=out, stderr=err)  # fmt: skip
    assert code == 3
    assert time.monotonic() - started < 3
    assert err.getvalue().startswith("error: UNAVAILABLE") or "DEADLINE_EXCEEDED" in err.getvalue()
    assert "same --reference" in err.getvalue()
    assert out.getvalue() == ""


def test_help_exits_zero(cli: Harness) -> None:
    result = cli.run("list-transactions", "--help")
    assert result.code == 0
    assert "--csv" in result.out


# --- transactions -----------------------------------------------------------------------------


def test_list_transactions_sends_filters(cli: Harness) -> None:
    result = cli.run(
        "list-transactions", "--account", "A1", "--card", "C1", "--station", "S1",
        "--from", "2024-05-01", "--to", "2024-05-02T00:00:00Z",
        "--kind", "sale", "refund", "--kind", "topup", "--limit", "20",
    )  # fmt: skip
    assert result.code == 0, result.err
    request = cli.only_request("ListTransactions")
    assert (request.account_id, request.card_id, request.station_id) == ("A1", "C1", "S1")
    assert request.from_time_ms == 1714492800000  # 2024-05-01 00:00 UTC+8
    assert request.to_time_ms == 1714608000000
    assert list(request.kinds) == ["sale", "refund", "topup"]
    assert (request.limit, request.page_token) == (20, "")
    # One page only without --csv; the table shows masked PANs and both units.
    assert MASKED in result.out and PAN not in result.out
    assert "25830" in result.out and "¥258.30" in result.out and "-¥258.30" in result.out
    assert "--page-token p2" in result.out


def test_list_transactions_needs_account_or_card(cli: Harness) -> None:
    assert cli.run("list-transactions", "--station", "S1").code == 2
    assert cli.run("list-transactions", "--account", "A1", "--kind", "bogus").code == 2
    assert (
        cli.run(
            "list-transactions", "--account", "A1", "--from", "2024-05-02", "--to", "2024-05-01"
        ).code
        == 2
    )
    assert cli.fake.calls == []


def test_list_transactions_json_page(cli: Harness) -> None:
    result = cli.run("list-transactions", "--card", "C1", "--page-token", "p2", "--json")
    assert result.code == 0, result.err
    assert cli.only_request("ListTransactions").page_token == "p2"
    document = json.loads(result.out)
    assert [t["transaction_id"] for t in document["transactions"]] == ["T1"]
    assert document["next_page_token"] == ""


def test_list_transactions_csv_follows_pages(cli: Harness, tmp_path: Path) -> None:
    target = tmp_path / "txns.csv"
    result = cli.run("list-transactions", "--account", "A1", "--kind", "sale", "--csv", str(target))
    assert result.code == 0, result.err
    requests = [c[1] for c in cli.fake.calls]
    assert [r.page_token for r in requests] == ["", "p2"]
    assert all(r.account_id == "A1" and list(r.kinds) == ["sale"] for r in requests)
    assert requests[0].limit == admin_cli.MAX_PAGE_SIZE
    assert "wrote 3 transactions (2 pages)" in result.out

    with target.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0].keys()) == list(admin_cli.CSV_COLUMNS)
    assert [r["transaction_id"] for r in rows] == ["T3", "T2", "T1"]
    sale, topup, refund = rows
    assert (sale["amount_fen"], sale["amount_yuan"]) == ("25830", "258.30")
    assert (sale["balance_change_fen"], sale["balance_change_yuan"]) == ("-25830", "-258.30")
    assert (sale["balance_after_fen"], sale["balance_after_yuan"]) == ("100005", "1000.05")
    assert sale["masked_pan"] == MASKED
    assert sale["time"] == "2024-05-01T08:00:00.003+08:00"
    assert (sale["volume_ml"], sale["unit_price_fen"], sale["product_code"]) == (
        "35000",
        "738",
        "95",
    )
    assert (topup["amount_fen"], topup["amount_yuan"]) == ("5", "0.05")
    assert topup["reference"] == "'=HYPERLINK(1)"  # not run as a spreadsheet formula
    assert (refund["balance_after_fen"], refund["balance_after_yuan"]) == ("-1", "-0.01")
    assert PAN not in target.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["txns.csv"]  # no temporary file left


def test_list_transactions_csv_to_stdout(cli: Harness) -> None:
    result = cli.run("list-transactions", "--account", "A1", "--csv", "-")
    assert result.code == 0, result.err
    rows = list(csv.reader(io.StringIO(result.out)))
    assert rows[0] == list(admin_cli.CSV_COLUMNS)
    assert len(rows) == 4


def test_list_transactions_csv_error_leaves_no_file(cli: Harness, tmp_path: Path) -> None:
    target = tmp_path / "txns.csv"
    cli.fake.loop_pages = True  # the server keeps answering with the same page token
    result = cli.run("list-transactions", "--account", "A1", "--csv", str(target))
    assert result.code == 1
    assert "repeated a page token" in result.err
    assert list(tmp_path.iterdir()) == []


def test_list_transactions_csv_unwritable_is_usage_error(cli: Harness, tmp_path: Path) -> None:
    result = cli.run(
        "list-transactions", "--account", "A1", "--csv", str(tmp_path / "no" / "x.csv")
    )
    assert result.code == 2
    assert cli.fake.calls == []
