-- Station classes (hold lifetime per class) and offline risk limits per station and per card
-- (docs/pos-protocol.md §9, docs/architecture.md "Station classes and offline limits").

-- The class chooses the pre-authorization lifetime (`fuelswitch serve --hold-ttl-by-class`).
ALTER TABLE stations ADD COLUMN station_class text NOT NULL DEFAULT 'standard';
-- The station's own offline limits; NULL = the network default.
ALTER TABLE stations ADD COLUMN offline_floor_limit bigint;            -- fen per sale
ALTER TABLE stations ADD COLUMN offline_max_count integer;             -- sales one upload may apply
ALTER TABLE stations ADD COLUMN offline_max_total bigint;              -- fen one upload may apply
ALTER TABLE stations ADD COLUMN offline_max_per_card_per_day integer;  -- per card, terminal and day

-- A card's own offline floor limit, fen; NULL = its station's; 0 = never approved offline.
ALTER TABLE cards ADD COLUMN offline_floor_limit bigint;

-- A hotlist entry may carry the card's own floor limit (with response_code '' when the card is not
-- declined): the value at this version; NULL = none.
ALTER TABLE hotlist ADD COLUMN floor_limit bigint;

-- Offline sales: when the terminal made the sale (OfflineTransaction.transaction_time_ms); the
-- per-card-per-day counts are rebuilt from it at start. NULL for every other kind.
ALTER TABLE transactions ADD COLUMN sale_time_ms bigint;
CREATE INDEX transactions_sale_time ON transactions (sale_time_ms) WHERE sale_time_ms IS NOT NULL;
