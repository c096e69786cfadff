-- giftledger: the double-entry core.
--
-- Accounts keep four totals (debits/credits x posted/pending); transfers are immutable rows that
-- move one amount between two accounts of one asset. Totals change only through transfers, posted
-- by ledger/posting.py in batches. Balance rules are account flags, enforced by CHECK constraints
-- as a backstop to the per-transfer checks the posting code makes.

CREATE TABLE assets (
    code  text PRIMARY KEY CHECK (code ~ '^[A-Z]{3,16}$'),
    scale smallint NOT NULL CHECK (scale BETWEEN 0 AND 6)
);

INSERT INTO assets (code, scale) VALUES
    ('COIN', 0), ('DIAMOND', 3),
    ('USD', 2), ('EUR', 2), ('GBP', 2), ('JPY', 0), ('KRW', 0), ('CAD', 2), ('AUD', 2),
    ('NZD', 2), ('CHF', 2), ('SEK', 2), ('NOK', 2), ('DKK', 2), ('PLN', 2), ('CZK', 2),
    ('HUF', 2), ('RON', 2), ('BRL', 2), ('MXN', 2), ('ARS', 2), ('CLP', 0), ('COP', 2),
    ('INR', 2), ('IDR', 2), ('PHP', 2), ('THB', 2), ('VND', 0), ('MYR', 2), ('SGD', 2),
    ('HKD', 2), ('TWD', 2), ('TRY', 2), ('ZAR', 2), ('AED', 2), ('SAR', 2), ('ILS', 2),
    ('EGP', 2), ('NGN', 2), ('KES', 2), ('BHD', 3), ('KWD', 3), ('JOD', 3), ('OMR', 3);

-- Why a transfer happened. Codes are stable numbers; names are for people.
CREATE TABLE transfer_codes (
    code smallint PRIMARY KEY CHECK (code > 0),
    name text NOT NULL UNIQUE
);

INSERT INTO transfer_codes (code, name) VALUES
    (1, 'gift_diamonds'), (2, 'gift_coins'), (3, 'gift_reversal_diamonds'),
    (4, 'gift_reversal_coins'), (10, 'tip'), (11, 'tip_fan_fee'), (12, 'tip_processor_fee'),
    (20, 'fund_reward'), (30, 'marketplace_payment'), (31, 'marketplace_fee'),
    (40, 'cashout_hold'), (41, 'cashout_paid'), (42, 'cashout_released'),
    (43, 'cashout_returned'), (44, 'cashout_conversion'), (90, 'rounding'),
    (98, 'pending_expired'), (99, 'adjustment'), (100, 'synthetic');

-- Bit flags, mirrored by ledger.model.AccountFlags.
--   1 debits_must_not_exceed_credits   (debits posted + pending <= credits posted)
--   2 credits_must_not_exceed_debits   (credits posted + pending <= debits posted)
CREATE TABLE accounts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 300),
    asset           text NOT NULL REFERENCES assets (code),
    kind            text NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    creator_id      text CHECK (length(creator_id) BETWEEN 1 AND 128),
    flags           smallint NOT NULL DEFAULT 0 CHECK (flags BETWEEN 0 AND 2),
    debits_posted   bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_posted  bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    debits_pending  bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    credits_pending bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT debits_must_not_exceed_credits
        CHECK (flags & 1 = 0 OR debits_posted + debits_pending <= credits_posted),
    CONSTRAINT credits_must_not_exceed_debits
        CHECK (flags & 2 = 0 OR credits_posted + credits_pending <= debits_posted)
);
CREATE INDEX accounts_creator_id ON accounts (creator_id) WHERE creator_id IS NOT NULL;

