-- Every function of the schema that reads a table finds the schema's own, whoever calls it.
--
-- A name without a schema is looked up in the caller's search_path, and the session's temporary
-- schema comes first in it unless placed otherwise. The triggers of migrations 0033 and 0037
-- looked up operator_actions, transfer_keys and balance_adjustment_* so: any role that may create
-- temporary tables (PUBLIC may, by default) could CREATE TEMP TABLE operator_actions holding a
-- forged action and record an unfreeze, an approval or a re-drive citing it, which the trigger then
-- accepted while the log showed no such action. Each function now runs with search_path
-- `public, pg_temp`, as keep_transfer_partitions and wait_for_ledger_writers did already: the
-- catalog first (implicitly: named first, it would also be where CREATE TABLE of the partition
-- functions puts a table), then the schema, then the temporary schema last, so a temporary table
-- can no longer stand in for a table of the schema. (Functions and operators are never looked up
-- in the temporary schema, and the writer and the reader are not granted CREATE on public.) The
-- two SQL functions that read no table, major_units and transfer_month_partition_name, are left
-- as they are: a SET clause would keep PostgreSQL from inlining them where they are called.
ALTER FUNCTION refuse_row_without_its_action() SET search_path = public, pg_temp;
ALTER FUNCTION refuse_adjustment_approved_and_withdrawn() SET search_path = public, pg_temp;
ALTER FUNCTION refuse_ledger_change() SET search_path = public, pg_temp;
ALTER FUNCTION refuse_outbox_loss() SET search_path = public, pg_temp;
ALTER FUNCTION transfer_month_partition_exists(date) SET search_path = public, pg_temp;
ALTER FUNCTION transfer_partition_months_ahead() SET search_path = public, pg_temp;
ALTER FUNCTION create_transfer_month(date) SET search_path = public, pg_temp;
ALTER FUNCTION move_default_transfers() SET search_path = public, pg_temp;
ALTER FUNCTION create_transfer_partitions(integer) SET search_path = public, pg_temp;

-- A re-drive and a resubmission name their action by id with no foreign key (0016); the trigger
-- of 0037 refuses one citing an action the log does not hold, and now the key does too, as it
-- does for the other tables citing actions. The key's check runs as the table's owner with
-- qualified names, whatever the caller's search_path. Rows written before 0037 were never held
-- to it: the keys are validated only when every row there already cites an action of the log,
-- else they hold new rows only (the rows are immutable, so nothing else could break them).
ALTER TABLE dead_letter_redrives ADD CONSTRAINT dead_letter_redrives_operator_action_id_fkey
    FOREIGN KEY (operator_action_id) REFERENCES operator_actions (id) NOT VALID;
ALTER TABLE cashout_resubmissions ADD CONSTRAINT cashout_resubmissions_operator_action_id_fkey
    FOREIGN KEY (operator_action_id) REFERENCES operator_actions (id) NOT VALID;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM dead_letter_redrives r
                   WHERE NOT EXISTS (SELECT 1 FROM operator_actions a
                                     WHERE a.id = r.operator_action_id)) THEN
        ALTER TABLE dead_letter_redrives
            VALIDATE CONSTRAINT dead_letter_redrives_operator_action_id_fkey;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM cashout_resubmissions r
                   WHERE NOT EXISTS (SELECT 1 FROM operator_actions a
                                     WHERE a.id = r.operator_action_id)) THEN
        ALTER TABLE cashout_resubmissions
            VALIDATE CONSTRAINT cashout_resubmissions_operator_action_id_fkey;
    END IF;
END $$;
