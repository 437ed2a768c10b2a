"""Offline operation through gRPC: UploadOffline applies each sale exactly once, SyncHotlist hands out
versioned changes, and station prices with effective times."""

from __future__ import annotations

import grpc
import pytest
from fuelswitch.v1 import admin_pb2, pos_pb2
from fuelswitch.v1.common_pb2 import ProductPrice

from loadtest.provision import Operator
from switch import sm3
from switch.hotlist import pan_sm3
from switch.offline import NEGATIVE_REVIEW


def _sale(card, stan: int, amount: int, now_ms: int, *, hotlist_version: int = 0, product: str = "92",
          hold_id: str = "") -> pos_pb2.OfflineTransaction:
    record = pos_pb2.OfflineTransaction(pan=card.pan, amount=amount, volume_ml=amount * 1000 // 738,
                                        product_code=product, unit_price=738, transaction_time_ms=now_ms - 60_000,
                                        hotlist_version=hotlist_version, pump=3, hold_id=hold_id)
    record.header.stan = stan
    return record


async def _generous_station(channel, station_id: str) -> None:
    """Bounds far above the defaults, for tests of exactly-once uploads with many sales per card."""
    await Operator(channel, "test-operator-token").call("SetStationOfflineLimits", admin_pb2.SetStationOfflineLimitsRequest(
        station_id=station_id, limits=admin_pb2.OfflineLimitSettings(max_count=20_000, max_total=10**10,
                                                                     max_per_card_per_day=20_000)))


async def _balance(channel, card) -> int:
    account = await Operator(channel, "test-operator-token").call(
        "GetAccount", admin_pb2.GetAccountRequest(account_id=card.account_id))
    return account.balance


async def test_a_batch_with_duplicates_and_a_negative_balance_moves_money_once(switch, channel, network, terminal):
    rich, poor = network.cards[0], network.cards[1]  # 100,000 fen each
    await _generous_station(channel, network.station_id)
    now = terminal.now_ms()
    records = [_sale(rich, 10_000 + i, 1_000 + i, now) for i in range(80)]  # 83,160 fen in all
    records += [_sale(poor, 20_000 + i, 25_000, now) for i in range(5)]  # 125,000 > 100,000: goes negative
    records.append(records[7])  # the same sale twice in one upload
    first = await terminal.upload_offline(records)
    assert (first.applied, first.duplicate, first.rejected) == (85, 1, 0)
    spent_rich = sum(1_000 + i for i in range(80))
    assert await _balance(channel, rich) == 100_000 - spent_rich
    assert await _balance(channel, poor) == -25_000
    assert [r.flagged for r in first.results[80:85]] == [False] * 4 + [True]

    again = await terminal.upload_offline(records)  # the whole batch a second time
    assert (again.applied, again.duplicate, again.rejected) == (0, 86, 0)
    assert [r.transaction_id for r in again.results[:85]] == [r.transaction_id for r in first.results[:85]]
    assert await _balance(channel, rich) == 100_000 - spent_rich

    # The debt hotlists the poor card; a top-up that settles it takes the card off again.
    hot = (await terminal.sync_hotlist(0)).response
    assert [(e.pan_sm3, e.response_code) for e in hot.entries] == [(pan_sm3(poor.pan), "51")]
    async with switch.pool.acquire() as conn:
        flagged = await conn.fetchval("SELECT count(*) FROM transactions WHERE review = $1", NEGATIVE_REVIEW)
    assert flagged == 1
    await Operator(channel, "test-operator-token").call("TopUp", admin_pb2.TopUpRequest(
        account_id=poor.account_id, amount=30_000, reference="settle-debt"))
    delta = (await terminal.sync_hotlist(hot.version)).response
    assert [(e.pan_sm3, e.removed) for e in delta.entries] == [(pan_sm3(poor.pan), True)]
    assert not delta.full_snapshot and delta.version == hot.version + 1


