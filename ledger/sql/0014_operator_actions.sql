-- Operator actions: what a person did by hand (adjust a balance, freeze a creator, re-drive a
-- dead letter, ...), who did it, why, and under which client-supplied idempotency key.
--
-- The log is append-only (the triggers of the ledger's tables refuse UPDATE, DELETE and TRUNCATE,
-- for the owner too) and hash-chained like the ledger's links: each row records the hash of the
-- row before it and hash = sha256(previous_hash || canonical content), the content being the
-- row's fields as one JSON object with sorted keys (services/operator/actions_log.py). Rows are
-- appended under the lock of the one-row head below, which also holds the last row's hash, so
-- concurrent appends keep one chain in id order and a removed last row shows. `giftledger verify`
-- and `giftledger operator log` recompute the chain.
CREATE TABLE operator_actions (
    id              bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    actor           text NOT NULL CHECK (length(actor) BETWEEN 1 AND 64),
    role            text NOT NULL DEFAULT 'operator' CHECK (role IN ('finance', 'operator')),
    action          text NOT NULL CHECK (action ~ '^[a-z][a-z_]{0,63}$'),
    target          text NOT NULL CHECK (length(target) BETWEEN 1 AND 300),
    reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    ticket          text CHECK (length(ticket) BETWEEN 1 AND 128),
    details         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    previous_hash   bytea NOT NULL CHECK (length(previous_hash) = 32),
    hash            bytea NOT NULL CHECK (length(hash) = 32)
);
CREATE INDEX operator_actions_target ON operator_actions (target, id);
CREATE TRIGGER operator_actions_immutable BEFORE UPDATE OR DELETE ON operator_actions
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER operator_actions_no_truncate BEFORE TRUNCATE ON operator_actions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

-- The head of the log's chain: one row, locked by each append until its transaction ends.
CREATE TABLE operator_actions_head (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    action_id bigint,
    hash      bytea NOT NULL CHECK (length(hash) = 32)
);
INSERT INTO operator_actions_head (hash)
VALUES ('\x0000000000000000000000000000000000000000000000000000000000000000');

-- Balance adjustments, four eyes: one operator proposes, another approves; the approval posts
-- the transfer (code operator_adjustment) between the creator's account and the platform's
-- operator_adjustments account. An adjustment's id is the id of the action that proposed it.
-- Both rows are append-only; an adjustment is approved when its approval row exists (at most
-- one: the primary key), and the database itself refuses an approval by the proposer.
CREATE TABLE balance_adjustments (
    id                 bigint PRIMARY KEY REFERENCES operator_actions (id),
    creator_id         text NOT NULL CHECK (length(creator_id) BETWEEN 1 AND 128),
    asset              text NOT NULL REFERENCES assets (code) CHECK (asset <> 'COIN'),
    amount_minor       bigint NOT NULL CHECK (amount_minor <> 0
                           AND amount_minor BETWEEN -1000000000000 AND 1000000000000),
    proposed_by        text NOT NULL,
    proposed_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (id, proposed_by)
);
CREATE INDEX balance_adjustments_creator ON balance_adjustments (creator_id, id);

CREATE TABLE balance_adjustment_approvals (
    adjustment_id      bigint PRIMARY KEY,
    proposed_by        text NOT NULL,
    approved_by        text NOT NULL,
    approval_action_id bigint NOT NULL UNIQUE REFERENCES operator_actions (id),
    transfer_id        uuid NOT NULL,
    approved_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (adjustment_id, proposed_by) REFERENCES balance_adjustments (id, proposed_by),
    CONSTRAINT four_eyes CHECK (approved_by <> proposed_by)
);

-- Freezes: each freeze and unfreeze of a creator, in order; the latest row is the state. A
-- frozen creator's cash-out requests are rejected (`frozen`); gifts and other earnings still
-- credit.
CREATE TABLE creator_freezes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    creator_id  text NOT NULL CHECK (length(creator_id) BETWEEN 1 AND 128),
    frozen      boolean NOT NULL,
    action_id   bigint NOT NULL UNIQUE REFERENCES operator_actions (id),
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX creator_freezes_latest ON creator_freezes (creator_id, id DESC);

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['balance_adjustments', 'balance_adjustment_approvals',
                                'creator_freezes'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change()',
                       name || '_immutable', name);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change()',
                       name || '_no_truncate', name);
    END LOOP;
END $$;

-- Why a transfer happened: an adjustment proposed and approved by two operators.
INSERT INTO transfer_codes (code, name) VALUES (50, 'operator_adjustment');

-- The writer appends (and moves the head); the reader reads. Spelled out, not left to the
-- default privileges, so they hold whichever login runs this migration.
GRANT SELECT, INSERT ON operator_actions, balance_adjustments, balance_adjustment_approvals,
    creator_freezes, operator_actions_head TO giftledger_writer;
GRANT UPDATE ON operator_actions_head TO giftledger_writer;
GRANT USAGE ON SEQUENCE operator_actions_id_seq TO giftledger_writer;
GRANT SELECT ON operator_actions, balance_adjustments, balance_adjustment_approvals,
    creator_freezes, operator_actions_head TO giftledger_reader;
