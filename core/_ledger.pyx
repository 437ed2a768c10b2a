# cython: language_level=3, infer_types=True
"""The compiled two-phase, multi-leg reservation engine.

Same API and results as core.reference.Ledger (the executable specification).
Layout: accounts, holds and transactions live in `Shard`s keyed by id modulo
the shard count; an operation locks every shard it touches in ascending order,
then takes the journal (and expiry) mutex as a leaf lock. Arguments are parsed
into C request structs under the GIL; the operation itself never needs it, so
the batch forms run the whole batch with the GIL released.
"""

cimport cython
from cpython.buffer cimport PyObject_CheckBuffer
from cpython.long cimport PyLong_CheckExact
from cpython.number cimport PyNumber_Index
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cython.operator cimport dereference as deref
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdio cimport fprintf, stderr
from libc.stdlib cimport abort, free, malloc
from libcpp.algorithm cimport pop_heap, push_heap
from libcpp.pair cimport pair
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector

from collections.abc import Sequence

from core.types import HoldInfo, HoldState, JournalEntry, Kind, Status
from core.types import LEGS_MAX as _PY_LEGS_MAX

cdef tuple _STATUS = tuple(Status)
cdef dict _KIND = {k.value: k for k in Kind}
cdef dict _HOLD_STATE = {s.value: s for s in HoldState}


def _check_mirrors():
    """The C enums must match core.types exactly; fail at import if they drift."""
    c_status = {
        "OK": ST_OK, "OK_NEGATIVE": ST_OK_NEGATIVE, "ID_INVALID": ST_ID_INVALID,
        "LEGS_EMPTY": ST_LEGS_EMPTY, "LEGS_TOO_MANY": ST_LEGS_TOO_MANY,
        "AMOUNT_INVALID": ST_AMOUNT_INVALID, "LEGS_DUPLICATE_ACCOUNT": ST_LEGS_DUPLICATE_ACCOUNT,
        "EXISTS_WITH_DIFFERENT_CONTENT": ST_EXISTS_WITH_DIFFERENT_CONTENT,
        "ACCOUNT_EXISTS": ST_ACCOUNT_EXISTS, "ACCOUNT_NOT_FOUND": ST_ACCOUNT_NOT_FOUND,
        "HOLD_NOT_FOUND": ST_HOLD_NOT_FOUND, "LEGS_MISMATCH": ST_LEGS_MISMATCH,
        "HOLD_SETTLED": ST_HOLD_SETTLED, "HOLD_VOIDED": ST_HOLD_VOIDED,
        "HOLD_EXPIRED": ST_HOLD_EXPIRED, "SETTLE_EXCEEDS_HOLD": ST_SETTLE_EXCEEDS_HOLD,
        "OVERFLOW": ST_OVERFLOW, "INSUFFICIENT_FUNDS": ST_INSUFFICIENT_FUNDS,
    }
    c_kind = {
        "OPEN": K_OPEN, "HOLD": K_HOLD, "SETTLE": K_SETTLE, "VOID": K_VOID, "EXPIRE": K_EXPIRE,
        "CREDIT": K_CREDIT, "DEBIT": K_DEBIT, "HOLD_REJECTED": K_HOLD_REJECTED,
        "CREDIT_REJECTED": K_CREDIT_REJECTED, "DEBIT_REJECTED": K_DEBIT_REJECTED,
    }
    c_state = {"PENDING": HS_PENDING, "SETTLED": HS_SETTLED, "VOIDED": HS_VOIDED,
               "EXPIRED": HS_EXPIRED, "REJECTED": HS_REJECTED}
    for c_map, enum in ((c_status, Status), (c_kind, Kind), (c_state, HoldState)):
        if c_map != {m.name: m.value for m in enum}:
            raise ImportError(f"core._ledger: C mirror of {enum.__name__} differs from core.types")
    if LEGS_MAX != _PY_LEGS_MAX:
        raise ImportError("core._ledger: LEGS_MAX differs from core.types")


_check_mirrors()


# -- argument parsing (GIL held) ---------------------------------------------

cdef inline int64_t _i64(object value, str name) except? -1:
    if not PyLong_CheckExact(value):
        value = PyNumber_Index(value)  # TypeError for floats, strings, None (as the twin's operator.index)
    try:
        return value
    except OverflowError:
        raise ValueError(f"{name} {value} is outside the int64 range") from None


cdef int _parse_hold(HoldReq* r, object hold_id, object legs, object expires_at) except -1:
    cdef Py_ssize_t n, i = 0
    r.hold_id = _i64(hold_id, "hold_id")
    r.expires_at = _i64(expires_at, "expires_at")
    r.pre_status = ST_OK
    r.nlegs = 0
    try:
        n = len(legs)
    except TypeError:
        raise TypeError("legs must be a sequence of (account_id, amount) pairs") from None
    if n == 0:
        r.pre_status = ST_LEGS_EMPTY
        return 0
    if n > LEGS_MAX:
        r.pre_status = ST_LEGS_TOO_MANY
        return 0
    for leg in legs:
        try:
            account_id, amount = leg
        except (TypeError, ValueError):
            raise TypeError("each leg must be an (account_id, amount) pair") from None
        r.accounts[i] = _i64(account_id, "account_id")
        r.amounts[i] = _i64(amount, "amount")
        i += 1
    r.nlegs = <uint8_t>i
    return 0


