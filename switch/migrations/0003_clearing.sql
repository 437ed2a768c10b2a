-- Channels and clearing (docs/clearing.md): channel payments and refunds applied exactly once,
-- reconciliation runs with their discrepancies and resolutions, settlement batches.

-- Every payment and refund a channel sent that moved money, keyed as the channel keys it. The money
-- itself is a core movement with id `transaction_id` (and a `transactions` row with that id).
CREATE TABLE channel_transactions (
    channel            text    NOT NULL,           -- wechat | alipay | unionpay | ecny
    channel_txn_id     text    NOT NULL,
    kind               text    NOT NULL,           -- payment | refund
    account_id         bigint  NOT NULL,
    amount             bigint  NOT NULL,           -- fen, > 0
    fee                bigint  NOT NULL,           -- channel fee (refund: fee returned), fen
    time_ms            bigint  NOT NULL,           -- paid_at / refunded_at per the channel
    business_date      date    NOT NULL,           -- UTC+8 calendar date of time_ms (the statement's day)
    original_txn_id    text,                       -- refund: the payment's channel_txn_id
    merchant_order_id  text    NOT NULL DEFAULT '',
    station_id         text    NOT NULL DEFAULT '',
    transaction_id     bigint  NOT NULL UNIQUE,
    recorded_ms        bigint  NOT NULL,
    source             text    NOT NULL DEFAULT 'channel',  -- channel | resolution (applied by an operator)
    reversal_id        bigint,                     -- payment reversed by an operator: that debit's id
    reversed_amount    bigint  NOT NULL DEFAULT 0, -- fen taken back by the reversal
    PRIMARY KEY (channel, channel_txn_id)
);
CREATE INDEX channel_transactions_day ON channel_transactions (channel, business_date);

-- Reconcile runs: one per statement compared, with its totals and counts.
CREATE TABLE reconciliation_runs (
    run_id          bigserial PRIMARY KEY,
    channel         text    NOT NULL,
    business_date   date    NOT NULL,
    lines           bigint  NOT NULL,
    matched         bigint  NOT NULL,
    statement_net   bigint  NOT NULL,
    journal_net     bigint  NOT NULL,
    fee_tolerance   bigint  NOT NULL,
    counts          jsonb   NOT NULL,              -- {"missing_here": n, ...}
    created_ms      bigint  NOT NULL
);
CREATE INDEX reconciliation_runs_day ON reconciliation_runs (channel, business_date);

-- The discrepancies of each run, one row each (a bad day can have a million: rows page and index
-- where one JSON document would not). `detail` holds the statement line's fields the resolution needs.
CREATE TABLE reconciliation_discrepancies (
    run_id            bigint  NOT NULL REFERENCES reconciliation_runs,
    seq               integer NOT NULL,
    type              text    NOT NULL,
    channel_txn_id    text    NOT NULL,
    kind              text    NOT NULL,
    statement_amount  bigint  NOT NULL,
    journal_amount    bigint  NOT NULL,
    statement_fee     bigint  NOT NULL,
    journal_fee       bigint  NOT NULL,
    statement_status  text    NOT NULL,
    journal_status    text    NOT NULL,
    message           text    NOT NULL,
    detail            jsonb   NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX reconciliation_discrepancies_txn ON reconciliation_discrepancies (run_id, channel_txn_id);

-- The audit trail of resolutions: who decided what about which discrepancy, and when.
CREATE TABLE reconciliation_resolutions (
    run_id          bigint  NOT NULL,
    channel_txn_id  text    NOT NULL,
    decision        text    NOT NULL,              -- credit | debit | reverse | accept
    operator        text    NOT NULL,
    note            text    NOT NULL DEFAULT '',
    account_id      bigint,
    transaction_id  bigint,                        -- the money movement, if any
    result          text    NOT NULL,              -- applied | duplicate | accepted
    resolved_ms     bigint  NOT NULL,
    PRIMARY KEY (run_id, channel_txn_id)
);

-- Settlement: a business day closes once for the whole network; each of its sales and refunds is
-- then stamped with its batch, and the batch figures are stored and never change.
CREATE TABLE settlement_days (
    business_date   date    PRIMARY KEY,
    cutoff_hour     integer NOT NULL,             -- UTC+8 hour the day ended at
    end_ms          bigint  NOT NULL,             -- transactions recorded before this were assigned
    closed_ms       bigint  NOT NULL
);

CREATE TABLE settlement_batches (
    batch_id        text    PRIMARY KEY,          -- YYYYMMDD-station
    station_id      text    NOT NULL,
    business_date   date    NOT NULL,
    sales_count     bigint  NOT NULL,
    sales_amount    bigint  NOT NULL,
    refunds_count   bigint  NOT NULL,
    refunds_amount  bigint  NOT NULL,
    fees_amount     bigint  NOT NULL,
    net_payable     bigint  NOT NULL,
    fee_bps         integer NOT NULL,
    late_count      bigint  NOT NULL,
    closed_ms       bigint  NOT NULL
);
CREATE INDEX settlement_batches_day ON settlement_batches (business_date, station_id);

ALTER TABLE transactions ADD COLUMN settlement_batch_id text;
-- The settleable transactions not yet in a batch: what the next day-close stamps.
CREATE INDEX transactions_unsettled ON transactions (recorded_ms)
    WHERE settlement_batch_id IS NULL AND station_id IS NOT NULL
      AND kind IN ('complete', 'purchase', 'offline_sale', 'refund', 'reversal');
