-- A proposed balance adjustment can be withdrawn: a proposal made by mistake (a wrong amount, a
-- wrong creator) would otherwise wait for ever, and any other operator could approve and post it
-- later. Any operator may withdraw one (the proposer too: a withdrawal moves no money, so it
-- needs no second pair of eyes), by the action `adjustment_withdrawn` of the operator log. An
-- adjustment is `proposed` until it has an approval row (`approved`, posted) or a withdrawal row
-- (`withdrawn`, never posted); never both.
--
-- Append-only, as the approvals: the triggers of the ledger's tables refuse UPDATE, DELETE and
-- TRUNCATE, for the owner too. At most one withdrawal per adjustment (the primary key), each
-- recorded by its own action (`withdrawal_action_id`, unique).
CREATE TABLE balance_adjustment_withdrawals (
    adjustment_id        bigint PRIMARY KEY REFERENCES balance_adjustments (id),
    withdrawn_by         text NOT NULL CHECK (length(withdrawn_by) BETWEEN 1 AND 64),
    withdrawal_action_id bigint NOT NULL UNIQUE REFERENCES operator_actions (id),
    withdrawn_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TRIGGER balance_adjustment_withdrawals_immutable
    BEFORE UPDATE OR DELETE ON balance_adjustment_withdrawals
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER balance_adjustment_withdrawals_no_truncate
    BEFORE TRUNCATE ON balance_adjustment_withdrawals
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

-- Never both approved and withdrawn: each of the two tables refuses a row for an adjustment the
-- other one has. The operator desk decides under the log's lock (services/operator/desk.py);
-- this holds for any writer. Two transactions inserting a row for the same adjustment take turns
-- on a transaction-level advisory lock keyed by the adjustment, so the second one (in READ
-- COMMITTED, as the services write) sees the first one's row once it has committed.
CREATE FUNCTION refuse_adjustment_approved_and_withdrawn() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('balance_adjustment:' || NEW.adjustment_id, 0));
    IF TG_TABLE_NAME = 'balance_adjustment_approvals' THEN
        IF EXISTS (SELECT 1 FROM balance_adjustment_withdrawals
                   WHERE adjustment_id = NEW.adjustment_id) THEN
            RAISE EXCEPTION 'adjustment % was withdrawn: it cannot be approved', NEW.adjustment_id
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF EXISTS (SELECT 1 FROM balance_adjustment_approvals
                  WHERE adjustment_id = NEW.adjustment_id) THEN
        RAISE EXCEPTION 'adjustment % was approved (and posted): it cannot be withdrawn',
            NEW.adjustment_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER balance_adjustment_approvals_not_withdrawn
    BEFORE INSERT ON balance_adjustment_approvals
    FOR EACH ROW EXECUTE FUNCTION refuse_adjustment_approved_and_withdrawn();
CREATE TRIGGER balance_adjustment_withdrawals_not_approved
    BEFORE INSERT ON balance_adjustment_withdrawals
    FOR EACH ROW EXECUTE FUNCTION refuse_adjustment_approved_and_withdrawn();

-- The writer appends; the reader (and the analyst, through it) reads. Spelled out, not left to
-- the default privileges, so they hold whichever login runs this migration.
GRANT SELECT, INSERT ON balance_adjustment_withdrawals TO giftledger_writer;
GRANT SELECT ON balance_adjustment_withdrawals TO giftledger_reader;

COMMENT ON TABLE balance_adjustment_withdrawals IS
    'Balance adjustments withdrawn before anyone approved them: never posted, never approved.';
COMMENT ON COLUMN balance_adjustment_withdrawals.adjustment_id IS
    'The adjustment withdrawn (balance_adjustments.id).';
COMMENT ON COLUMN balance_adjustment_withdrawals.withdrawn_by IS
    'The operator who withdrew it (the proposer or another).';
COMMENT ON COLUMN balance_adjustment_withdrawals.withdrawal_action_id IS
    'The withdrawing action (operator_actions.id, action adjustment_withdrawn).';
COMMENT ON COLUMN balance_adjustment_withdrawals.withdrawn_at IS 'When it was withdrawn.';
COMMENT ON FUNCTION refuse_adjustment_approved_and_withdrawn() IS
    'Trigger: refuses an approval of a withdrawn adjustment and a withdrawal of an approved one.';
COMMENT ON TABLE balance_adjustments IS
    'Balance adjustments proposed by an operator; approved when a row of '
    'balance_adjustment_approvals exists, withdrawn when a row of '
    'balance_adjustment_withdrawals does (never both), else proposed.';
