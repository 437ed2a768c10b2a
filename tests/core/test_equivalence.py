"""The compiled engine and its twin give the same answer to every operation sequence."""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from core import LEGS_MAX, Ledger
from core.reference import Ledger as ReferenceLedger
from tests.core.random_ops import conservation, run_lockstep

ACCOUNTS = list(range(1, 9))
account_ids = st.integers(min_value=0, max_value=10)  # 0, 9 and 10 are never opened
op_ids = st.integers(min_value=-1, max_value=30)  # a small space: repeats and collisions happen
amounts = st.one_of(
    st.integers(min_value=1, max_value=3_000),
    st.sampled_from([0, -1, 2**62, 2**63 - 1]),
)
legs = st.lists(st.tuples(account_ids, amounts), min_size=0, max_size=LEGS_MAX + 1)


class LedgerTwins(RuleBasedStateMachine):
    """Every rule runs on both engines; any difference in status, balance or journal fails."""

    def __init__(self) -> None:
        super().__init__()
        self.compiled = Ledger(shards=4)
        self.reference = ReferenceLedger()
        self.now = 0
        self.journal: list = []

    def both(self, name, *args, **kwargs):
        results = []
        for ledger in (self.compiled, self.reference):
            try:
                results.append(getattr(ledger, name)(*args, **kwargs))
            except (ValueError, TypeError) as exc:
                results.append(type(exc))
        assert results[0] == results[1], f"{name}{args}{kwargs}: {results[0]!r} != {results[1]!r}"
        return results[0]

    @initialize(balances=st.lists(st.integers(0, 10_000), min_size=len(ACCOUNTS), max_size=len(ACCOUNTS)))
    def open_accounts(self, balances):
        for account, balance in zip(ACCOUNTS, balances, strict=True):
            self.both("open_account", account, balance, 0 if account % 3 else 500)

    @rule(hold_id=op_ids, legs=legs, ttl=st.integers(1, 100))
    def hold(self, hold_id, legs, ttl):
        self.both("hold", hold_id, legs, self.now + ttl)

    @rule(hold_id=op_ids, amount=st.one_of(amounts, st.lists(amounts, max_size=3)))
    def settle(self, hold_id, amount):
        self.both("settle", hold_id, amount, self.now)

    @rule(hold_id=op_ids)
    def void(self, hold_id):
        self.both("void", hold_id)

    @rule(step=st.integers(0, 60))
    def advance_and_expire(self, step):
        self.now += step
        self.both("expire", self.now)

    @rule(txn_id=op_ids, account=account_ids, amount=amounts)
    def credit(self, txn_id, account, amount):
        self.both("credit", txn_id, account, amount)

    @rule(txn_id=op_ids, account=account_ids, amount=amounts, force=st.booleans())
    def debit(self, txn_id, account, amount, force):
        self.both("debit", txn_id, account, amount, force=force)

    @rule(items=st.lists(st.tuples(op_ids, legs, st.integers(1, 100)), max_size=5))
    def hold_batch(self, items):
        self.both("hold_batch", [(h, lg, self.now + ttl) for h, lg, ttl in items])

    @rule(items=st.lists(st.tuples(op_ids, amounts), max_size=5))
    def settle_batch(self, items):
        self.both("settle_batch", [(h, a, self.now) for h, a in items])

    @rule(ids=st.lists(op_ids, max_size=5))
    def void_batch(self, ids):
        self.both("void_batch", ids)

    @rule(items=st.lists(st.tuples(op_ids, account_ids, amounts), max_size=5), force=st.booleans())
    def credit_debit_batch(self, items, force):
        self.both("credit_batch", items)
        self.both("debit_batch", items, force=force)

    @invariant()
    def same_state_and_money_conserved(self):
        for account in ACCOUNTS:
            self.both("balance", account)
        for hold_id in range(1, 31):
            self.both("get_hold", hold_id)
        journal = self.both("drain_journal")
        self.journal.extend(journal)
        conservation(self.compiled, ACCOUNTS, self.journal)
        conservation(self.reference, ACCOUNTS, self.journal)


TestLedgerTwins = LedgerTwins.TestCase
TestLedgerTwins.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_seeded_random_workload_in_lockstep():
    seed = 20261122
    assert run_lockstep(seed, 20_000, Ledger(shards=16), ReferenceLedger()) == 20_000
