-- Key management, card numbers at rest and the journal's hash chain (docs/security.md).

-- Data keys, each wrapped (SM4-GCM) under the master key, which never enters the database.
CREATE TABLE data_keys (
    purpose      text    NOT NULL,           -- pan | pan-index | pvk | journal
    version      integer NOT NULL,
    wrapped      bytea   NOT NULL,           -- nonce || ciphertext || tag
    created_ms   bigint  NOT NULL,
    PRIMARY KEY (purpose, version)
);

-- Card numbers: SM4-encrypted, found by a keyed SM3 index, shown masked. The clear `pan` column of
-- 0001 is emptied by the first start after this migration (which holds the keys) and then unused.
ALTER TABLE cards
    ADD COLUMN pan_index   bytea,
    ADD COLUMN pan_enc     bytea,
    ADD COLUMN masked_pan  text    NOT NULL DEFAULT '',
    ADD COLUMN pvk_version integer NOT NULL DEFAULT 1,
    ALTER COLUMN pan DROP NOT NULL;
CREATE UNIQUE INDEX cards_pan_index ON cards (pan_index);

-- The journal's hash chain: chain = HMAC-SM3(journal key `key_version`, prev_chain || row content),
-- where prev_chain is the chain of the row before (32 zero bytes for the first chained row).
ALTER TABLE journal
    ADD COLUMN key_version integer,
    ADD COLUMN prev_chain  bytea,
    ADD COLUMN chain       bytea;

-- Terminal states: active | suspended (repeated MAC failures) | revoked (by an operator).
ALTER TABLE terminals ADD COLUMN state_reason text NOT NULL DEFAULT '';
