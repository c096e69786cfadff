-- A dead letter keeps the SHA-256 of the record's value it was made of. Its verdict is given
-- again to that record only, when the record comes again (its batch ran after its dead letters
-- were published, and its offsets were not committed), whatever has changed since; and a
-- re-drive sends only that record: a topic recreated, or an embedded broker restarted, puts other
-- records at the same offsets. NULL for the dead letters recorded before (and a record without a
-- value): those are matched by their event_id.
ALTER TABLE dead_letters ADD COLUMN value_sha256 bytea
    CHECK (value_sha256 IS NULL OR length(value_sha256) = 32);
COMMENT ON COLUMN dead_letters.value_sha256 IS
    'The SHA-256 of the record''s value, when it had one (and it was recorded after migration 0030).';

-- A parked event keeps its record's key, so that its dead letter carries it as the others do.
ALTER TABLE parked_events ADD COLUMN message_key bytea;
COMMENT ON COLUMN parked_events.message_key IS
    'The record''s Kafka key, as consumed (NULL: it had none, or was parked before migration 0030).';
COMMENT ON COLUMN parked_events.headers IS
    'The record''s Kafka headers: [key, value] pairs, both base64, a null value as null.';
