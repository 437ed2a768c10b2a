"""Eight threads run batches on shared accounts; money is conserved and the journal is a serial history."""

import random
import threading

from core import Kind, Status
from core.reference import Ledger as ReferenceLedger
from tests.core.random_ops import conservation

THREADS = 8
ACCOUNTS = list(range(1, 25))
ROUNDS = 60
BATCH = 50
FAR_FUTURE = 10**15


def worker(ledger, thread_no, barrier, errors):
    rng = random.Random(thread_no)
    base = (thread_no + 1) * 10_000_000
    try:
        barrier.wait()
        for r in range(ROUNDS):
            ids = [base + r * BATCH + i for i in range(BATCH)]
            holds = [
                (h, [(a, rng.randint(1, 900)) for a in rng.sample(ACCOUNTS, rng.randint(1, 3))], FAR_FUTURE)
                for h in ids
            ]
            ledger.hold_batch(holds)
            settles = [(h, rng.randint(0, 200), 0) for h in ids[: BATCH // 2]]
            ledger.settle_batch(settles)
            ledger.void_batch(ids[BATCH // 2 :: 2])
            ledger.credit_batch([(h, rng.choice(ACCOUNTS), rng.randint(1, 500)) for h in ids[::3]])
            ledger.debit_batch([(h + 1, rng.choice(ACCOUNTS), rng.randint(1, 500)) for h in ids[::5]],
                               force=r % 2 == 0)
    except BaseException as exc:  # surfaced by the main thread
        errors.append(exc)


def drainer(ledger, stop, journal):
    while not stop.is_set():
        journal.extend(ledger.drain_journal(1_000))


def replay(journal):
    """Apply the journal, in seq order, to a fresh twin: every entry must reproduce its own result."""
    twin = ReferenceLedger()
    for e in journal:
        if e.kind is Kind.OPEN:
            got, want = twin.open_account(e.ref, e.legs[0][1], e.value), Status.OK
        elif e.kind in (Kind.HOLD, Kind.HOLD_REJECTED):
            got, want = twin.hold(e.ref, e.legs, e.value), e.status
        elif e.kind is Kind.SETTLE:
            got, want = twin.settle(e.ref, [amount for _, amount in e.legs], e.value), Status.OK
        elif e.kind is Kind.VOID:
            got, want = twin.void(e.ref), Status.OK
        elif e.kind in (Kind.CREDIT, Kind.CREDIT_REJECTED):
            got, want = twin.credit(e.ref, *e.legs[0]), e.status
        elif e.kind in (Kind.DEBIT, Kind.DEBIT_REJECTED):
            got, want = twin.debit(e.ref, *e.legs[0], force=bool(e.value)), e.status
        else:
            raise AssertionError(f"unexpected entry {e}")
        assert got == want, f"replaying seq {e.seq} ({e.kind.name} {e.ref}) gave {got!r}, journal says {want!r}"
    return twin


def test_eight_threads_conserve_money_and_journal_is_serial(make_ledger):
    ledger = make_ledger(shards=16)
    for account in ACCOUNTS:
        ledger.open_account(account, 50_000, overdraft=1_000 if account % 4 == 0 else 0)
    journal = []
    errors = []
    barrier = threading.Barrier(THREADS)
    stop = threading.Event()
    drain = threading.Thread(target=drainer, args=(ledger, stop, journal))
    drain.start()
    threads = [threading.Thread(target=worker, args=(ledger, n, barrier, errors)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    drain.join()
    journal.extend(ledger.drain_journal())
    assert not errors, errors

    assert [e.seq for e in journal] == list(range(1, len(journal) + 1))
    assert sum(e.kind is Kind.HOLD for e in journal) > THREADS * ROUNDS  # contention actually happened
    conservation(ledger, ACCOUNTS, journal)
    twin = replay(journal)
    for account in ACCOUNTS:
        assert twin.balance(account) == ledger.balance(account)
