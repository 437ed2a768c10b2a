-- Offline sales, the hotlist, station prices and transactions flagged for review (docs/pos-protocol.md §8–9).

-- Why a transaction needs a person to look at it ('' when it does not): a completion after its hold
-- expired, an amount that does not match litres × price, an offline sale that took an account negative.
ALTER TABLE transactions ADD COLUMN review text NOT NULL DEFAULT '';
CREATE INDEX transactions_review ON transactions (recorded_ms) WHERE review <> '';

-- Hotlist changes, in version order: what SyncHotlist hands terminals as deltas.
CREATE TABLE hotlist (
    version       bigint  PRIMARY KEY,
    card_id       bigint  NOT NULL,
    pan_sm3       text    NOT NULL,   -- SM3 of the PAN, as the protocol lets terminals match it offline
    masked_pan    text    NOT NULL,
    response_code text    NOT NULL,   -- '' when removed
    removed       boolean NOT NULL,
    recorded_ms   bigint  NOT NULL
);

-- Station prices with the time they take effect (a later row for the same product replaces it then).
CREATE TABLE station_prices (
    station_id    text   NOT NULL REFERENCES stations,
    product_code  text   NOT NULL,
    effective_ms  bigint NOT NULL,
    unit_price    bigint NOT NULL,    -- fen per litre; 0 = no longer sold
    PRIMARY KEY (station_id, product_code, effective_ms)
);
