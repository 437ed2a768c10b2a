-- Offline sales, the hotlist, station prices and transactions flagged for review (docs/pos-protocol.md §8–9).

-- Why a transaction needs a person to look at it ('' when it does not): a completion after its hold
-- expired, an amount that does not match litres × price, an offline sale that took an account negative.
ALTER TABLE transactions ADD COLUMN review text NOT NULL DEFAULT '';
CREATE INDEX transactions_review ON transactions (recorded_ms) WHERE review <> '';
