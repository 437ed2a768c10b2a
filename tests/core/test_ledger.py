"""The ledger's rules, one behaviour per test, on both engines."""

import pytest

from core import HoldState, Kind, Status

T0 = 1_000_000  # a time in ms; the core never reads a clock
TTL = 60_000


def funded(ledger, account_id=1, balance=10_000, overdraft=0):
    assert ledger.open_account(account_id, balance, overdraft) is Status.OK
    return account_id


def test_hold_counts_against_availability_at_once(ledger):
    funded(ledger, 1, 10_000)
    assert ledger.hold(100, [(1, 6_000)], T0 + TTL) is Status.OK
    assert ledger.balance(1) == (10_000, 6_000)
    assert ledger.hold(101, [(1, 4_001)], T0 + TTL) is Status.INSUFFICIENT_FUNDS
    assert ledger.hold(102, [(1, 4_000)], T0 + TTL) is Status.OK
    assert ledger.balance(1) == (10_000, 10_000)


def test_settle_for_less_releases_the_rest(ledger):
    funded(ledger, 1, 10_000)
    ledger.hold(100, [(1, 8_000)], T0 + TTL)
    assert ledger.settle(100, 5_321, T0) is Status.OK
    assert ledger.balance(1) == (4_679, 0)
    info = ledger.get_hold(100)
    assert info.state is HoldState.SETTLED and info.posted == (5_321,)


def test_settle_never_more_than_held(ledger):
    funded(ledger, 1, 10_000)
    ledger.hold(100, [(1, 8_000)], T0 + TTL)
    assert ledger.settle(100, 8_001, T0) is Status.SETTLE_EXCEEDS_HOLD
    assert ledger.balance(1) == (10_000, 8_000)
    assert ledger.settle(100, 8_000, T0) is Status.OK  # a failed settle does not spend the hold
    assert ledger.balance(1) == (2_000, 0)


def test_settle_zero_posts_nothing(ledger):
    funded(ledger, 1, 10_000)
    ledger.hold(100, [(1, 8_000)], T0 + TTL)
    assert ledger.settle(100, 0, T0) is Status.OK
    assert ledger.balance(1) == (10_000, 0)


def test_multi_leg_hold_is_all_or_nothing(ledger):
    funded(ledger, 1, 10_000)  # the card's money
    funded(ledger, 2, 3_000)  # its daily amount limit, as a counter account
    funded(ledger, 3, 40_000)  # its daily litres limit (ml)
    assert ledger.hold(100, [(1, 5_000), (2, 5_000), (3, 30_000)], T0 + TTL) is Status.INSUFFICIENT_FUNDS
    assert [ledger.balance(a) for a in (1, 2, 3)] == [(10_000, 0), (3_000, 0), (40_000, 0)]
    assert ledger.hold(101, [(1, 3_000), (2, 3_000), (3, 30_000)], T0 + TTL) is Status.OK
    assert [ledger.balance(a) for a in (1, 2, 3)] == [(10_000, 3_000), (3_000, 3_000), (40_000, 30_000)]


def test_settle_per_leg_amounts_for_legs_in_other_units(ledger):
    funded(ledger, 1, 10_000)
    funded(ledger, 3, 40_000)
    ledger.hold(100, [(1, 5_000), (3, 30_000)], T0 + TTL)
    assert ledger.settle(100, [4_200, 27_500], T0) is Status.OK
    assert ledger.balance(1) == (5_800, 0)
    assert ledger.balance(3) == (12_500, 0)
    assert ledger.settle(100, [4_200], T0) is Status.LEGS_MISMATCH


def test_void_releases_everything(ledger):
    funded(ledger, 1, 10_000)
    ledger.hold(100, [(1, 8_000)], T0 + TTL)
    assert ledger.void(100) is Status.OK
    assert ledger.balance(1) == (10_000, 0)
    assert ledger.void(100) is Status.OK  # the repeat returns the first result
    assert ledger.settle(100, 1, T0) is Status.HOLD_VOIDED


