# Named limits of the compiled core (unit last). core/types.py holds the same
# values for Python; _ledger.pyx checks at import that the two agree.

cdef enum:
    LEGS_MAX = 8            # accounts one hold may reserve against (funds + card limits)
    LOCKS_PER_OP_MAX = 9    # a hold's own shard plus one per leg
    SHARDS_MAX = 65536      # more shards than this buys nothing but memory
