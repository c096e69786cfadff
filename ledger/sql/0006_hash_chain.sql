-- Tamper evidence: every posted batch is a link in a hash chain. A link records the ids of the
-- batch's transfers, the SHA-256 of their canonical form (ledger/chain.py), and
-- hash = sha256(previous link's hash || that digest). `giftledger verify` recomputes the chain
-- from the stored transfers: an edited, deleted or inserted transfer row, or a removed link,
-- breaks it. The triggers already refuse such changes; the chain shows them if the triggers
-- were disabled by someone with the rights to do so.

CREATE TABLE ledger_links (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_ids     uuid[] NOT NULL CHECK (cardinality(transfer_ids) > 0),
    transfers_sha256 bytea NOT NULL CHECK (length(transfers_sha256) = 32),
    previous_hash    bytea NOT NULL CHECK (length(previous_hash) = 32),
    hash             bytea NOT NULL CHECK (length(hash) = 32),
    linked_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT hash_covers_previous CHECK (hash = sha256(previous_hash || transfers_sha256))
);
CREATE TRIGGER ledger_links_immutable BEFORE UPDATE OR DELETE ON ledger_links
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER ledger_links_no_truncate BEFORE TRUNCATE ON ledger_links
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

-- The head of the chain: one row, locked briefly by each batch as it links itself.
CREATE TABLE ledger_chain_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    link_id  bigint,
    hash     bytea NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO ledger_chain_head (hash) VALUES ('\x0000000000000000000000000000000000000000000000000000000000000000');