def test_void_after_settle_and_settle_twice(ledger):
    funded(ledger, 1, 10_000)
    ledger.hold(100, [(1, 8_000)], T0 + TTL)
    assert ledger.settle(100, 7_000, T0) is Status.OK
    assert ledger.settle(100, 7_000, T0 + 5) is Status.OK  # same content: first result, no change
    assert ledger.settle(100, 6_000, T0) is Status.HOLD_SETTLED
    assert ledger.void(100) is Status.HOLD_SETTLED
    assert ledger.balance(1) == (3_000, 0)


def test_hold_expires_exactly_at_its_deadline(ledger):
    funded(ledger, 1, 10_000)
    ledger.hold(100, [(1, 8_000)], T0 + TTL)
    assert ledger.expire(T0 + TTL - 1) == 0
    assert ledger.balance(1) == (10_000, 8_000)
    assert ledger.expire(T0 + TTL) == 1
    assert ledger.balance(1) == (10_000, 0)
    assert ledger.settle(100, 1, T0) is Status.HOLD_EXPIRED
    assert ledger.void(100) is Status.HOLD_EXPIRED
    assert ledger.expire(T0 + TTL) == 0


def test_settle_at_the_deadline_finds_the_hold_expired_without_a_sweep(ledger):
    funded(ledger, 1, 10_000)
    ledger.hold(100, [(1, 8_000)], T0 + TTL)
    assert ledger.settle(100, 1_000, T0 + TTL - 1) is Status.OK
    ledger.hold(101, [(1, 500)], T0 + TTL)
    assert ledger.settle(101, 500, T0 + TTL) is Status.HOLD_EXPIRED
    assert ledger.balance(1) == (9_000, 0)
    assert ledger.get_hold(101).state is HoldState.EXPIRED
    assert ledger.expire(T0 + 10 * TTL) == 0


def test_expire_releases_in_deadline_order(ledger):
    funded(ledger, 1, 10_000)
    for hold_id, deadline in [(5, 300), (3, 100), (4, 100), (1, 200)]:
        ledger.hold(hold_id, [(1, 10)], deadline)
    ledger.drain_journal()
    assert ledger.expire(250) == 3
    assert [e.ref for e in ledger.drain_journal()] == [3, 4, 1]


def test_same_hold_id_same_content_returns_first_result(ledger):
    funded(ledger, 1, 10_000)
    assert ledger.hold(100, [(1, 8_000)], T0 + TTL) is Status.OK
    ledger.drain_journal()
    assert ledger.hold(100, [(1, 8_000)], T0 + TTL) is Status.OK
    assert ledger.balance(1) == (10_000, 8_000)
    assert ledger.drain_journal() == []  # nothing changed
    assert ledger.hold(100, [(1, 7_000)], T0 + TTL) is Status.EXISTS_WITH_DIFFERENT_CONTENT
    assert ledger.hold(100, [(1, 8_000)], T0 + TTL + 1) is Status.EXISTS_WITH_DIFFERENT_CONTENT


def test_a_failed_id_stays_failed(ledger):
    funded(ledger, 1, 100)
    assert ledger.hold(100, [(1, 500)], T0 + TTL) is Status.INSUFFICIENT_FUNDS
    assert ledger.credit(1, 1, 1_000) is Status.OK
    # A retry never turns a decline into an approval.
    assert ledger.hold(100, [(1, 500)], T0 + TTL) is Status.INSUFFICIENT_FUNDS
    assert ledger.balance(1) == (1_100, 0)
    assert ledger.settle(100, 1, T0) is Status.HOLD_NOT_FOUND
    assert ledger.debit(7, 1, 5_000) is Status.INSUFFICIENT_FUNDS
    assert ledger.credit(2, 1, 10_000) is Status.OK
    assert ledger.debit(7, 1, 5_000) is Status.INSUFFICIENT_FUNDS


