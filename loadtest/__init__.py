"""The benchmark harness: virtual POS terminals, the naive baseline server, self-checking load.

- `loadtest.terminal`  an async POS terminal client that speaks docs/pos-protocol.md exactly.
- `loadtest.baseline`  the naive baseline server (one PostgreSQL transaction per request).
- `loadtest.workload`  the seeded Authorize+Complete load runner that checks every reply.
- `loadtest.cli`       `fuelswitch loadtest` (mix in `loadtest.operations`; docs/loadtest.md).
"""
