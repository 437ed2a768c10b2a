# Declarations of the compiled ledger (the engine is in _ledger.pyx).
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint32_t
from libcpp.pair cimport pair
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector

include "consts.pxi"

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t*, void*)
    int pthread_mutex_destroy(pthread_mutex_t*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)

cdef extern from *:
    # 128-bit arithmetic for the funds and overflow checks: exact for any int64 inputs.
    ctypedef long long int128 "__int128"
    # Set by setup.py (FUELSWITCH_DEBUG=1): run the full invariant walk after every operation.
    const int CORE_DEBUG

# Mirrors core.types.Status (checked at import).
cdef enum StatusCode:
    ST_OK = 0
    ST_OK_NEGATIVE = 1
    ST_ID_INVALID = 2
    ST_LEGS_EMPTY = 3
    ST_LEGS_TOO_MANY = 4
    ST_AMOUNT_INVALID = 5
    ST_LEGS_DUPLICATE_ACCOUNT = 6
    ST_EXISTS_WITH_DIFFERENT_CONTENT = 7
    ST_ACCOUNT_EXISTS = 8
    ST_ACCOUNT_NOT_FOUND = 9
    ST_HOLD_NOT_FOUND = 10
    ST_LEGS_MISMATCH = 11
    ST_HOLD_SETTLED = 12
    ST_HOLD_VOIDED = 13
    ST_HOLD_EXPIRED = 14
    ST_SETTLE_EXCEEDS_HOLD = 15
    ST_OVERFLOW = 16
    ST_INSUFFICIENT_FUNDS = 17

# Mirrors core.types.Kind.
cdef enum KindCode:
    K_OPEN = 1
    K_HOLD = 2
    K_SETTLE = 3
    K_VOID = 4
    K_EXPIRE = 5
    K_CREDIT = 6
    K_DEBIT = 7
    K_HOLD_REJECTED = 8
    K_CREDIT_REJECTED = 9
    K_DEBIT_REJECTED = 10

# Mirrors core.types.HoldState.
cdef enum HoldStateCode:
    HS_PENDING = 1
    HS_SETTLED = 2
    HS_VOIDED = 3
    HS_EXPIRED = 4
    HS_REJECTED = 5

cdef struct AccountC:
    int64_t balance
    int64_t held
    int64_t overdraft
    int64_t opening

cdef struct LegC:
    int64_t account_id
    int64_t amount          # reserved
    int64_t posted          # settled (0 until then)

cdef struct HoldC:
    int64_t expires_at
    LegC* legs              # malloc'd, nlegs long; legs never change after the hold is made
    uint8_t nlegs
    uint8_t state
    uint8_t status          # the result the hold id was given

cdef struct TxnC:
    int64_t account_id
    int64_t amount
    uint8_t kind
    uint8_t forced
    uint8_t status

cdef struct EntryC:
    int64_t seq
    int64_t ref
    int64_t value
    size_t leg_start        # index into the journal's leg vector
    uint8_t kind
    uint8_t status
    uint8_t nlegs

cdef struct JournalLegC:
    int64_t account_id
    int64_t amount

# Parsed requests: built under the GIL, applied without it.
cdef struct HoldReq:
    int64_t hold_id
    int64_t expires_at
    int64_t accounts[LEGS_MAX]
    int64_t amounts[LEGS_MAX]
    uint8_t nlegs
    uint8_t pre_status      # LEGS_EMPTY / LEGS_TOO_MANY found while parsing

cdef struct SettleReq:
    int64_t hold_id
    int64_t now
    int64_t amounts[LEGS_MAX]
    uint8_t namounts
    bint scalar             # one amount for every leg

cdef struct MoveReq:
    int64_t txn_id
    int64_t account_id
    int64_t amount
    uint8_t kind            # K_CREDIT or K_DEBIT
    bint forced

cdef cppclass Shard:
    pthread_mutex_t mu
    unordered_map[int64_t, AccountC] accounts
    unordered_map[int64_t, HoldC] holds
    unordered_map[int64_t, TxnC] txns

@cython.final
cdef class Ledger:
    cdef vector[Shard*] _shards
    cdef uint32_t _nshards
    cdef pthread_mutex_t _journal_mu       # leaf lock: taken last, held briefly
    cdef vector[EntryC] _entries
    cdef vector[JournalLegC] _entry_legs
    cdef int64_t _next_seq
    cdef pthread_mutex_t _expiry_mu        # leaf lock
    # max-heap of (~expires_at, ~hold_id): the top is the earliest deadline, then the smallest id
    cdef vector[pair[int64_t, int64_t]] _expiry_heap

    cdef void _lock(self, const uint32_t* idx, int n) noexcept nogil
    cdef void _unlock(self, const uint32_t* idx, int n) noexcept nogil
    cdef AccountC* _account(self, int64_t account_id) noexcept nogil
    cdef HoldC* _find_hold(self, int64_t hold_id) noexcept nogil
    cdef HoldC* _lock_hold(self, int64_t hold_id, uint32_t* idx, int* nidx) noexcept nogil
    cdef void _log(self, uint8_t kind, int64_t ref, int64_t value, uint8_t status,
                   int nlegs, const int64_t* accounts, const int64_t* amounts) noexcept nogil
    cdef void _log_hold_legs(self, uint8_t kind, int64_t ref, int64_t value, HoldC* hold,
                             bint posted) noexcept nogil
    cdef uint8_t _open_account(self, int64_t account_id, int64_t balance, int64_t overdraft) noexcept nogil
    cdef uint8_t _hold(self, HoldReq* r) noexcept nogil
    cdef void _push_expiry(self, int64_t expires_at, int64_t hold_id) noexcept nogil
    cdef uint8_t _settle(self, SettleReq* r) noexcept nogil
    cdef void _release(self, int64_t hold_id, HoldC* hold, uint8_t state, uint8_t kind,
                       int64_t value) noexcept nogil
    cdef uint8_t _void(self, int64_t hold_id) noexcept nogil
    cdef int64_t _expire(self, int64_t now, int64_t limit) noexcept nogil
    cdef uint8_t _move(self, MoveReq* r) noexcept nogil
    cdef list _move_batch(self, items, uint8_t kind, bint forced)
    cdef void _check_locked_accounts(self, const uint32_t* idx, int nidx) noexcept nogil