def test_credit_and_debit_are_idempotent_by_id(ledger):
    funded(ledger, 1, 0)
    assert ledger.credit(1, 1, 5_000) is Status.OK
    assert ledger.credit(1, 1, 5_000) is Status.OK
    assert ledger.balance(1) == (5_000, 0)
    assert ledger.credit(1, 1, 4_000) is Status.EXISTS_WITH_DIFFERENT_CONTENT
    assert ledger.debit(1, 1, 5_000) is Status.EXISTS_WITH_DIFFERENT_CONTENT
    assert ledger.debit(2, 1, 1_000) is Status.OK
    assert ledger.debit(2, 1, 1_000) is Status.OK
    assert ledger.balance(1) == (4_000, 0)


def test_debit_respects_holds_and_overdraft(ledger):
    funded(ledger, 1, 1_000, overdraft=500)
    ledger.hold(100, [(1, 1_200)], T0 + TTL)
    assert ledger.debit(1, 1, 301) is Status.INSUFFICIENT_FUNDS
    assert ledger.debit(2, 1, 300) is Status.OK
    assert ledger.balance(1) == (700, 1_200)


def test_forced_debit_may_go_below_zero_and_says_so(ledger):
    funded(ledger, 1, 1_000)
    assert ledger.debit(1, 1, 600, force=True) is Status.OK
    assert ledger.debit(2, 1, 600, force=True) is Status.OK_NEGATIVE
    assert ledger.balance(1) == (-200, 0)
    assert ledger.hold(100, [(1, 1)], T0 + TTL) is Status.INSUFFICIENT_FUNDS
    entries = ledger.drain_journal()
    assert entries[-1].kind is Kind.HOLD_REJECTED
    assert entries[-2].kind is Kind.DEBIT and entries[-2].status is Status.OK_NEGATIVE


def test_open_account_repeat(ledger):
    assert ledger.open_account(1, 500, 0) is Status.OK
    assert ledger.open_account(1, 500, 0) is Status.OK
    assert ledger.open_account(1, 600, 0) is Status.ACCOUNT_EXISTS
    assert ledger.balance(1) == (500, 0)


def test_journal_records_every_change_in_order(ledger):
    funded(ledger, 1, 10_000)
    funded(ledger, 2, 5_000)
    ledger.hold(100, [(1, 3_000), (2, 3_000)], T0 + TTL)
    ledger.settle(100, [2_500, 2_500], T0)
    ledger.hold(101, [(1, 1_000)], T0 + TTL)
    ledger.void(101)
    ledger.credit(7, 2, 100)
    ledger.debit(8, 1, 100)
    entries = ledger.drain_journal()
    assert [e.seq for e in entries] == list(range(1, 9))
    assert [e.kind for e in entries] == [
        Kind.OPEN, Kind.OPEN, Kind.HOLD, Kind.SETTLE, Kind.HOLD, Kind.VOID, Kind.CREDIT, Kind.DEBIT,
    ]
    assert entries[3].legs == ((1, 2_500), (2, 2_500)) and entries[3].value == T0
    assert ledger.drain_journal() == []


def test_drain_journal_in_parts(ledger):
    funded(ledger, 1, 10_000)
    for i in range(1, 6):
        ledger.credit(i, 1, i)
    first = ledger.drain_journal(2)
    rest = ledger.drain_journal()
    assert [e.seq for e in first + rest] == list(range(1, 7))
    assert rest[-1].legs == ((1, 5),)


def test_next_seq_continues_a_journal(make_ledger):
    ledger = make_ledger(shards=4, next_seq=1_000)
    ledger.open_account(1)
    assert ledger.drain_journal()[0].seq == 1_000


