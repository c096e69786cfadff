-- Pre-summed transfers per UTC day, so that the journal and the console's overview read one row
-- per day, account and code (or day and surface) instead of every transfer of the month.
--
-- A day is rolled once it is final: no transaction can still store a transfer stamped in it
-- (`ledger.rollups`: the day ended more than FINAL_AFTER minutes ago by the database's clock, and
-- the roller has waited for every batch in flight through `wait_for_ledger_writers`). Rolling a
-- day writes its `rolled_days` row and its totals in one transaction; rolled days run without a
-- gap from the first day that holds transfers. Readers add the rolled days of a range to a scan
-- of the transfers of the rest of it, so their answers are exact whether or not the roller is
-- behind. Rows are only ever added.

CREATE TABLE rolled_days (
    day            date PRIMARY KEY,
    transfer_count bigint NOT NULL CHECK (transfer_count >= 0),
    rolled_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT rolled_after_the_day CHECK (rolled_at >= (day + 1)::timestamp AT TIME ZONE 'UTC')
);

CREATE TABLE day_account_totals (
    day           date NOT NULL REFERENCES rolled_days (day) DEFERRABLE INITIALLY DEFERRED,
    account_id    bigint NOT NULL REFERENCES accounts (id),
    code          smallint NOT NULL,
    debits_minor  bigint NOT NULL CHECK (debits_minor >= 0),
    credits_minor bigint NOT NULL CHECK (credits_minor >= 0),
    PRIMARY KEY (day, account_id, code)
);

CREATE TABLE day_gift_totals (
    day            date NOT NULL REFERENCES rolled_days (day) DEFERRABLE INITIALLY DEFERRED,
    surface        text,
    gift_count     bigint NOT NULL CHECK (gift_count > 0),
    coins          bigint NOT NULL,
    milli_diamonds bigint NOT NULL CHECK (milli_diamonds >= 0),
    CONSTRAINT one_row_per_day_and_surface UNIQUE NULLS NOT DISTINCT (day, surface)
);

-- The part of a range not rolled up is read by commit timestamp: a BRIN index finds the pages
-- written in it (transfers are stored roughly in the order they are stamped) at next to no cost
-- to the posting path.
CREATE INDEX transfers_created_ranges ON transfers USING brin (created_at)
    WITH (autosummarize = on);

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['rolled_days', 'day_account_totals', 'day_gift_totals'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change()',
                       name || '_immutable', name);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change()',
                       name || '_no_truncate', name);
    END LOOP;
END $$;

-- The roller runs in `giftledger run` as the writer role; readers (the API, the console) read.
GRANT SELECT, INSERT ON rolled_days, day_account_totals, day_gift_totals TO giftledger_writer;
GRANT SELECT ON rolled_days, day_account_totals, day_gift_totals TO giftledger_reader;

COMMENT ON TABLE rolled_days IS
    'The UTC days whose transfers are summed in day_account_totals and day_gift_totals, one row each, written with those totals once the day is final.';
COMMENT ON COLUMN rolled_days.day IS 'The UTC day: transfers with created_at in [day, day + 1) UTC.';
COMMENT ON COLUMN rolled_days.transfer_count IS
    'How many transfers (any flags) the day holds: the rows its totals were summed from.';
COMMENT ON COLUMN rolled_days.rolled_at IS 'When the day was rolled up.';
COMMENT ON CONSTRAINT rolled_after_the_day ON rolled_days IS
    'A day is rolled only after it has ended.';

COMMENT ON TABLE day_account_totals IS
    'Posted transfers (flags & 10 = 0: neither pending nor void) of a rolled day summed per account and transfer code, as the journal''s lines; no row where the account has none.';
COMMENT ON COLUMN day_account_totals.day IS 'The rolled UTC day (rolled_days.day).';
COMMENT ON COLUMN day_account_totals.account_id IS 'The account debited or credited.';
COMMENT ON COLUMN day_account_totals.code IS 'The transfers'' code (transfer_codes.code).';
COMMENT ON COLUMN day_account_totals.debits_minor IS
    'The amounts of the day''s posted transfers with this code debiting the account, in its minor unit.';
COMMENT ON COLUMN day_account_totals.credits_minor IS
    'The amounts of the day''s posted transfers with this code crediting the account, in its minor unit.';

COMMENT ON TABLE day_gift_totals IS
    'Gifts (every transfer with code gift_diamonds, as the console''s overview counts them) of a rolled day, per surface.';
COMMENT ON COLUMN day_gift_totals.day IS 'The rolled UTC day (rolled_days.day).';
COMMENT ON COLUMN day_gift_totals.surface IS
    'The gift''s surface (metadata ->> ''surface''; NULL where the transfer names none).';
COMMENT ON COLUMN day_gift_totals.gift_count IS 'How many gift transfers.';
COMMENT ON COLUMN day_gift_totals.coins IS 'Their coins summed (metadata ->> ''coins''; 0 where none).';
COMMENT ON COLUMN day_gift_totals.milli_diamonds IS 'Their amounts summed, in milli-diamonds.';
COMMENT ON INDEX transfers_created_ranges IS
    'Block ranges by commit timestamp: the transfers of the days not rolled up yet.';
