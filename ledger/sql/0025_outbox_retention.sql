-- Published outbox rows are transport, not records: once the broker has a message, its row is
-- only history, and every cash-out leaves about five. `giftledger run` deletes published rows
-- older than OUTBOX_RETENTION_HOURS (services/cashout/outbox_retention.py); what happened to a
-- cash-out stays in cashout_transitions, what an operator did in operator_actions.
--
-- The writer may delete outbox rows, and the database refuses to delete one that is not
-- published yet, for every role, so pruning can never lose a message; nobody may TRUNCATE it.
CREATE FUNCTION refuse_outbox_loss() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'TRUNCATE on outbox is not allowed: unpublished messages would be lost'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.published_at IS NULL THEN
        RAISE EXCEPTION 'outbox row % is not published yet: it cannot be deleted', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER outbox_keeps_unpublished BEFORE DELETE ON outbox
    FOR EACH ROW EXECUTE FUNCTION refuse_outbox_loss();
CREATE TRIGGER outbox_no_truncate BEFORE TRUNCATE ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_outbox_loss();

GRANT DELETE ON outbox TO giftledger_writer;

-- The published rows of a deployment by age, for the prune to read only what it deletes: an
-- entry is made when a row is marked published (the mark is not a HOT update: it changes what
-- the unpublished rows' partial indexes hold), none while it waits.
CREATE INDEX outbox_published_by_age ON outbox (topic_prefix, created_at)
    WHERE published_at IS NOT NULL;
COMMENT ON INDEX outbox_published_by_age IS
    'Published outbox rows by deployment and age, for OUTBOX_RETENTION_HOURS.';

COMMENT ON TABLE outbox IS
    'Messages to publish (cashouts.updated, payouts.requested, operator.actions) once the '
    'transaction that wrote them has committed; published rows are deleted after '
    'OUTBOX_RETENTION_HOURS.';