async def test_rejections_follow_the_documented_rules(switch, channel, network, terminal):
    card, frozen = network.cards[0], network.cards[2]
    operator = Operator(channel, "test-operator-token")
    await operator.call("SetCardState", admin_pb2.SetCardStateRequest(card_id=frozen.card_id, state="frozen"))
    listed_at = (await terminal.sync_hotlist(0)).response.version
    now = terminal.now_ms()
    stale = _sale(card, 30_004, 500, now)
    stale.transaction_time_ms = now - 4 * 24 * 3600 * 1000
    used = await terminal.balance_inquiry(card.pan, card.pin)  # STAN used online
    records = [
        _sale(card, 30_001, 0, now),  # 13
        _sale(card, 30_002, 500, now, product="97"),  # 12 unknown product
        _sale(card, 30_003, 30_001, now),  # 61 above the floor limit
        stale,  # 12 too old
        _sale(frozen, 30_005, 500, now, hotlist_version=listed_at),  # 62: listed when the terminal sold it
        _sale(frozen, 30_006, 500, now, hotlist_version=listed_at - 1),  # sold before it knew: applied
        _sale(card, used.stan, 500, now),  # 94: the STAN belongs to another message
    ]
    result = await terminal.upload_offline(records)
    assert [(r.status, r.response_code) for r in result.results] == [
        ("rejected", "13"), ("rejected", "12"), ("rejected", "61"), ("rejected", "12"),
        ("rejected", "62"), ("applied", "00"), ("rejected", "94")]
    again = await terminal.upload_offline(records[:1])
    assert (again.results[0].status, again.results[0].response_code) == ("rejected", "13")  # its first result


async def test_a_bad_record_mac_ends_the_stream_but_earlier_records_stay(switch, channel, network, terminal):
    card = network.cards[0]
    now = terminal.now_ms()
    good = await terminal.upload_offline([_sale(card, 40_001, 700, now)])
    assert good.applied == 1
    session = terminal.session
    original_key = session.mac_key
    try:
        object.__setattr__(session, "mac_key", b"\x00" * 16)  # records MAC'ed under a wrong key
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await terminal.upload_offline([_sale(card, 40_002, 700, now)])
    finally:
        object.__setattr__(session, "mac_key", original_key)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await _balance(channel, card) == 100_000 - 700


async def test_an_oversized_or_garbled_batch_message_is_refused_and_moves_nothing(switch, channel, network,
                                                                                 terminal):
    card = network.cards[0]
    now = terminal.now_ms()
    with pytest.raises(grpc.aio.AioRpcError) as oversized:  # 5,001 records in one OfflineBatch message
        await terminal.upload_offline([_sale(card, 50_000 + i, 1, now) for i in range(5_001)], per_message=5_001)
    assert oversized.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    upload = channel.stream_unary("/fuelswitch.v1.PosGateway/UploadOfflineBatch")
    with pytest.raises(grpc.aio.AioRpcError) as garbled:
        await upload(iter([b"\xff\xff\xff"]), metadata=terminal.session_metadata(
            sm3.mac_hex(terminal.session.mac_key, b"")), timeout=10)
    assert garbled.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _balance(channel, card) == 100_000


