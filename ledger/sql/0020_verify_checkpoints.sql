-- Verify checkpoints (ledger/verify_checkpoints.py): where the last clean `giftledger verify`
-- ended, so that the next one checks only what was added since (README, "Verify").
--
-- A checkpoint records the head of the transfers' hash chain the run saw (link and hash), how
-- many transfers the chain held up to it and the highest `seq` among them, the last month-end
-- close it checked, and the run's clock; `verify_checkpoint_accounts` records, for every account
-- whose totals changed since the checkpoint before, its four totals as the run verified them.
-- An account's totals as of checkpoint N are its row with the highest checkpoint id up to N (none:
-- all zero). Checkpoints form one line: each names the one before and takes the next id, so two
-- runs that started from the same checkpoint cannot both write one. Only a clean run writes one.
--
-- Both tables are append-only: the triggers of the ledger's tables refuse UPDATE, DELETE and
-- TRUNCATE, for the owner too.
CREATE TABLE verify_checkpoints (
    id                    bigint PRIMARY KEY CHECK (id >= 1),
    previous_id           bigint REFERENCES verify_checkpoints (id),
    full_check            boolean NOT NULL,
    link_id               bigint CHECK (link_id >= 1),
    chain_hash            bytea NOT NULL CHECK (length(chain_hash) = 32),
    linked_transfer_count bigint NOT NULL CHECK (linked_transfer_count >= 0),
    seq_max               bigint NOT NULL CHECK (seq_max >= 0),
    close_id              bigint,
    checked_at            timestamptz NOT NULL,
    walked_transfer_count bigint NOT NULL CHECK (walked_transfer_count >= 0),
    verified_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT one_after_the_previous CHECK (coalesce(previous_id, 0) = id - 1),
    CONSTRAINT empty_chain_has_zero_hash CHECK (
        link_id IS NOT NULL OR chain_hash = '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
);

CREATE TABLE verify_checkpoint_accounts (
    checkpoint_id         bigint NOT NULL REFERENCES verify_checkpoints (id),
    account_id            bigint NOT NULL REFERENCES accounts (id),
    debits_posted_minor   bigint NOT NULL CHECK (debits_posted_minor >= 0),
    credits_posted_minor  bigint NOT NULL CHECK (credits_posted_minor >= 0),
    debits_pending_minor  bigint NOT NULL CHECK (debits_pending_minor >= 0),
    credits_pending_minor bigint NOT NULL CHECK (credits_pending_minor >= 0),
    -- account first: "the latest row of this account up to checkpoint N" is one index probe
    PRIMARY KEY (account_id, checkpoint_id)
);

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['verify_checkpoints', 'verify_checkpoint_accounts'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change()',
                       name || '_immutable', name);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change()',
                       name || '_no_truncate', name);
    END LOOP;
END $$;

-- An incremental run counts the transfers stored after the checkpoint's highest `seq`, to find any
-- that no link of the chain names. A BRIN index answers that from the pages written since,
-- costs the posting path next to nothing (a range is summarized once it is full, by
-- autovacuum), and is built by reading the table once.
CREATE INDEX transfers_seq_ranges ON transfers USING brin (seq) WITH (autosummarize = on);

-- `giftledger verify` writes checkpoints as the login that owns the schema. The writer role may
-- move account totals, so it must not also be able to record which totals were verified: it
-- reads checkpoints and writes none (the default privileges of 0007 would let it insert).
REVOKE INSERT ON verify_checkpoints, verify_checkpoint_accounts FROM giftledger_writer;
GRANT SELECT ON verify_checkpoints, verify_checkpoint_accounts
    TO giftledger_reader, giftledger_writer;

COMMENT ON TABLE verify_checkpoints IS
    'Where each clean `giftledger verify` ended: the next run checks only what was added since.';
COMMENT ON COLUMN verify_checkpoints.id IS 'The checkpoint''s number: the previous one''s plus one.';
COMMENT ON COLUMN verify_checkpoints.previous_id IS
    'The checkpoint before (NULL for the first); an incremental run started from it.';
COMMENT ON COLUMN verify_checkpoints.full_check IS
    'Whether the run checked the whole ledger (`verify --full`, or no checkpoint before).';
COMMENT ON COLUMN verify_checkpoints.link_id IS
    'The hash chain link that was the head when the run read the ledger (NULL: no link yet).';
COMMENT ON COLUMN verify_checkpoints.chain_hash IS 'That link''s hash (zeros with no link).';
COMMENT ON COLUMN verify_checkpoints.linked_transfer_count IS
    'Transfers named by the links up to link_id.';
COMMENT ON COLUMN verify_checkpoints.seq_max IS
    'The highest seq among those transfers (0 with none): later rows must be in later links.';
COMMENT ON COLUMN verify_checkpoints.close_id IS
    'The last month-end close whose balances the run recomputed (NULL: none).';
COMMENT ON COLUMN verify_checkpoints.checked_at IS
    'The run''s transaction time: no pending transfer that expired before it was left open.';
COMMENT ON COLUMN verify_checkpoints.walked_transfer_count IS
    'Transfers whose hash the run recomputed (all of them in a full run).';
COMMENT ON COLUMN verify_checkpoints.verified_at IS 'When the checkpoint was written.';

COMMENT ON TABLE verify_checkpoint_accounts IS
    'Account totals as a clean `verify` found them, for the accounts changed since the checkpoint'
    ' before; an account''s totals as of checkpoint N are its latest row up to N (none: zero).';
COMMENT ON COLUMN verify_checkpoint_accounts.checkpoint_id IS 'The checkpoint.';
COMMENT ON COLUMN verify_checkpoint_accounts.account_id IS 'The account.';
COMMENT ON COLUMN verify_checkpoint_accounts.debits_posted_minor IS
    'Posted debits, equal to its posted transfers'' sum.';
COMMENT ON COLUMN verify_checkpoint_accounts.credits_posted_minor IS
    'Posted credits, equal to its posted transfers'' sum.';
COMMENT ON COLUMN verify_checkpoint_accounts.debits_pending_minor IS
    'Pending debits, equal to its open pending transfers'' sum.';
COMMENT ON COLUMN verify_checkpoint_accounts.credits_pending_minor IS
    'Pending credits, equal to its open pending transfers'' sum.';
