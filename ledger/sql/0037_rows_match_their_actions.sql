-- Every row that records an operator action's effect names the action (its id), and until now the
-- database checked only that such an action exists (and not even that, for re-drives and
-- resubmissions): a writer could record a four-eyes approval citing any other action, or a freeze
-- or an unfreeze of one creator citing an action on another, and the state the services show would
-- then disagree with the hash-chained log, with nothing to tell. Now each such row must cite the
-- action that did it: its name, its target, its operator and, for an adjustment's approval or
-- withdrawal, the adjustment (the action's `details.adjustment_id`); an approval must also cite a
-- transfer the ledger holds. A change the log does not show cannot be recorded; a forger would
-- have to append to the log itself, which is chained, published on `operator.actions`, and checked
-- by `giftledger verify`.
CREATE FUNCTION refuse_row_without_its_action() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cited_id bigint;
    wanted_action text;
    wanted_target text;
    wanted_actor text;
    wanted_adjustment bigint;
    cited operator_actions%ROWTYPE;
BEGIN
    CASE TG_TABLE_NAME
    WHEN 'balance_adjustments' THEN
        cited_id := NEW.id;
        wanted_action := 'adjustment_proposed';
        wanted_target := NEW.creator_id;
        wanted_actor := NEW.proposed_by;
    WHEN 'balance_adjustment_approvals' THEN
        cited_id := NEW.approval_action_id;
        wanted_action := 'adjustment_approved';
        wanted_actor := NEW.approved_by;
        wanted_adjustment := NEW.adjustment_id;
        IF NOT EXISTS (SELECT 1 FROM transfer_keys WHERE id = NEW.transfer_id) THEN
            RAISE EXCEPTION 'the approval of adjustment % cites transfer %, which the ledger'
                ' does not hold', NEW.adjustment_id, NEW.transfer_id
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    WHEN 'balance_adjustment_withdrawals' THEN
        cited_id := NEW.withdrawal_action_id;
        wanted_action := 'adjustment_withdrawn';
        wanted_actor := NEW.withdrawn_by;
        wanted_adjustment := NEW.adjustment_id;
    WHEN 'creator_freezes' THEN
        cited_id := NEW.action_id;
        wanted_action := CASE WHEN NEW.frozen THEN 'creator_frozen' ELSE 'creator_unfrozen' END;
        wanted_target := NEW.creator_id;
    WHEN 'cashout_resubmissions' THEN
        cited_id := NEW.operator_action_id;
        wanted_action := 'payout_resubmitted';
        wanted_target := NEW.cashout_id;
    WHEN 'dead_letter_redrives' THEN
        cited_id := NEW.operator_action_id;
        wanted_action := 'dead_letter_redriven';
        wanted_target := 'dead-letter:' || NEW.dead_letter_id;
    END CASE;
    SELECT * INTO cited FROM operator_actions WHERE id = cited_id;
    IF NOT FOUND
       OR cited.action <> wanted_action
       OR (wanted_target IS NOT NULL AND cited.target <> wanted_target)
       OR (wanted_actor IS NOT NULL AND cited.actor <> wanted_actor)
       OR (wanted_adjustment IS NOT NULL
           AND (cited.details ->> 'adjustment_id') IS DISTINCT FROM wanted_adjustment::text) THEN
        RAISE EXCEPTION '% row cites operator action %, which is not its % (target %, by %)',
            TG_TABLE_NAME, cited_id, wanted_action,
            coalesce(wanted_target, 'adjustment ' || wanted_adjustment), coalesce(wanted_actor, 'anyone')
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;  -- an AFTER trigger's result is ignored
END $$;

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['balance_adjustments', 'balance_adjustment_approvals',
                                'balance_adjustment_withdrawals', 'creator_freezes',
                                'cashout_resubmissions', 'dead_letter_redrives'] LOOP
        -- After the row's other checks (an adjustment approved and withdrawn, ...), which
        -- say more precisely what is wrong when both refuse it.
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION refuse_row_without_its_action()',
                       name || '_cite_their_action', name);
    END LOOP;
END $$;

COMMENT ON FUNCTION refuse_row_without_its_action() IS
    'Trigger: refuses a row recording an operator action''s effect unless the action it cites is '
    'that action (name, target, operator, adjustment), and an approval whose transfer is unknown.';