async def test_station_prices_take_effect_at_their_time_and_reach_terminals(switch, channel, network, terminal):
    operator = Operator(channel, "test-operator-token")
    now = terminal.now_ms()
    station = await operator.call("SetStationPrices", admin_pb2.SetStationPricesRequest(
        station_id=network.station_id, prices=[ProductPrice(product_code="92", unit_price=701),
                                               ProductPrice(product_code="95", unit_price=801,
                                                            effective_from_ms=now + 3_600_000),
                                               ProductPrice(product_code="0", unit_price=0)]))
    prices = {p.product_code: p.unit_price for p in station.prices}
    assert prices["92"] == 701 and prices["95"] != 801 and "0" not in prices  # 95 changes in an hour
    card = network.cards[0]
    auth = (await terminal.authorize(card.pan, card.pin, 7_010, "92")).response
    assert (auth.unit_price, auth.approved_volume_ml) == (701, 10_000)
    diesel = (await terminal.authorize(card.pan, card.pin, 1_000, "0")).response
    assert diesel.response_code == "12"  # not sold at this station any more
    hot = (await terminal.sync_hotlist(0)).response
    assert {p.product_code: p.unit_price for p in hot.prices}["92"] == 701
    # A completion whose amount does not match litres × price is accepted and flagged, never declined.
    done = (await terminal.complete(auth.hold_id, 7_000, 10_000, "92", 701)).response
    assert done.response_code == "00" and "flagged for review" in done.message and done.list_price == 701
    async with switch.pool.acquire() as conn:
        review = await conn.fetchval("SELECT review FROM transactions WHERE transaction_id = $1",
                                     int(done.transaction_id))
    assert review == "amount differs from litres × unit price"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await operator.call("SetStationPrices", admin_pb2.SetStationPricesRequest(
            station_id=network.station_id, prices=[ProductPrice(product_code="93", unit_price=700)]))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_hotlist_deltas_full_snapshots_and_restart(switch, channel, network, terminal):
    operator = Operator(channel, "test-operator-token")
    cards = network.cards
    for card, state in zip(cards[:3], ("lost", "frozen", "frozen"), strict=True):
        await operator.call("SetCardState", admin_pb2.SetCardStateRequest(card_id=card.card_id, state=state))
    first = (await terminal.sync_hotlist(0)).response
    assert first.full_snapshot and len(first.entries) == 3
    assert {e.response_code for e in first.entries} == {"41", "62"}
    assert all(e.masked_pan.startswith("900001") and "*" in e.masked_pan for e in first.entries)
    await operator.call("SetCardState", admin_pb2.SetCardStateRequest(card_id=cards[1].card_id, state="active"))
    delta = (await terminal.sync_hotlist(first.version)).response
    assert [(e.pan_sm3, e.removed) for e in delta.entries] == [(pan_sm3(cards[1].pan), True)]
    nothing = (await terminal.sync_hotlist(delta.version)).response
    assert (list(nothing.entries), nothing.version, nothing.more) == ([], delta.version, False)
    unknown = (await terminal.sync_hotlist(delta.version + 100)).response  # a version this host never gave
    assert unknown.full_snapshot and len(unknown.entries) == 2
    assert unknown.offline_limits.floor_limit == 30_000 and unknown.station_id == network.station_id


@pytest.mark.parametrize("per_message", [1, 700], ids=["UploadOffline", "UploadOfflineBatch"])
async def test_ten_thousand_records_twice_move_money_once(switch, channel, network, terminal, per_message):
    await _generous_station(channel, network.station_id)
    now = terminal.now_ms()
    cards = network.cards
    records = [_sale(cards[i % 3], 100_000 + i, 9, now) for i in range(9_900)]
    records += records[:99]  # resent within the same upload
    records += [_sale(cards[3], 120_000 + i, 30_000, now) for i in range(4)]  # 120,000 > 100,000: negative
    first = await terminal.upload_offline(records, per_message=per_message)
    assert (first.applied, first.duplicate, first.rejected) == (9_904, 99, 0)
    assert [r.stan for r in first.results] == [r.header.stan for r in records]
    assert sum(r.flagged for r in first.results) == 1
    again = await terminal.upload_offline(records, per_message=per_message)
    assert (again.applied, again.duplicate, again.rejected) == (0, 10_003, 0)
    for n, card in enumerate(cards[:3]):
        assert await _balance(channel, card) == 100_000 - 9 * len(range(n, 9_900, 3))
    assert await _balance(channel, cards[3]) == -20_000


async def test_a_hold_id_that_is_not_this_cards_hold_is_ignored(switch, channel, network, terminal):
    await _generous_station(channel, network.station_id)  # three sales of one card today
    mine, other = network.cards[0], network.cards[1]
    hold = (await terminal.authorize(other.pan, other.pin, 20_000, "92")).response
    assert hold.response_code == "00"
    now = terminal.now_ms()
    records = [_sale(mine, 60_001, 500, now, hold_id=hold.hold_id),  # another card's hold
               _sale(mine, 60_002, 500, now, hold_id="\u00b2"),  # a digit to str.isdigit, not to int()
               _sale(mine, 60_003, 500, now, hold_id="9" * 40)]  # beyond int64
    result = await terminal.upload_offline(records)
    assert (result.applied, result.rejected) == (3, 0)
    assert await _balance(channel, mine) == 100_000 - 1_500
    account = await Operator(channel, "test-operator-token").call(
        "GetAccount", admin_pb2.GetAccountRequest(account_id=other.account_id))
    assert account.held == 20_000  # the other card's hold is still open
