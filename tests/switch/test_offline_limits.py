"""Station classes and offline risk bounds through the real gRPC API: hold lifetimes by station class,
offline limits per station and per card (set by CardAdmin, delivered by SyncHotlist, enforced by
UploadOffline in the order of docs/pos-protocol.md §9.3), and all of it across a restart."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, pos_pb2

from loadtest.provision import Network, Operator, provision
from loadtest.terminal import Terminal
from switch.cli import build_parser
from switch.config import ServeConfig, load_config
from switch.hotlist import pan_sm3
from switch.offline import DAY_MS, UTC8_MS, offline_day
from switch.server import start_switch
from tests.switch.conftest import OPERATOR_TOKEN, assert_memory_equals_database

DEFAULT_FLOOR = 30_000  # OfflineConfig's network defaults
DEFAULT_PER_CARD_PER_DAY = 2


def _day_noon(now_ms: int, days_ago: int) -> int:
    """Noon (UTC+8) of the day `days_ago` before today: 12..36 h ago for 1, always within max_age_ms."""
    return (offline_day(now_ms) - days_ago) * DAY_MS - UTC8_MS + 12 * 3600 * 1000


def _sale(card, stan: int, amount: int, sale_time_ms: int, *, hotlist_version: int = 0) -> pos_pb2.OfflineTransaction:
    record = pos_pb2.OfflineTransaction(pan=card.pan, amount=amount, volume_ml=amount * 1000 // 738,
                                        product_code="92", unit_price=738, transaction_time_ms=sale_time_ms,
                                        hotlist_version=hotlist_version, pump=1)
    record.header.stan = stan
    return record


def _codes(result: pos_pb2.OfflineUploadResult) -> list[str]:
    return [r.response_code if r.status != "duplicate" else "dup" for r in result.results]


async def _station_limits(operator: Operator, station_id: str, **limits: int) -> admin_pb2.Station:
    return await operator.call("SetStationOfflineLimits", admin_pb2.SetStationOfflineLimitsRequest(
        station_id=station_id, limits=admin_pb2.OfflineLimitSettings(**limits)))


async def _card_limit(operator: Operator, card_id: str, floor_limit: int | None) -> admin_pb2.Card:
    return await operator.call("SetCardOfflineLimit", admin_pb2.SetCardOfflineLimitRequest(
        card_id=card_id, floor_limit=floor_limit))


@contextlib.asynccontextmanager
async def _running(config: ServeConfig) -> AsyncIterator[tuple[object, grpc.aio.Channel]]:
    """A switch on `config` (its database kept between uses: a second use is a restart)."""
    running = await start_switch(config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, channel
        await assert_memory_equals_database(running)
    finally:
        await running.stop(1.0)


async def _signed_on(channel: grpc.aio.Channel, network: Network, n: int = 0) -> Terminal:
    spec = network.terminals[n]
    terminal = Terminal(channel, spec.terminal_id, spec.private_key_hex, spec.public_key_hex,
                        require_response_mac=True)
    await terminal.sign_on()
    return terminal


# -- hold lifetime by station class ----------------------------------------------------------


async def test_stations_of_different_classes_get_different_hold_deadlines_also_after_a_restart(switch_config):
    config = dataclasses.replace(switch_config, hold_ttl_s=900, hold_ttl_by_class="highway=1800,truck=3600")
    async with _running(config) as (running, channel):
        operator = Operator(channel, OPERATOR_TOKEN)
        town = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=100_000,
                               station_id="ST-TOWN")
        await operator.call("RegisterStation", admin_pb2.RegisterStationRequest(
            station_id="ST-HW", name="G4 服务区", station_class="highway"))
        # provision() registers the station again without a class: the class stays.
        highway = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=1, balance_fen=100_000,
                                  station_id="ST-HW")
        deadlines = {}
        for network in (town, highway):
            terminal = await _signed_on(channel, network)
            card = network.cards[0]
            before = running.app.clock_ms()
            auth = (await terminal.authorize(card.pan, card.pin, 10_000, "92")).response
            assert auth.response_code == "00"
            deadlines[network.station_id] = auth.expires_at_ms - before
        assert 900_000 <= deadlines["ST-TOWN"] < 905_000
        assert 1_800_000 <= deadlines["ST-HW"] < 1_805_000
        listed = await operator.call("ListStations", admin_pb2.ListStationsRequest())
        assert [(s.station_id, s.station_class, s.hold_ttl_s) for s in listed.stations] == [
            ("ST-HW", "highway", 1800), ("ST-TOWN", "standard", 900)]
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await operator.call("RegisterStation", admin_pb2.RegisterStationRequest(
                station_id="ST-X", name="x", station_class="Highway Rest"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async with _running(config) as (running, channel):  # a restart keeps the class
        operator = Operator(channel, OPERATOR_TOKEN)
        only = await operator.call("ListStations", admin_pb2.ListStationsRequest(station_class="highway"))
        assert [(s.station_id, s.name, s.hold_ttl_s) for s in only.stations] == [("ST-HW", "中石化 示范站", 1800)]
        terminal = await _signed_on(channel, highway)
        card = highway.cards[0]
        before = running.app.clock_ms()
        auth = (await terminal.authorize(card.pan, card.pin, 10_000, "92")).response
        assert 1_800_000 <= auth.expires_at_ms - before < 1_805_000
        # The class changes with RegisterStation; the next hold at the station gets the new lifetime.
        await operator.call("RegisterStation", admin_pb2.RegisterStationRequest(
            station_id="ST-HW", name="G4 服务区", station_class="truck"))
        before = running.app.clock_ms()
        auth = (await terminal.authorize(card.pan, card.pin, 10_000, "92")).response
        assert 3_600_000 <= auth.expires_at_ms - before < 3_605_000


def test_hold_ttl_by_class_from_flag_variable_and_toml(tmp_path: Path):
    args = build_parser().parse_args(["serve", "--operator-token", "t", "--hold-ttl-by-class", "highway=1800,truck=3600"])
    flags = {k: v for k, v in vars(args).items() if k != "command"}
    assert load_config(flags, {}).hold_ttl_s_by_class() == {"highway": 1800, "truck": 3600}
    base = {"operator_token": "t"}
    assert load_config(base, {"FUELSWITCH_HOLD_TTL_BY_CLASS": "truck=7200"}).hold_ttl_s_by_class() == {"truck": 7200}
    as_string, as_table = tmp_path / "string.toml", tmp_path / "table.toml"
    as_string.write_text('hold_ttl_by_class = "highway = 1800, truck=3600"\n')
    as_table.write_text("[hold_ttl_by_class]\nhighway = 1800\ntruck = 3600\n")
    for path in (as_string, as_table):
        assert load_config({**base, "config": str(path)}, {}).hold_ttl_s_by_class() == {"highway": 1800, "truck": 3600}
    assert load_config(base, {}).hold_ttl_s_by_class() == {}
    for bad in ("highway=59", "highway=86401", "highway", "High way=600", "a=600,a=700", "highway=1e3"):
        with pytest.raises(ValueError, match="hold_ttl_by_class"):
            load_config({**base, "hold_ttl_by_class": bad}, {})


# -- offline rules, one table ----------------------------------------------------------------


@dataclass
class Case:
    """Set limits, upload `sales` (card index, amount, days ago) in one stream, expect these codes."""

    station: dict[str, int] = field(default_factory=dict)
    cards: dict[int, int] = field(default_factory=dict)  # card index -> its own floor limit
    sales: list[tuple[int, int, int]] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)


CASES = {
    "network floor limit": Case(sales=[(0, DEFAULT_FLOOR, 1), (1, DEFAULT_FLOOR + 1, 1)], expected=["00", "61"]),
    "station floor limit": Case(station={"floor_limit": 10_000}, sales=[(0, 10_000, 1), (1, 10_001, 1)],
                                expected=["00", "61"]),
    "station floor 0: nothing offline": Case(station={"floor_limit": 0}, sales=[(0, 1, 1)], expected=["61"]),
    "card's own limit above the station's": Case(
        station={"floor_limit": 10_000}, cards={0: 50_000},
        sales=[(0, 50_000, 1), (1, 40_000, 1)], expected=["00", "61"]),
    "card's own limit below the network's": Case(cards={0: 5_000}, sales=[(0, 5_001, 1), (0, 5_000, 1)],
                                                  expected=["61", "00"]),
    "card's own limit 0: never offline": Case(cards={0: 0}, sales=[(0, 1, 1), (1, 1, 1)], expected=["61", "00"]),
    "per card per day (network: 2)": Case(
        sales=[(0, 100, 1), (0, 100, 1), (0, 100, 1), (0, 100, 2), (1, 100, 1)],
        expected=["00", "00", "65", "00", "00"]),
    "per card per day (station: 1)": Case(station={"max_per_card_per_day": 1}, sales=[(0, 100, 1), (0, 100, 1)],
                                          expected=["00", "65"]),
    "per card per day 0: nothing offline": Case(station={"max_per_card_per_day": 0}, sales=[(0, 100, 1)],
                                                expected=["65"]),
    "max_count per upload": Case(
        station={"max_count": 3}, sales=[(0, 100, 1), (1, 100, 1), (2, 100, 1), (3, 100, 1), (0, 100, 2)],
        expected=["00", "00", "00", "65", "65"]),
    "max_total per upload": Case(
        station={"max_total": 25_000}, sales=[(0, 10_000, 1), (1, 10_000, 1), (2, 10_000, 1), (3, 5_000, 1)],
        expected=["00", "00", "61", "00"]),
    "rejected records use no bounds": Case(
        station={"max_count": 2, "floor_limit": 10_000}, sales=[(0, 10_001, 1), (1, 100, 1), (2, 100, 1)],
        expected=["61", "00", "00"]),
    "order: floor limit before per card per day": Case(
        station={"max_per_card_per_day": 1}, sales=[(0, 100, 1), (0, DEFAULT_FLOOR + 1, 1)],
        expected=["00", "61"]),
    "order: per card per day before max_count": Case(
        station={"max_count": 1}, sales=[(0, 100, 1), (0, 100, 1), (0, 100, 1)], expected=["00", "65", "65"]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_offline_rules(switch, channel, network, terminal, case: Case):
    operator = Operator(channel, OPERATOR_TOKEN)
    if case.station:
        await _station_limits(operator, network.station_id, **case.station)
    for index, limit in case.cards.items():
        await _card_limit(operator, network.cards[index].card_id, limit)
    version = (await terminal.sync_hotlist(0)).response.version  # the terminal knows the cards' own limits
    now = terminal.now_ms()
    records = [_sale(network.cards[i], 60_000 + n, amount, _day_noon(now, days_ago), hotlist_version=version)
               for n, (i, amount, days_ago) in enumerate(case.sales)]
    result = await terminal.upload_offline(records)
    assert _codes(result) == case.expected
    assert [r.status for r in result.results] == ["applied" if c == "00" else "rejected" for c in case.expected]
    spent = sum(r.amount for r, code in zip(records, case.expected, strict=True) if code == "00")
    balances = 0
    for card in network.cards:
        account = await operator.call("GetAccount", admin_pb2.GetAccountRequest(account_id=card.account_id))
        balances += account.balance
    assert balances == 4 * 100_000 - spent
    again = await terminal.upload_offline(records)  # every record again: first results, nothing moves
    assert _codes(again) == ["dup" if c == "00" else c for c in case.expected]


async def test_per_card_per_day_counts_across_uploads_per_terminal_and_rejections_stick(switch, channel, network,
                                                                                       terminal):
    card, other_card = network.cards[0], network.cards[1]
    now = terminal.now_ms()
    yesterday, earlier = _day_noon(now, 1), _day_noon(now, 2)
    first = await terminal.upload_offline([_sale(card, 70_001, 100, yesterday), _sale(card, 70_002, 100, earlier)])
    assert _codes(first) == ["00", "00"]
    second = await terminal.upload_offline([
        _sale(card, 70_003, 100, yesterday + 3_600_000),  # the 2nd sale of yesterday: still within 2
        _sale(card, 70_004, 100, yesterday + 7_200_000),  # the 3rd: 65
        _sale(other_card, 70_005, 100, yesterday),
    ])
    assert _codes(second) == ["00", "65", "00"]
    assert second.results[1].message.startswith("card's offline sales on this terminal that day exceed 2")
    # The count is per terminal: the same card at another terminal of the station starts afresh.
    elsewhere = await _signed_on(channel, network, 1)
    assert _codes(await elsewhere.upload_offline([_sale(card, 70_006, 100, yesterday)])) == ["00"]
    # Raising the limit does not turn a rejected record into an applied one: its first result stands.
    await _station_limits(Operator(channel, OPERATOR_TOKEN), network.station_id, max_per_card_per_day=10)
    repeat = await terminal.upload_offline([_sale(card, 70_004, 100, yesterday + 7_200_000)])
    assert _codes(repeat) == ["65"]
    assert _codes(await terminal.upload_offline([_sale(card, 70_007, 100, yesterday)])) == ["00"]
    # A new stream starts a new max_count tally.
    await _station_limits(Operator(channel, OPERATOR_TOKEN), network.station_id, max_count=1,
                          max_per_card_per_day=10)
    assert _codes(await terminal.upload_offline([_sale(other_card, 70_008, 100, earlier)])) == ["00"]
    assert _codes(await terminal.upload_offline([_sale(other_card, 70_009, 100, earlier),
                                                 _sale(other_card, 70_010, 100, earlier)])) == ["00", "65"]


async def test_limits_validation_and_what_operators_see(switch, channel, network):
    operator = Operator(channel, OPERATOR_TOKEN)
    station = await _station_limits(operator, network.station_id, floor_limit=20_000, max_per_card_per_day=5)
    own, effective = station.offline_limits, station.effective_offline_limits
    assert (own.HasField("floor_limit"), own.HasField("max_count"), own.floor_limit) == (True, False, 20_000)
    assert (effective.floor_limit, effective.max_count, effective.max_total, effective.max_per_card_per_day) == (
        20_000, 200, 2_000_000, 5)
    # RegisterStation does not touch the offline limits.
    again = await operator.call("RegisterStation", admin_pb2.RegisterStationRequest(
        station_id=network.station_id, name="renamed"))
    assert (again.name, again.effective_offline_limits.floor_limit, again.station_class) == ("renamed", 20_000,
                                                                                              "standard")
    cleared = await _station_limits(operator, network.station_id)  # nothing given: all network defaults
    assert not cleared.offline_limits.HasField("floor_limit") and cleared.effective_offline_limits.floor_limit == 30_000
    card = await _card_limit(operator, network.cards[0].card_id, 0)
    assert card.HasField("offline_floor_limit") and card.offline_floor_limit == 0
    card = await _card_limit(operator, network.cards[0].card_id, None)
    assert not card.HasField("offline_floor_limit")
    for call, code in (
        (_station_limits(operator, "ST-NOPE", floor_limit=1), grpc.StatusCode.NOT_FOUND),
        (_station_limits(operator, network.station_id, floor_limit=-1), grpc.StatusCode.INVALID_ARGUMENT),
        (_station_limits(operator, network.station_id, floor_limit=10_000_001), grpc.StatusCode.INVALID_ARGUMENT),
        (_station_limits(operator, network.station_id, max_count=1_000_001), grpc.StatusCode.INVALID_ARGUMENT),
        (_card_limit(operator, network.cards[0].card_id, -5), grpc.StatusCode.INVALID_ARGUMENT),
        (_card_limit(operator, "999999", 100), grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == code


# -- card limits on the hotlist --------------------------------------------------------------


async def test_card_limits_travel_as_hotlist_deltas_and_apply_as_of_the_terminals_version(switch, channel, network,
                                                                                         terminal):
    operator = Operator(channel, OPERATOR_TOKEN)
    a, b = network.cards[0], network.cards[1]
    before = (await terminal.sync_hotlist(0)).response.version
    await _card_limit(operator, a.card_id, 50_000)
    full = (await terminal.sync_hotlist(0)).response
    assert full.full_snapshot
    assert [(e.pan_sm3, e.response_code, e.floor_limit, e.removed) for e in full.entries] == [
        (pan_sm3(a.pan), "", 50_000, False)]
    known = full.version
    await operator.call("SetCardState", admin_pb2.SetCardStateRequest(card_id=a.card_id, state="frozen"))
    await operator.call("SetCardState", admin_pb2.SetCardStateRequest(card_id=a.card_id, state="active"))
    await _card_limit(operator, a.card_id, None)
    await _card_limit(operator, b.card_id, 0)
    await _card_limit(operator, b.card_id, 0)  # no change: no entry
    delta = (await terminal.sync_hotlist(known)).response
    assert not delta.full_snapshot and delta.version == known + 4
    assert [(e.pan_sm3, e.response_code, e.floor_limit, e.removed) for e in delta.entries] == [
        (pan_sm3(a.pan), "62", 0, False),  # declined: floor_limit means nothing then
        (pan_sm3(a.pan), "", 50_000, False),  # not declined any more; its own limit again
        (pan_sm3(a.pan), "", 0, True),  # own limit cleared: off the list
        (pan_sm3(b.pan), "", 0, False),  # never offline
    ]
    assert [e.version for e in delta.entries] == list(range(known + 1, known + 5))
    snapshot = (await terminal.sync_hotlist(0)).response
    assert [(e.pan_sm3, e.floor_limit, e.removed) for e in snapshot.entries] == [(pan_sm3(b.pan), 0, False)]

    # UploadOffline applies the card's limit the terminal knew at the sale (its hotlist_version).
    sold = _day_noon(terminal.now_ms(), 1)
    result = await terminal.upload_offline([
        _sale(a, 80_001, 40_000, sold, hotlist_version=known),  # knew a's own 50,000: applied
        _sale(a, 80_002, 40_000, sold, hotlist_version=before),  # before it: the network's 30,000
        _sale(a, 80_003, 40_000, sold, hotlist_version=delta.version),  # limit cleared by then
        _sale(b, 80_004, 100, sold, hotlist_version=known),  # b's 0 came later: applied
        _sale(b, 80_005, 100, sold, hotlist_version=delta.version),  # never offline
        _sale(a, 80_006, 100, sold, hotlist_version=known + 1),  # a was frozen at that version
    ])
    assert _codes(result) == ["00", "61", "61", "00", "61", "62"]


async def test_limits_and_counts_survive_a_restart(switch_config):
    async with _running(switch_config) as (running, channel):
        operator = Operator(channel, OPERATOR_TOKEN)
        network = await provision(channel, OPERATOR_TOKEN, terminals=1, cards=2, balance_fen=100_000)
        await _station_limits(operator, network.station_id, floor_limit=20_000, max_per_card_per_day=1)
        await _card_limit(operator, network.cards[1].card_id, 40_000)
        terminal = await _signed_on(channel, network)
        first = (await terminal.sync_hotlist(0)).response
        sold = _day_noon(terminal.now_ms(), 1)
        applied = await terminal.upload_offline([_sale(network.cards[0], 90_001, 100, sold)])
        assert _codes(applied) == ["00"]

    async with _running(switch_config) as (running, channel):
        terminal = await _signed_on(channel, network)
        again = (await terminal.sync_hotlist(0)).response
        assert [(e.pan_sm3, e.floor_limit, e.version) for e in again.entries] == [
            (e.pan_sm3, e.floor_limit, e.version) for e in first.entries]
        assert [(e.pan_sm3, e.floor_limit) for e in again.entries] == [(pan_sm3(network.cards[1].pan), 40_000)]
        assert (again.offline_limits.floor_limit, again.offline_limits.max_per_card_per_day) == (20_000, 1)
        result = await terminal.upload_offline([
            _sale(network.cards[0], 90_002, 100, sold),  # the day's one sale was applied before the restart
            _sale(network.cards[1], 90_003, 35_000, sold, hotlist_version=again.version),  # own limit: 40,000
            _sale(network.cards[0], 90_004, 25_000, _day_noon(terminal.now_ms(), 2)),  # station's 20,000
        ])
        assert _codes(result) == ["65", "00", "61"]
        station = (await Operator(channel, OPERATOR_TOKEN).call("ListStations", admin_pb2.ListStationsRequest())).stations[0]
        assert station.offline_limits.floor_limit == 20_000 and not station.offline_limits.HasField("max_count")
        card = await Operator(channel, OPERATOR_TOKEN).call("GetCard", admin_pb2.GetCardRequest(
            card_id=network.cards[1].card_id))
        assert card.offline_floor_limit == 40_000
