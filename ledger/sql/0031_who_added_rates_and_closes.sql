-- Who put each rate card version, FX rate and month-end close in: the name `giftledger rates
-- add`, `giftledger rates fx-add` and `giftledger close` act as (`--as NAME`, else
-- OPERATOR_NAME), as the operator actions log records who acted. NULL for the rows recorded
-- before this migration, which kept no name. Every row added since names someone: the
-- `*_named` constraints are NOT VALID, so they hold new rows and leave the old ones as they
-- were (the rows are append-only, so nothing updates an old row to NULL or to a name).
-- The columns are not in a close's hash: `hash_covers_close` and `verify` stay as they were.
-- The writer and the reader keep their table-wide INSERT and SELECT (0007, 0005, 0018), which
-- take in the new columns.
ALTER TABLE rate_cards ADD COLUMN created_by text
    CONSTRAINT rate_cards_created_by_length CHECK (length(created_by) BETWEEN 1 AND 64);
ALTER TABLE rate_cards ADD CONSTRAINT rate_cards_created_by_named
    CHECK (created_by IS NOT NULL) NOT VALID;
COMMENT ON COLUMN rate_cards.created_by IS
    'Who added the version (`giftledger rates add --as`); NULL: added before migration 0031, '
    'which kept no name.';

ALTER TABLE fx_rates ADD COLUMN created_by text
    CONSTRAINT fx_rates_created_by_length CHECK (length(created_by) BETWEEN 1 AND 64);
ALTER TABLE fx_rates ADD CONSTRAINT fx_rates_created_by_named
    CHECK (created_by IS NOT NULL) NOT VALID;
COMMENT ON COLUMN fx_rates.created_by IS
    'Who added the rate (`giftledger rates fx-add --as`); NULL: added before migration 0031, '
    'which kept no name.';

ALTER TABLE period_closes ADD COLUMN closed_by text
    CONSTRAINT period_closes_closed_by_length CHECK (length(closed_by) BETWEEN 1 AND 64);
ALTER TABLE period_closes ADD CONSTRAINT period_closes_closed_by_named
    CHECK (closed_by IS NOT NULL) NOT VALID;
COMMENT ON COLUMN period_closes.closed_by IS
    'Who closed the month (`giftledger close --as`); NULL: closed before migration 0031, which '
    'kept no name.';