-- Transfers, partitioned by commit time from the first day so that years of history can be
-- detached, archived or moved without rewriting the table. Ids are unique across partitions
-- through transfer_keys (a partitioned table cannot hold a unique index without the partition key).
--
-- Flags, mirrored by ledger.model.TransferFlags:
--   1 linked (this transfer and the next succeed or fail together)
--   2 pending   4 post_pending   8 void_pending
--   16 funded (refused with exceeds_credits if the debit account's balance would go below zero)
CREATE TABLE transfers (
    id                  uuid NOT NULL,
    seq                 bigint GENERATED ALWAYS AS IDENTITY,
    debit_account_id    bigint NOT NULL,
    credit_account_id   bigint NOT NULL,
    amount              bigint NOT NULL CHECK (amount > 0),
    asset               text NOT NULL,
    code                smallint NOT NULL,
    flags               smallint NOT NULL CHECK (flags BETWEEN 0 AND 31),
    pending_id          uuid,
    timeout_s           integer CHECK (timeout_s > 0),
    expires_at          timestamptz,
    rate_card_version   integer,
    event_id            text CHECK (length(event_id) BETWEEN 1 AND 128),
    metadata            jsonb,
    -- Posted balance (credits minus debits) of each side right after this transfer.
    debit_balance_after  bigint NOT NULL,
    credit_balance_after bigint NOT NULL,
    created_at          timestamptz NOT NULL,
    CONSTRAINT accounts_must_be_different CHECK (debit_account_id <> credit_account_id),
    CONSTRAINT one_phase_flag_at_most CHECK (
        (flags & 2 <> 0)::int + (flags & 4 <> 0)::int + (flags & 8 <> 0)::int <= 1),
    CONSTRAINT pending_id_only_for_post_or_void CHECK (
        (pending_id IS NOT NULL) = (flags & 12 <> 0)),
    CONSTRAINT timeout_only_for_pending CHECK (timeout_s IS NULL OR flags & 2 <> 0),
    CONSTRAINT expiry_with_timeout CHECK ((expires_at IS NULL) = (timeout_s IS NULL)),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE transfers_default PARTITION OF transfers DEFAULT;
CREATE INDEX transfers_debit_account ON transfers (debit_account_id, seq);
CREATE INDEX transfers_credit_account ON transfers (credit_account_id, seq);
CREATE INDEX transfers_pending_expiry ON transfers (expires_at) WHERE expires_at IS NOT NULL;

-- One row per transfer id ever accepted: the database-wide idempotency guarantee.
CREATE TABLE transfer_keys (
    id         uuid PRIMARY KEY,
    created_at timestamptz NOT NULL
);

-- How each pending transfer ended: posted, voided or expired. At most one row per pending.
CREATE TABLE pending_resolutions (
    pending_id  uuid PRIMARY KEY,
    resolved_by uuid NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('posted', 'voided', 'expired')),
    created_at  timestamptz NOT NULL
);

-- Monthly partitions ahead of time: create_transfer_partitions(months_ahead) is idempotent and
-- is run by `giftledger migrate` (and may run from cron).
CREATE FUNCTION create_transfer_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    made integer := 0;
    name text;
BEGIN
    FOR i IN 0..months_ahead LOOP
        name := format('transfers_%s', to_char(month_start, 'YYYY_MM'));
        IF to_regclass(name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF transfers FOR VALUES FROM (%L) TO (%L)',
                name, month_start::timestamp AT TIME ZONE 'UTC',
                (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
            made := made + 1;
        END IF;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;
    RETURN made;
END $$;

SELECT create_transfer_partitions(2);

-- Ledger rows are never changed: mistakes are fixed by new transfers.
CREATE FUNCTION refuse_ledger_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: ledger rows are immutable', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER transfers_immutable BEFORE UPDATE OR DELETE ON transfers
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER transfers_no_truncate BEFORE TRUNCATE ON transfers
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER transfer_keys_immutable BEFORE UPDATE OR DELETE ON transfer_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER transfer_keys_no_truncate BEFORE TRUNCATE ON transfer_keys
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER pending_resolutions_immutable BEFORE UPDATE OR DELETE ON pending_resolutions
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER pending_resolutions_no_truncate BEFORE TRUNCATE ON pending_resolutions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
