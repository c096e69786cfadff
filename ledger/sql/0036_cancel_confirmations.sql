-- An operator's cancellation of a stale hold releases it in the ledger at once, but the payout
-- request may have reached the bank already: until the bank says it will not pay it, a
-- resubmission could be paid as well as the original. The bank says so with a `failed` report
-- about the cancelled cash-out (the simulated bank's failure code is `cancelled`); the cash-out
-- desk records it here, and the operator's resubmission of a cancelled cash-out waits for it
-- (services/cashout/recovery.py). A `paid` after the cancellation is booked as a paid cash-out
-- instead (services/cashout/desk.py), which is never resubmitted.
--
-- Append-only, as the ledger's tables: the triggers refuse UPDATE, DELETE and TRUNCATE, for the
-- owner too. One row per cash-out: the first report that confirmed it.
CREATE TABLE cashout_cancel_confirmations (
    cashout_id   text PRIMARY KEY REFERENCES cashouts (cashout_id),
    event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    failure_code text NOT NULL,
    confirmed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TRIGGER cashout_cancel_confirmations_immutable
    BEFORE UPDATE OR DELETE ON cashout_cancel_confirmations
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER cashout_cancel_confirmations_no_truncate
    BEFORE TRUNCATE ON cashout_cancel_confirmations
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

-- The writer appends; the reader (and the analyst, through it) reads. Spelled out, not left to
-- the default privileges, so they hold whichever login runs this migration.
GRANT SELECT, INSERT ON cashout_cancel_confirmations TO giftledger_writer;
GRANT SELECT ON cashout_cancel_confirmations TO giftledger_reader;

COMMENT ON TABLE cashout_cancel_confirmations IS
    'The bank''s failed report about a cash-out an operator cancelled: the payout will not be '
    'made, so the cash-out may be resubmitted.';
COMMENT ON COLUMN cashout_cancel_confirmations.cashout_id IS
    'The cancelled cash-out (cashouts.cashout_id, failed with operator_cancelled).';
COMMENT ON COLUMN cashout_cancel_confirmations.event_id IS
    'The payouts.updated report that confirmed it (its event_id).';
COMMENT ON COLUMN cashout_cancel_confirmations.failure_code IS 'The bank''s failure code.';
COMMENT ON COLUMN cashout_cancel_confirmations.confirmed_at IS 'When the ledger recorded it.';