cdef int _parse_settle(SettleReq* r, object hold_id, object amount, object now) except -1:
    cdef Py_ssize_t i = 0
    r.hold_id = _i64(hold_id, "hold_id")
    r.now = _i64(now, "now")
    if hasattr(amount, "__index__"):
        r.scalar = True
        r.namounts = 1
        r.amounts[0] = _i64(amount, "amount")
        return 0
    if not isinstance(amount, Sequence):
        raise TypeError("amount must be an int or a sequence of ints, one per leg")
    if len(amount) > LEGS_MAX:
        raise ValueError(f"settle takes at most {LEGS_MAX} amounts")
    r.scalar = False
    for a in amount:
        r.amounts[i] = _i64(a, "amount")
        i += 1
    r.namounts = <uint8_t>i
    return 0


cdef int _parse_move(MoveReq* r, uint8_t kind, object txn_id, object account_id, object amount,
                     bint forced) except -1:
    r.txn_id = _i64(txn_id, "txn_id")
    r.account_id = _i64(account_id, "account_id")
    r.amount = _i64(amount, "amount")
    r.kind = kind
    r.forced = forced
    return 0


cdef list _status_list(vector[uint8_t]& codes):
    cdef Py_ssize_t i, n = codes.size()
    cdef list out = PyList_New(n)
    for i in range(n):
        member = _STATUS[codes[i]]
        Py_INCREF(member)
        PyList_SET_ITEM(out, i, member)
    return out


# -- small helpers (no GIL) -------------------------------------------------------

cdef inline uint32_t _shard_of(int64_t key, uint32_t nshards) noexcept nogil:
    return <uint32_t>((<uint64_t>key) % nshards)


cdef inline int _lockset(uint32_t* out, uint32_t first, const int64_t* keys, int nkeys,
                         uint32_t nshards) noexcept nogil:
    """Sorted, de-duplicated shard indices: `first` plus the shard of every key."""
    out[0] = first
    for i in range(nkeys):
        out[i + 1] = _shard_of(keys[i], nshards)
    return _sort_unique(out, nkeys + 1)


cdef inline int _sort_unique(uint32_t* a, int n) noexcept nogil:
    cdef int i, j, m = 0
    cdef uint32_t v
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v
    for i in range(n):
        if m == 0 or a[m - 1] != a[i]:
            a[m] = a[i]
            m += 1
    return m


cdef inline void _die(const char* why) noexcept nogil:
    # An internal invariant broke: stopping beats moving money wrongly.
    fprintf(stderr, b"core._ledger: invariant violated: %s\n", why)
    abort()


cdef inline bint _fits_int64(int128 v) noexcept nogil:
    return v >= <int128>INT64_MIN and v <= <int128>INT64_MAX


