-- The outbox relay (services/cashout/outbox.py) claims the rows it sends in one short
-- transaction, sends them with no transaction open, and marks them published in another. A
-- claim names its relay round (`claimed_by`) and lasts until `claimed_until`: a relay that dies
-- after claiming leaves a claim that runs out, and another relay sends those rows again (at
-- least once). A relay claims a message key's rows only from the key's oldest unpublished row,
-- and never while another live claim holds that row, so each key's messages leave in order
-- however many relays run.
ALTER TABLE outbox
    ADD COLUMN claimed_by text CHECK (length(claimed_by) BETWEEN 1 AND 200),
    ADD COLUMN claimed_until timestamptz,
    ADD CONSTRAINT outbox_claim_whole CHECK ((claimed_by IS NULL) = (claimed_until IS NULL));
-- The oldest unpublished row of each key, found by one walk of this index.
CREATE INDEX outbox_unpublished_by_key ON outbox (topic_prefix, message_key, id)
    WHERE published_at IS NULL;

-- A sweep of parked reversals (services/ingestion/event_store.py) takes the rows it retries:
-- the sweeps of other processes skip them until `claimed_until` instead of retrying the same
-- rows, while the sweep that took them takes them again at its next round.
ALTER TABLE parked_events
    ADD COLUMN claimed_by text CHECK (length(claimed_by) BETWEEN 1 AND 200),
    ADD COLUMN claimed_until timestamptz,
    ADD CONSTRAINT parked_events_claim_whole
        CHECK ((claimed_by IS NULL) = (claimed_until IS NULL));

-- giftledger_writer updates every column of outbox already (0007). On parked_events it could
-- only delete resolved rows: it now also sets the claim, and nothing else. giftledger_reader
-- reads every table (0005), the new columns included.
GRANT UPDATE (claimed_by, claimed_until) ON parked_events TO giftledger_writer;
