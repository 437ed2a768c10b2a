-- fuelswitch initial schema. Money is bigint fen, volume bigint millilitres, times bigint ms (UTC).
-- Every table is keyed so that it can later be distributed by account id (DESIGN.md §9).

-- The core's state, written by the journal writer in one transaction per group commit.
CREATE TABLE accounts (
    account_id   bigint PRIMARY KEY,
    kind         text   NOT NULL,            -- personal | family | fleet | counter
    holder_name  text   NOT NULL DEFAULT '',
    balance      bigint NOT NULL DEFAULT 0,  -- posted balance; held is derived from pending holds
    overdraft    bigint NOT NULL DEFAULT 0,
    opening      bigint NOT NULL DEFAULT 0,
    created_ms   bigint NOT NULL
);

CREATE TABLE holds (
    hold_id      bigint   PRIMARY KEY,
    account_ids  bigint[] NOT NULL,
    amounts      bigint[] NOT NULL,          -- reserved per leg
    posted       bigint[] NOT NULL,          -- settled per leg (zeros until settled)
    expires_at   bigint   NOT NULL,
    state        smallint NOT NULL,          -- core.types.HoldState
    status       smallint NOT NULL           -- core.types.Status the hold id was given
);
CREATE INDEX holds_pending ON holds (expires_at) WHERE state = 1;

-- Credits and debits by id, so that a repeat stays idempotent across restarts.
CREATE TABLE movements (
    txn_id       bigint   PRIMARY KEY,
    kind         smallint NOT NULL,          -- core.types.Kind CREDIT or DEBIT
    account_id   bigint   NOT NULL,
    amount       bigint   NOT NULL,
    forced       boolean  NOT NULL,
    status       smallint NOT NULL
);

-- Every state change of the core, in order: the audit trail and the source of conservation checks.
CREATE TABLE journal (
    seq          bigint   PRIMARY KEY,
    kind         smallint NOT NULL,          -- core.types.Kind
    ref          bigint   NOT NULL,          -- hold id, movement id or account id
    account_ids  bigint[] NOT NULL,
    amounts      bigint[] NOT NULL,
    value        bigint   NOT NULL,
    status       smallint NOT NULL,
    recorded_ms  bigint   NOT NULL
);

-- The network.
CREATE TABLE stations (
    station_id   text PRIMARY KEY,
    name         text NOT NULL,
    region       text NOT NULL DEFAULT '',
    latitude     double precision NOT NULL DEFAULT 0,   -- coordinates, not money
    longitude    double precision NOT NULL DEFAULT 0
);

CREATE TABLE terminals (
    terminal_id  text PRIMARY KEY,
    station_id   text NOT NULL REFERENCES stations,
    public_key   text NOT NULL,                          -- 130 hex: 04 || x || y
    state        text NOT NULL DEFAULT 'active'
);

CREATE TABLE cards (
    card_id            bigint PRIMARY KEY,
    account_id         bigint NOT NULL REFERENCES accounts,
    pan                text   NOT NULL UNIQUE,
    pvv                bytea  NOT NULL,                  -- keyed PIN-verification value, never the PIN
    pin_tries          integer NOT NULL DEFAULT 0,
    state              text   NOT NULL,                  -- active | frozen | lost | closed | expired
    per_txn_limit      bigint NOT NULL DEFAULT 0,        -- 0 = none
    partial_allowed    boolean NOT NULL DEFAULT true,
    expiry             text   NOT NULL,                  -- YYYY-MM, valid through the end of that month
    parent_card_id     bigint,
    created_ms         bigint NOT NULL
);
CREATE INDEX cards_account ON cards (account_id);

-- What terminals were told: the answer to every (terminal, STAN), for retransmissions and reversals.
CREATE TABLE pos_messages (
    terminal_id     text   NOT NULL,
    stan            bigint NOT NULL,
    method          text   NOT NULL,
    request_digest  bytea,                 -- SM3 of the request bytes; NULL marks a STAN reversed before use
    response        bytea,                 -- serialized response message
    effect_kind     text   NOT NULL DEFAULT '',  -- what a reversal must undo: hold | debit | credit | ''
    effect_ref      bigint NOT NULL DEFAULT 0,
    reversed        boolean NOT NULL DEFAULT false,
    recorded_ms     bigint NOT NULL,
    PRIMARY KEY (terminal_id, stan)
);

-- Business records of sales, refunds and top-ups (for statements, refunds and reports).
CREATE TABLE transactions (
    transaction_id     bigint PRIMARY KEY,
    kind               text   NOT NULL,   -- authorize | complete | purchase | refund | topup | reversal
    account_id         bigint NOT NULL,
    card_id            bigint,
    terminal_id        text,
    station_id         text,
    stan               bigint,
    amount             bigint NOT NULL,   -- fen moved (positive), or held for authorize
    volume_ml          bigint NOT NULL DEFAULT 0,
    product_code       text   NOT NULL DEFAULT '',
    unit_price         bigint NOT NULL DEFAULT 0,
    original_id        bigint,            -- refund/reversal: the transaction it undoes; complete: the hold
    reference          text,              -- top-up reference (unique per top-up)
    response_code      text   NOT NULL,
    recorded_ms        bigint NOT NULL
);
CREATE INDEX transactions_account ON transactions (account_id, recorded_ms);
CREATE UNIQUE INDEX transactions_reference ON transactions (reference) WHERE reference IS NOT NULL;