@cython.final
cdef class Ledger:
    """Two-phase, multi-leg reservation engine (compiled). See core.reference for the rules."""

    def __cinit__(self, shards=64, *, next_seq=1):
        cdef uint32_t i
        cdef int64_t n = _i64(shards, "shards")
        if n <= 0 or n > SHARDS_MAX:
            raise ValueError(f"shards must be between 1 and {SHARDS_MAX}")
        self._nshards = <uint32_t>n
        self._next_seq = _i64(next_seq, "next_seq")
        for i in range(self._nshards):
            self._shards.push_back(new Shard())
            pthread_mutex_init(&self._shards[i].mu, NULL)
        pthread_mutex_init(&self._journal_mu, NULL)
        pthread_mutex_init(&self._expiry_mu, NULL)

    def __dealloc__(self):
        cdef Shard* shard
        for i in range(self._shards.size()):
            shard = self._shards[i]
            for item in shard.holds:
                free(item.second.legs)
            pthread_mutex_destroy(&shard.mu)
            del shard
        self._shards.clear()
        pthread_mutex_destroy(&self._journal_mu)
        pthread_mutex_destroy(&self._expiry_mu)

    # -- locking ------------------------------------------------------------------

    cdef void _lock(self, const uint32_t* idx, int n) noexcept nogil:
        for i in range(n):
            pthread_mutex_lock(&self._shards[idx[i]].mu)

    cdef void _unlock(self, const uint32_t* idx, int n) noexcept nogil:
        for i in range(n - 1, -1, -1):
            pthread_mutex_unlock(&self._shards[idx[i]].mu)

    cdef AccountC* _account(self, int64_t account_id) noexcept nogil:
        """The account, or NULL; its shard must be locked. Map nodes never move, so the pointer stays valid."""
        cdef Shard* shard = self._shards[_shard_of(account_id, self._nshards)]
        it = shard.accounts.find(account_id)
        if it == shard.accounts.end():
            return NULL
        return &deref(it).second

    cdef HoldC* _find_hold(self, int64_t hold_id) noexcept nogil:
        """The hold, or NULL; its shard must be locked."""
        cdef Shard* shard = self._shards[_shard_of(hold_id, self._nshards)]
        it = shard.holds.find(hold_id)
        if it == shard.holds.end():
            return NULL
        return &deref(it).second

    cdef HoldC* _lock_hold(self, int64_t hold_id, uint32_t* idx, int* nidx) noexcept nogil:
        """Lock the hold's shard and every shard of its legs; NULL (nothing locked) if absent.

        A hold's legs never change once made and holds are never removed, so the
        legs read under the hold's shard lock alone are the ones to lock for.
        """
        cdef uint32_t home = _shard_of(hold_id, self._nshards)
        cdef int64_t accounts[LEGS_MAX]
        cdef HoldC* hold
        cdef int i, n
        pthread_mutex_lock(&self._shards[home].mu)
        hold = self._find_hold(hold_id)
        if hold == NULL:
            pthread_mutex_unlock(&self._shards[home].mu)
            return NULL
        n = hold.nlegs
        for i in range(n):
            accounts[i] = hold.legs[i].account_id
        pthread_mutex_unlock(&self._shards[home].mu)
        nidx[0] = _lockset(idx, home, accounts, n, self._nshards)
        self._lock(idx, nidx[0])
        return hold

    # -- journal --------------------------------------------------------------------

    cdef void _log(self, uint8_t kind, int64_t ref, int64_t value, uint8_t status,
                   int nlegs, const int64_t* accounts, const int64_t* amounts) noexcept nogil:
        """Append one entry; called with the touched shards locked so per-account order holds."""
        cdef EntryC e
        cdef JournalLegC leg
        pthread_mutex_lock(&self._journal_mu)
        e.seq = self._next_seq
        self._next_seq += 1
        e.ref = ref
        e.value = value
        e.kind = kind
        e.status = status
        e.nlegs = <uint8_t>nlegs
        e.leg_start = self._entry_legs.size()
        for i in range(nlegs):
            leg.account_id = accounts[i]
            leg.amount = amounts[i]
            self._entry_legs.push_back(leg)
        self._entries.push_back(e)
        pthread_mutex_unlock(&self._journal_mu)

    cdef void _log_hold_legs(self, uint8_t kind, int64_t ref, int64_t value, HoldC* hold,
                             bint posted) noexcept nogil:
        cdef int64_t accounts[LEGS_MAX]
        cdef int64_t amounts[LEGS_MAX]
        for i in range(hold.nlegs):
            accounts[i] = hold.legs[i].account_id
            amounts[i] = hold.legs[i].posted if posted else hold.legs[i].amount
        self._log(kind, ref, value, ST_OK, hold.nlegs, accounts, amounts)

    def drain_journal(self, max_entries=0):
        """Remove and return journal entries in order (all of them when max_entries is 0)."""
        cdef vector[EntryC] entries
        cdef vector[JournalLegC] legs
        cdef size_t count, leg_count, i, j
        cdef int64_t limit = _i64(max_entries, "max_entries")
        with nogil:
            pthread_mutex_lock(&self._journal_mu)
            count = self._entries.size()
            if 0 < limit < <int64_t>count:
                count = <size_t>limit
            if count == self._entries.size():
                entries.swap(self._entries)
                legs.swap(self._entry_legs)
            else:
                leg_count = self._entries[count].leg_start
                entries.assign(self._entries.begin(), self._entries.begin() + count)
                legs.assign(self._entry_legs.begin(), self._entry_legs.begin() + leg_count)
                self._entries.erase(self._entries.begin(), self._entries.begin() + count)
                self._entry_legs.erase(self._entry_legs.begin(), self._entry_legs.begin() + leg_count)
                for i in range(self._entries.size()):
                    self._entries[i].leg_start -= leg_count
            pthread_mutex_unlock(&self._journal_mu)
        cdef EntryC* e
        out = PyList_New(entries.size())
        for i in range(entries.size()):
            e = &entries[i]
            leg_tuple = tuple([(legs[e.leg_start + j].account_id, legs[e.leg_start + j].amount)
                               for j in range(e.nlegs)])
            entry = JournalEntry(e.seq, _KIND[e.kind], e.ref, leg_tuple, e.value, _STATUS[e.status])
            Py_INCREF(entry)
            PyList_SET_ITEM(out, i, entry)
        return out

    # -- accounts -------------------------------------------------------------------

    def open_account(self, account_id, balance=0, overdraft=0):
        cdef int64_t a = _i64(account_id, "account_id")
        cdef int64_t b = _i64(balance, "balance")
        cdef int64_t o = _i64(overdraft, "overdraft")
        cdef uint8_t status
        with nogil:
            status = self._open_account(a, b, o)
        return _STATUS[status]

    cdef uint8_t _open_account(self, int64_t account_id, int64_t balance, int64_t overdraft) noexcept nogil:
        cdef AccountC account
        cdef AccountC* existing
        cdef Shard* shard
        if account_id <= 0:
            return ST_ID_INVALID
        if balance < 0 or overdraft < 0:
            return ST_AMOUNT_INVALID
        shard = self._shards[_shard_of(account_id, self._nshards)]
        pthread_mutex_lock(&shard.mu)
        existing = self._account(account_id)
        if existing != NULL:
            pthread_mutex_unlock(&shard.mu)
            if existing.opening == balance and existing.overdraft == overdraft:
                return ST_OK
            return ST_ACCOUNT_EXISTS
        account.balance = balance
        account.held = 0
        account.overdraft = overdraft
        account.opening = balance
        shard.accounts[account_id] = account
        self._log(K_OPEN, account_id, overdraft, ST_OK, 1, &account_id, &balance)
        pthread_mutex_unlock(&shard.mu)
        return ST_OK

    def balance(self, account_id):
        cdef int64_t a = _i64(account_id, "account_id")
        cdef Shard* shard = self._shards[_shard_of(a, self._nshards)]
        cdef AccountC* account
        cdef int64_t bal = 0, held = 0
        cdef bint found
        with nogil:
            pthread_mutex_lock(&shard.mu)
            account = self._account(a)
            found = account != NULL
            if found:
                bal = account.balance
                held = account.held
            pthread_mutex_unlock(&shard.mu)
        if not found:
            raise ValueError(f"account {a} does not exist")
        return bal, held

    # -- holds ----------------------------------------------------------------------

    def hold(self, hold_id, legs, expires_at):
        cdef HoldReq r
        cdef uint8_t status
        _parse_hold(&r, hold_id, legs, expires_at)
        status = self._hold(&r)
        return _STATUS[status]

    cdef uint8_t _hold(self, HoldReq* r) noexcept nogil:
        cdef int i, j, n = r.nlegs, nidx
        cdef uint32_t idx[LOCKS_PER_OP_MAX]
        cdef AccountC* accounts[LEGS_MAX]
        cdef HoldC* existing
        cdef HoldC hold
        cdef uint8_t status = ST_OK
        if r.hold_id <= 0:
            return ST_ID_INVALID
        if r.pre_status != ST_OK:
            return r.pre_status
        for i in range(n):
            if r.amounts[i] <= 0:
                return ST_AMOUNT_INVALID
        for i in range(n):
            for j in range(i):
                if r.accounts[i] == r.accounts[j]:
                    return ST_LEGS_DUPLICATE_ACCOUNT
        nidx = _lockset(idx, _shard_of(r.hold_id, self._nshards), r.accounts, n, self._nshards)
        self._lock(idx, nidx)
        existing = self._find_hold(r.hold_id)
        if existing != NULL:
            status = existing.status if _same_hold(existing, r) else ST_EXISTS_WITH_DIFFERENT_CONTENT
            self._unlock(idx, nidx)
            return status
        for i in range(n):
            accounts[i] = self._account(r.accounts[i])
            if accounts[i] == NULL:
                status = ST_ACCOUNT_NOT_FOUND
        if status == ST_OK:
            for i in range(n):
                if <int128>accounts[i].held + r.amounts[i] > <int128>INT64_MAX:
                    status = ST_OVERFLOW
        if status == ST_OK:
            for i in range(n):
                if (<int128>accounts[i].balance - accounts[i].held - r.amounts[i]
                        < -<int128>accounts[i].overdraft):
                    status = ST_INSUFFICIENT_FUNDS
        hold.expires_at = r.expires_at
        hold.nlegs = <uint8_t>n
        hold.status = status
        hold.state = HS_PENDING if status == ST_OK else HS_REJECTED
        hold.legs = <LegC*>malloc(n * sizeof(LegC))
        if hold.legs == NULL:
            _die(b"out of memory recording a hold")
        for i in range(n):
            hold.legs[i].account_id = r.accounts[i]
            hold.legs[i].amount = r.amounts[i]
            hold.legs[i].posted = 0
        self._shards[_shard_of(r.hold_id, self._nshards)].holds[r.hold_id] = hold
        if status == ST_OK:
            for i in range(n):
                accounts[i].held += r.amounts[i]
            self._push_expiry(r.expires_at, r.hold_id)
            self._log(K_HOLD, r.hold_id, r.expires_at, ST_OK, n, r.accounts, r.amounts)
        else:
            self._log(K_HOLD_REJECTED, r.hold_id, r.expires_at, status, n, r.accounts, r.amounts)
        if CORE_DEBUG:
            self._check_locked_accounts(idx, nidx)
        self._unlock(idx, nidx)
        return status

    cdef void _push_expiry(self, int64_t expires_at, int64_t hold_id) noexcept nogil:
        pthread_mutex_lock(&self._expiry_mu)
        self._expiry_heap.push_back(pair[int64_t, int64_t](~expires_at, ~hold_id))
        push_heap(self._expiry_heap.begin(), self._expiry_heap.end())
        pthread_mutex_unlock(&self._expiry_mu)

    def settle(self, hold_id, amount, now):
        cdef SettleReq r
        cdef uint8_t status
        _parse_settle(&r, hold_id, amount, now)
        status = self._settle(&r)
        return _STATUS[status]

    cdef uint8_t _settle(self, SettleReq* r) noexcept nogil:
        cdef uint32_t idx[LOCKS_PER_OP_MAX]
        cdef int nidx = 0, i, n
        cdef int64_t amounts[LEGS_MAX]
        cdef HoldC* hold
        cdef AccountC* account
        cdef uint8_t status = ST_OK
        if r.hold_id <= 0:
            return ST_ID_INVALID
        for i in range(r.namounts):
            if r.amounts[i] < 0:
                return ST_AMOUNT_INVALID
        hold = self._lock_hold(r.hold_id, idx, &nidx)
        if hold == NULL:
            return ST_HOLD_NOT_FOUND
        n = hold.nlegs
        for i in range(n):
            amounts[i] = r.amounts[0] if r.scalar else r.amounts[i]
        if hold.state == HS_REJECTED:
            status = ST_HOLD_NOT_FOUND
        elif not r.scalar and r.namounts != n:
            status = ST_LEGS_MISMATCH
        elif hold.state == HS_SETTLED:
            status = ST_OK
            for i in range(n):
                if hold.legs[i].posted != amounts[i]:
                    status = ST_HOLD_SETTLED
        elif hold.state == HS_VOIDED:
            status = ST_HOLD_VOIDED
        elif hold.state == HS_EXPIRED:
            status = ST_HOLD_EXPIRED
        elif r.now >= hold.expires_at:
            # The deadline has passed even if no sweep has run yet: expire it now.
            self._release(r.hold_id, hold, HS_EXPIRED, K_EXPIRE, r.now)
            status = ST_HOLD_EXPIRED
        else:
            for i in range(n):
                if amounts[i] > hold.legs[i].amount:
                    status = ST_SETTLE_EXCEEDS_HOLD
            if status == ST_OK:
                for i in range(n):
                    account = self._account(hold.legs[i].account_id)
                    account.held -= hold.legs[i].amount
                    account.balance -= amounts[i]
                    hold.legs[i].posted = amounts[i]
                    if account.held < 0:
                        _die(b"held went negative on settle")
                hold.state = HS_SETTLED
                self._log_hold_legs(K_SETTLE, r.hold_id, r.now, hold, True)
        if CORE_DEBUG:
            self._check_locked_accounts(idx, nidx)
        self._unlock(idx, nidx)
        return status

    cdef void _release(self, int64_t hold_id, HoldC* hold, uint8_t state, uint8_t kind,
                       int64_t value) noexcept nogil:
        """Give back every leg's reservation; the hold's shards must be locked."""
        cdef AccountC* account
        for i in range(hold.nlegs):
            account = self._account(hold.legs[i].account_id)
            account.held -= hold.legs[i].amount
            if account.held < 0:
                _die(b"held went negative on release")
        hold.state = state
        self._log_hold_legs(kind, hold_id, value, hold, False)

    def void(self, hold_id):
        cdef int64_t h = _i64(hold_id, "hold_id")
        cdef uint8_t status = self._void(h)
        return _STATUS[status]

    cdef uint8_t _void(self, int64_t hold_id) noexcept nogil:
        cdef uint32_t idx[LOCKS_PER_OP_MAX]
        cdef int nidx = 0
        cdef HoldC* hold
        cdef uint8_t status = ST_OK
        if hold_id <= 0:
            return ST_ID_INVALID
        hold = self._lock_hold(hold_id, idx, &nidx)
        if hold == NULL:
            return ST_HOLD_NOT_FOUND
        if hold.state == HS_REJECTED:
            status = ST_HOLD_NOT_FOUND
        elif hold.state == HS_SETTLED:
            status = ST_HOLD_SETTLED
        elif hold.state == HS_EXPIRED:
            status = ST_HOLD_EXPIRED
        elif hold.state == HS_PENDING:
            self._release(hold_id, hold, HS_VOIDED, K_VOID, 0)
        if CORE_DEBUG:
            self._check_locked_accounts(idx, nidx)
        self._unlock(idx, nidx)
        return status

    def expire(self, now, limit=0):
        """Release pending holds whose deadline is at or before `now`, earliest first, at most `limit`
        of them (0: all); returns how many. A bounded call keeps one sweep step short."""
        cdef int64_t t = _i64(now, "now")
        cdef int64_t most = _i64(limit, "limit")
        cdef int64_t released
        if most < 0:
            raise ValueError("limit must be >= 0")
        with nogil:
            released = self._expire(t, most)
        return released

    cdef int64_t _expire(self, int64_t now, int64_t limit) noexcept nogil:
        cdef uint32_t idx[LOCKS_PER_OP_MAX]
        cdef int nidx = 0
        cdef int64_t released = 0
        cdef int64_t hold_id = 0
        cdef bint due
        cdef HoldC* hold
        while limit == 0 or released < limit:
            # One heap entry at a time: the expiry lock is never held together with a shard lock.
            pthread_mutex_lock(&self._expiry_mu)
            due = not self._expiry_heap.empty() and ~self._expiry_heap.front().first <= now
            if due:
                hold_id = ~self._expiry_heap.front().second
                pop_heap(self._expiry_heap.begin(), self._expiry_heap.end())
                self._expiry_heap.pop_back()
            pthread_mutex_unlock(&self._expiry_mu)
            if not due:
                break
            hold = self._lock_hold(hold_id, idx, &nidx)
            if hold == NULL:
                _die(b"expiry index names an unknown hold")
            if hold.state == HS_PENDING:
                self._release(hold_id, hold, HS_EXPIRED, K_EXPIRE, now)
                released += 1
            self._unlock(idx, nidx)
        return released

    def get_hold(self, hold_id):
        cdef int64_t h = _i64(hold_id, "hold_id")
        cdef uint32_t home = _shard_of(h, self._nshards)
        cdef HoldC copy
        cdef LegC legs[LEGS_MAX]
        cdef HoldC* hold
        cdef bint found
        with nogil:
            pthread_mutex_lock(&self._shards[home].mu)
            hold = self._find_hold(h)
            found = hold != NULL
            if found:
                copy = hold[0]
                for i in range(hold.nlegs):
                    legs[i] = hold.legs[i]
            pthread_mutex_unlock(&self._shards[home].mu)
        if not found:
            return None
        return HoldInfo(
            _HOLD_STATE[copy.state],
            copy.expires_at,
            tuple([(legs[i].account_id, legs[i].amount) for i in range(copy.nlegs)]),
            tuple([legs[i].posted for i in range(copy.nlegs)]),
            _STATUS[copy.status],
        )

    # -- direct movements ---------------------------------------------------------------

    def credit(self, txn_id, account_id, amount):
        cdef MoveReq r
        _parse_move(&r, K_CREDIT, txn_id, account_id, amount, False)
        return _STATUS[self._move(&r)]

    def debit(self, txn_id, account_id, amount, force=False):
        cdef MoveReq r
        _parse_move(&r, K_DEBIT, txn_id, account_id, amount, bool(force))
        return _STATUS[self._move(&r)]

    cdef uint8_t _move(self, MoveReq* r) noexcept nogil:
        cdef uint32_t idx[LOCKS_PER_OP_MAX]
        cdef int nidx
        cdef Shard* home
        cdef TxnC txn
        cdef AccountC* account
        cdef uint8_t status
        if r.txn_id <= 0:
            return ST_ID_INVALID
        if r.amount <= 0:
            return ST_AMOUNT_INVALID
        home = self._shards[_shard_of(r.txn_id, self._nshards)]
        nidx = _lockset(idx, _shard_of(r.txn_id, self._nshards), &r.account_id, 1, self._nshards)
        self._lock(idx, nidx)
        it = home.txns.find(r.txn_id)
        if it != home.txns.end():
            txn = deref(it).second
            if (txn.kind == r.kind and txn.account_id == r.account_id and txn.amount == r.amount
                    and txn.forced == r.forced):
                status = txn.status
            else:
                status = ST_EXISTS_WITH_DIFFERENT_CONTENT
            self._unlock(idx, nidx)
            return status
        account = self._account(r.account_id)
        status = _move_check(account, r)
        txn.account_id = r.account_id
        txn.amount = r.amount
        txn.kind = r.kind
        txn.forced = r.forced
        txn.status = status
        home.txns[r.txn_id] = txn
        if status <= ST_OK_NEGATIVE:
            account.balance += r.amount if r.kind == K_CREDIT else -r.amount
            self._log(r.kind, r.txn_id, r.forced, status, 1, &r.account_id, &r.amount)
        else:
            self._log(K_CREDIT_REJECTED if r.kind == K_CREDIT else K_DEBIT_REJECTED,
                      r.txn_id, r.forced, status, 1, &r.account_id, &r.amount)
        self._unlock(idx, nidx)
        return status

    # -- batches: parse under the GIL, apply without it ------------------------------------

    def hold_batch(self, holds):
        """Apply (hold_id, legs, expires_at) items in order; one Status per item."""
        cdef vector[HoldReq] reqs
        cdef vector[uint8_t] codes
        cdef size_t i
        if hasattr(holds, "__len__"):
            reqs.reserve(len(holds))
        for item in holds:
            reqs.resize(reqs.size() + 1)
            hold_id, legs, expires_at = item
            _parse_hold(&reqs.back(), hold_id, legs, expires_at)
        codes.resize(reqs.size())
        with nogil:
            for i in range(reqs.size()):
                codes[i] = self._hold(&reqs[i])
        return _status_list(codes)

    def settle_batch(self, settles):
        """Apply (hold_id, amount, now) items in order; one Status per item."""
        cdef vector[SettleReq] reqs
        cdef vector[uint8_t] codes
        cdef size_t i
        if hasattr(settles, "__len__"):
            reqs.reserve(len(settles))
        for item in settles:
            reqs.resize(reqs.size() + 1)
            hold_id, amount, now = item
            _parse_settle(&reqs.back(), hold_id, amount, now)
        codes.resize(reqs.size())
        with nogil:
            for i in range(reqs.size()):
                codes[i] = self._settle(&reqs[i])
        return _status_list(codes)

    def void_batch(self, hold_ids):
        """Void each hold id in order; takes a sequence of ints or an int64 buffer."""
        cdef vector[int64_t] ids
        cdef vector[uint8_t] codes
        cdef const int64_t[::1] view
        cdef size_t i
        if PyObject_CheckBuffer(hold_ids):  # e.g. array("q"), numpy int64
            view = hold_ids
            for i in range(<size_t>view.shape[0]):
                ids.push_back(view[i])
        else:
            for h in hold_ids:
                ids.push_back(_i64(h, "hold_id"))
        codes.resize(ids.size())
        with nogil:
            for i in range(ids.size()):
                codes[i] = self._void(ids[i])
        return _status_list(codes)

    def credit_batch(self, credits):
        """Apply (txn_id, account_id, amount) credits in order; one Status per item."""
        return self._move_batch(credits, K_CREDIT, False)

    def debit_batch(self, debits, force=False):
        """Apply (txn_id, account_id, amount) debits in order; one Status per item."""
        return self._move_batch(debits, K_DEBIT, bool(force))

    cdef list _move_batch(self, items, uint8_t kind, bint forced):
        cdef vector[MoveReq] reqs
        cdef vector[uint8_t] codes
        cdef size_t i
        if hasattr(items, "__len__"):
            reqs.reserve(len(items))
        for item in items:
            reqs.resize(reqs.size() + 1)
            txn_id, account_id, amount = item
            _parse_move(&reqs.back(), kind, txn_id, account_id, amount, forced)
        codes.resize(reqs.size())
        with nogil:
            for i in range(reqs.size()):
                codes[i] = self._move(&reqs[i])
        return _status_list(codes)

    # -- recovery: rebuild from the database without writing the journal -----------------

    def restore_account(self, account_id, balance, overdraft=0, opening_balance=0):
        cdef int64_t a = _i64(account_id, "account_id")
        cdef AccountC account
        account.balance = _i64(balance, "balance")
        account.overdraft = _i64(overdraft, "overdraft")
        account.opening = _i64(opening_balance, "opening_balance")
        account.held = 0
        cdef Shard* shard = self._shards[_shard_of(a, self._nshards)]
        cdef bint ok
        with nogil:
            pthread_mutex_lock(&shard.mu)
            ok = a > 0 and self._account(a) == NULL
            if ok:
                shard.accounts[a] = account
            pthread_mutex_unlock(&shard.mu)
        if not ok:
            raise ValueError(f"cannot restore account {a}: invalid or already present")

    def restore_hold(self, hold_id, legs, expires_at, state=HoldState.PENDING, posted=None,
                     status=Status.OK):
        cdef HoldReq r
        cdef HoldC hold
        cdef uint32_t idx[LOCKS_PER_OP_MAX]
        cdef int nidx, i, n
        cdef int64_t posted_c[LEGS_MAX]
        cdef AccountC* accounts[LEGS_MAX]
        cdef uint8_t st = HoldState(state).value
        cdef uint8_t code = Status(status).value
        cdef str problem = None
        _parse_hold(&r, hold_id, legs, expires_at)
        if r.pre_status != ST_OK:
            raise ValueError(f"cannot restore hold {r.hold_id}: {_STATUS[r.pre_status].name}")
        n = r.nlegs
        posted_t = tuple(_i64(p, "posted") for p in posted) if posted else (0,) * n
        if len(posted_t) != n:
            raise ValueError(f"cannot restore hold {r.hold_id}: posted amounts do not match its legs")
        for i in range(n):
            posted_c[i] = posted_t[i]
        nidx = _lockset(idx, _shard_of(r.hold_id, self._nshards), r.accounts, n, self._nshards)
        self._lock(idx, nidx)
        if r.hold_id <= 0 or self._find_hold(r.hold_id) != NULL:
            problem = "invalid or already present"
        elif st == HS_PENDING:
            for i in range(n):
                accounts[i] = self._account(r.accounts[i])
                if accounts[i] == NULL:
                    problem = "an account is missing"
        if problem is None:
            hold.expires_at = r.expires_at
            hold.nlegs = <uint8_t>n
            hold.state = st
            hold.status = code
            hold.legs = <LegC*>malloc(n * sizeof(LegC))
            if hold.legs == NULL:
                self._unlock(idx, nidx)
                raise MemoryError()
            for i in range(n):
                hold.legs[i].account_id = r.accounts[i]
                hold.legs[i].amount = r.amounts[i]
                hold.legs[i].posted = posted_c[i]
            self._shards[_shard_of(r.hold_id, self._nshards)].holds[r.hold_id] = hold
            if st == HS_PENDING:
                for i in range(n):
                    accounts[i].held += r.amounts[i]
                self._push_expiry(r.expires_at, r.hold_id)
        self._unlock(idx, nidx)
        if problem is not None:
            raise ValueError(f"cannot restore hold {r.hold_id}: {problem}")

    def restore_txn(self, txn_id, kind, account_id, amount, force=False, status=Status.OK):
        cdef MoveReq r
        cdef TxnC txn
        cdef uint8_t k = Kind(kind).value
        if k != K_CREDIT and k != K_DEBIT:
            raise ValueError("restore_txn takes Kind.CREDIT or Kind.DEBIT")
        _parse_move(&r, k, txn_id, account_id, amount, bool(force))
        txn.account_id = r.account_id
        txn.amount = r.amount
        txn.kind = k
        txn.forced = r.forced
        txn.status = Status(status).value
        cdef Shard* home = self._shards[_shard_of(r.txn_id, self._nshards)]
        cdef bint ok
        with nogil:
            pthread_mutex_lock(&home.mu)
            ok = r.txn_id > 0 and home.txns.find(r.txn_id) == home.txns.end()
            if ok:
                home.txns[r.txn_id] = txn
            pthread_mutex_unlock(&home.mu)
        if not ok:
            raise ValueError(f"cannot restore txn {r.txn_id}: invalid or already present")

    # -- inspection -------------------------------------------------------------------

    def stats(self):
        cdef int64_t accounts = 0, holds = 0, pending = 0, txns = 0, journal, next_seq
        cdef Shard* shard
        with nogil:
            for i in range(self._nshards):
                shard = self._shards[i]
                pthread_mutex_lock(&shard.mu)
                accounts += shard.accounts.size()
                holds += shard.holds.size()
                txns += shard.txns.size()
                for item in shard.holds:
                    if item.second.state == HS_PENDING:
                        pending += 1
                pthread_mutex_unlock(&shard.mu)
            pthread_mutex_lock(&self._journal_mu)
            journal = self._entries.size()
            next_seq = self._next_seq
            pthread_mutex_unlock(&self._journal_mu)
        return {"accounts": accounts, "holds": holds, "holds_pending": pending, "txns": txns,
                "journal_pending": journal, "next_seq": next_seq}

    def check_invariants(self):
        """Walk everything: each account's held equals the sum of its pending holds' legs."""
        cdef unordered_map[int64_t, int128] pending
        cdef uint32_t i
        cdef int j
        cdef int64_t bad = 0
        cdef bint found_bad = False
        with nogil:
            for i in range(self._nshards):
                pthread_mutex_lock(&self._shards[i].mu)
            for i in range(self._nshards):
                for item in self._shards[i].holds:
                    if item.second.state == HS_PENDING:
                        for j in range(item.second.nlegs):
                            pending[item.second.legs[j].account_id] += item.second.legs[j].amount
            for i in range(self._nshards):
                for acc in self._shards[i].accounts:
                    if not found_bad and <int128>acc.second.held != pending[acc.first]:
                        found_bad = True
                        bad = acc.first
            for i in range(self._nshards - 1, -1, -1):
                pthread_mutex_unlock(&self._shards[i].mu)
        if found_bad:
            raise AssertionError(f"account {bad}: held differs from the sum of its pending holds")

    cdef void _check_locked_accounts(self, const uint32_t* idx, int nidx) noexcept nogil:
        """Debug builds: every account in the locked shards has 0 <= held."""
        for i in range(nidx):
            for item in self._shards[idx[i]].accounts:
                if item.second.held < 0:
                    _die(b"negative held")


cdef inline bint _same_hold(HoldC* hold, HoldReq* r) noexcept nogil:
    if hold.expires_at != r.expires_at or hold.nlegs != r.nlegs:
        return False
    for i in range(r.nlegs):
        if hold.legs[i].account_id != r.accounts[i] or hold.legs[i].amount != r.amounts[i]:
            return False
    return True


cdef inline uint8_t _move_check(AccountC* account, MoveReq* r) noexcept nogil:
    if account == NULL:
        return ST_ACCOUNT_NOT_FOUND
    if r.kind == K_CREDIT:
        return ST_OVERFLOW if not _fits_int64(<int128>account.balance + r.amount) else ST_OK
    if not _fits_int64(<int128>account.balance - r.amount):
        return ST_OVERFLOW
    if <int128>account.balance - account.held - r.amount < -<int128>account.overdraft:
        return ST_OK_NEGATIVE if r.forced else ST_INSUFFICIENT_FUNDS
    return ST_OK