def test_batches_match_single_calls(ledger):
    funded(ledger, 1, 10_000)
    funded(ledger, 2, 10_000)
    assert ledger.hold_batch([(10, [(1, 100)], T0 + TTL), (11, [(2, 20_000)], T0 + TTL), (12, [(9, 1)], T0)]) == [
        Status.OK, Status.INSUFFICIENT_FUNDS, Status.ACCOUNT_NOT_FOUND,
    ]
    assert ledger.settle_batch([(10, 60, T0), (11, 1, T0)]) == [Status.OK, Status.HOLD_NOT_FOUND]
    assert ledger.credit_batch([(1, 1, 5), (2, 2, 7)]) == [Status.OK, Status.OK]
    assert ledger.debit_batch([(3, 1, 5), (4, 2, 50_000)], force=True) == [Status.OK, Status.OK_NEGATIVE]
    ledger.hold(13, [(1, 10)], T0 + TTL)
    assert ledger.void_batch([13, 14]) == [Status.OK, Status.HOLD_NOT_FOUND]
    assert ledger.balance(1) == (10_000 - 60 + 5 - 5, 0)
    assert ledger.balance(2) == (10_000 + 7 - 50_000, 0)


def test_void_batch_takes_an_int64_buffer(ledger):
    from array import array

    funded(ledger, 1, 10_000)
    ledger.hold_batch([(h, [(1, 10)], T0 + TTL) for h in (1, 2, 3)])
    assert ledger.void_batch(array("q", [1, 3, 9])) == [Status.OK, Status.OK, Status.HOLD_NOT_FOUND]
    assert ledger.balance(1) == (10_000, 10)


def test_restore_rebuilds_state_without_journal(make_ledger):
    source = make_ledger(shards=4)
    source.open_account(1, 10_000)
    source.hold(100, [(1, 4_000)], T0 + TTL)
    source.hold(101, [(1, 1_000)], T0 + TTL)
    source.settle(101, 900, T0)
    source.credit(7, 1, 50)

    restored = make_ledger(shards=4)
    restored.restore_account(1, 9_150, 0, opening_balance=10_000)
    restored.restore_hold(100, [(1, 4_000)], T0 + TTL)
    restored.restore_hold(101, [(1, 1_000)], T0 + TTL, HoldState.SETTLED, posted=[900])
    restored.restore_txn(7, Kind.CREDIT, 1, 50)
    assert restored.drain_journal() == []
    assert restored.balance(1) == source.balance(1) == (9_150, 4_000)
    for ledger in (source, restored):
        assert ledger.credit(7, 1, 50) is Status.OK  # still idempotent after restore
        assert ledger.settle(101, 900, T0) is Status.OK
        assert ledger.settle(100, 4_000, T0) is Status.OK
        assert ledger.open_account(1, 10_000) is Status.OK
        ledger.check_invariants()
    assert restored.balance(1) == source.balance(1) == (5_150, 0)
    with pytest.raises(ValueError):
        restored.restore_account(1, 0)
    with pytest.raises(ValueError):
        restored.restore_hold(100, [(1, 1)], T0)


def test_stats(ledger):
    funded(ledger, 1, 10_000)
    ledger.hold(1, [(1, 10)], T0 + TTL)
    ledger.hold(2, [(1, 10)], T0 + TTL)
    ledger.void(2)
    ledger.credit(3, 1, 1)
    stats = ledger.stats()
    assert stats["accounts"] == 1 and stats["holds"] == 2 and stats["holds_pending"] == 1
    assert stats["txns"] == 1 and stats["journal_pending"] == 5 and stats["next_seq"] == 6


def test_a_bounded_expire_releases_at_most_limit_pending_holds_earliest_first(ledger):
    funded(ledger, 1, 10_000)
    for hold_id, deadline in [(5, 300), (3, 100), (4, 100), (1, 200), (2, 150)]:
        ledger.hold(hold_id, [(1, 10)], deadline)
    assert ledger.settle(3, 10, 50) is Status.OK  # settled: its heap entry is skipped, not counted
    ledger.drain_journal()
    assert ledger.expire(250, limit=2) == 2
    assert [e.ref for e in ledger.drain_journal()] == [4, 2]
    assert ledger.expire(250, limit=2) == 1
    assert ledger.expire(250, limit=2) == 0
    assert [e.ref for e in ledger.drain_journal()] == [1]
    assert ledger.balance(1) == (9_990, 10)  # hold 5 is not due yet
    with pytest.raises(ValueError):
        ledger.expire(250, limit=-1)
