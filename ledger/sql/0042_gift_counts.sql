-- A gift event sends `count` gifts (docs/events.md). From this migration on the ledger records
-- each gift transfer's `count` in its metadata (`services.ingestion.event_transfers`), and the
-- day totals count gifts as well as gift events. A gift transfer booked before has no `count`,
-- and the database holds nothing that tells it (its coins are its gifts' coins summed; what a
-- gift cost is not kept), so none is made up: the totals keep apart the events that recorded
-- their count, and readers give no gift count for a group holding any other.
--
-- The rows rolled before this migration summed transfers booked before it, none with a count:
-- the new columns' value for them is 0, given as the default while the columns are added, then
-- the defaults go, so that every row rolled from now on states them (rows are never updated).
ALTER TABLE day_gift_totals RENAME COLUMN gift_count TO gift_events;
ALTER TABLE day_gift_totals
    ADD COLUMN counted_events bigint NOT NULL DEFAULT 0,
    ADD COLUMN counted_gifts bigint NOT NULL DEFAULT 0;
ALTER TABLE day_gift_totals
    ALTER COLUMN counted_events DROP DEFAULT,
    ALTER COLUMN counted_gifts DROP DEFAULT,
    ADD CONSTRAINT counted_events_are_gift_events CHECK (counted_events BETWEEN 0 AND gift_events),
    ADD CONSTRAINT a_counted_event_sent_a_gift CHECK (counted_gifts >= counted_events);

COMMENT ON TABLE day_gift_totals IS
    'Gift events (every transfer with code gift_diamonds) of a rolled day, per surface: how many, how many gifts those that recorded their count sent, their coins and Diamonds.';
COMMENT ON COLUMN day_gift_totals.gift_events IS 'How many gift transfers (gift events).';
COMMENT ON COLUMN day_gift_totals.counted_events IS
    'How many of them recorded their count (metadata -> ''count''; from migration 0042 on).';
COMMENT ON COLUMN day_gift_totals.counted_gifts IS
    'The gifts those sent: their counts summed (metadata ->> ''count'').';
