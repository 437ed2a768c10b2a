"""Bad input gets a status or a ValueError/TypeError with a clear message, never a changed state."""

import pytest

from core import LEGS_MAX, Status

INT64_MAX = 2**63 - 1
T = 10_000


@pytest.fixture
def funded(ledger):
    ledger.open_account(1, 10_000)
    ledger.open_account(2, 10_000)
    ledger.hold(50, [(1, 100)], T)
    ledger.drain_journal()
    return ledger


def unchanged(ledger):
    assert ledger.balance(1) == (10_000, 100)
    assert ledger.balance(2) == (10_000, 0)
    assert ledger.drain_journal() == []


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (lambda lg: lg.hold(0, [(1, 1)], T), Status.ID_INVALID),
        (lambda lg: lg.hold(-5, [(1, 1)], T), Status.ID_INVALID),
        (lambda lg: lg.hold(1, [], T), Status.LEGS_EMPTY),
        (lambda lg: lg.hold(1, [(a, 1) for a in range(1, LEGS_MAX + 2)], T), Status.LEGS_TOO_MANY),
        (lambda lg: lg.hold(1, [(1, 0)], T), Status.AMOUNT_INVALID),
        (lambda lg: lg.hold(1, [(1, -10)], T), Status.AMOUNT_INVALID),
        (lambda lg: lg.hold(1, [(1, 5), (1, 5)], T), Status.LEGS_DUPLICATE_ACCOUNT),
        (lambda lg: lg.settle(0, 1, 0), Status.ID_INVALID),
        (lambda lg: lg.settle(50, -1, 0), Status.AMOUNT_INVALID),
        (lambda lg: lg.settle(50, [1, 1], 0), Status.LEGS_MISMATCH),
        (lambda lg: lg.settle(999, 1, 0), Status.HOLD_NOT_FOUND),
        (lambda lg: lg.void(0), Status.ID_INVALID),
        (lambda lg: lg.void(999), Status.HOLD_NOT_FOUND),
        (lambda lg: lg.credit(0, 1, 1), Status.ID_INVALID),
        (lambda lg: lg.credit(1, 1, 0), Status.AMOUNT_INVALID),
        (lambda lg: lg.debit(1, 1, -3), Status.AMOUNT_INVALID),
        (lambda lg: lg.debit(1, 1, -3, force=True), Status.AMOUNT_INVALID),
        (lambda lg: lg.open_account(0), Status.ID_INVALID),
        (lambda lg: lg.open_account(3, -1), Status.AMOUNT_INVALID),
        (lambda lg: lg.open_account(3, 0, -1), Status.AMOUNT_INVALID),
    ],
)
def test_invalid_arguments_get_a_status_and_change_nothing(funded, call, status):
    assert call(funded) is status
    unchanged(funded)


def test_unknown_accounts_are_refused_and_the_id_stays_failed(funded):
    assert funded.hold(1, [(1, 5), (77, 5)], T) is Status.ACCOUNT_NOT_FOUND
    assert funded.credit(2, 77, 5) is Status.ACCOUNT_NOT_FOUND
    assert funded.debit(3, 77, 5) is Status.ACCOUNT_NOT_FOUND
    assert funded.balance(1) == (10_000, 100)
    funded.open_account(77, 0)
    assert funded.credit(2, 77, 5) is Status.ACCOUNT_NOT_FOUND
    assert funded.balance(77) == (0, 0)


def test_sums_past_int64_overflow(ledger):
    ledger.open_account(1, INT64_MAX - 10)
    ledger.open_account(2, 0, overdraft=INT64_MAX)
    assert ledger.credit(1, 1, 11) is Status.OVERFLOW
    assert ledger.credit(2, 1, 10) is Status.OK
    assert ledger.hold(3, [(2, INT64_MAX)], T) is Status.OK
    assert ledger.hold(4, [(2, 1)], T) is Status.OVERFLOW
    assert ledger.debit(5, 2, INT64_MAX, force=True) is Status.OK_NEGATIVE
    assert ledger.debit(6, 2, 2, force=True) is Status.OVERFLOW
    assert ledger.balance(1) == (INT64_MAX, 0)
    assert ledger.balance(2) == (-INT64_MAX, INT64_MAX)


@pytest.mark.parametrize(
    "call",
    [
        lambda lg: lg.hold(2**63, [(1, 1)], T),
        lambda lg: lg.hold(1, [(1, 2**63)], T),
        lambda lg: lg.hold(1, [(1, 1)], -(2**63) - 1),
        lambda lg: lg.credit(1, 1, 2**64),
        lambda lg: lg.debit(1, 2**70, 1),
        lambda lg: lg.settle(50, 2**63, 0),
        lambda lg: lg.settle(50, list(range(1, LEGS_MAX + 2)), 0),
        lambda lg: lg.open_account(2**63),
        lambda lg: lg.balance(2**63),
    ],
)
def test_values_past_int64_raise_value_error(funded, call):
    with pytest.raises(ValueError, match="int64|at most"):
        call(funded)
    unchanged(funded)


@pytest.mark.parametrize(
    "call",
    [
        lambda lg: lg.hold("1", [(1, 1)], T),
        lambda lg: lg.hold(1, [(1, 1.5)], T),
        lambda lg: lg.hold(1, None, T),
        lambda lg: lg.hold(1, [(1, 2, 3)], T),
        lambda lg: lg.hold(1, [7], T),
        lambda lg: lg.credit(1, None, 5),
        lambda lg: lg.settle(50, "10", 0),
        lambda lg: lg.settle(50, 1.0, 0),
        lambda lg: lg.void(None),
        lambda lg: lg.hold_batch([(1, [(1, "x")], T)]),
        lambda lg: lg.credit_batch([(1, 1)]),
    ],
)
def test_wrong_types_raise_type_error(funded, call):
    with pytest.raises((TypeError, ValueError)):
        call(funded)
    unchanged(funded)


def test_balance_of_unknown_account(ledger):
    with pytest.raises(ValueError, match="does not exist"):
        ledger.balance(12345)


def test_a_bad_item_in_a_batch_rejects_the_whole_batch_before_anything_applies(funded):
    with pytest.raises(TypeError):
        funded.credit_batch([(1, 1, 5), (2, 1, None)])
    assert funded.balance(1) == (10_000, 100)
