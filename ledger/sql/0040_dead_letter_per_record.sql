-- Every dead-lettered record gets a row of its own. A topic whose offsets start again (recreated,
-- or the embedded broker restarted) puts new records at offsets that old dead letters hold; keyed
-- by their source position alone, a new dead letter at such an offset got no row (the old one's
-- stood for it, `ON CONFLICT DO NOTHING`), though it went to the dead-letter topic. A dead letter
-- is now unique by its source position and the hash of its record's value: the same record
-- delivered again at its offset (a rewind, a crash, a rebalance) keeps its one row, another record
-- there gets its own. Two records without a value at one offset are taken for one (NULLS NOT
-- DISTINCT): nothing tells them apart. A row recorded before migration 0030 has no hash; the
-- consumers match it by its event_id, as they give verdicts again (`EventStore`).
-- The id (dead_letters_id_key) stays what names a row: re-drives, the API, the console.
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey;
CREATE UNIQUE INDEX dead_letters_source ON dead_letters
    (topic_prefix, topic, kafka_partition, kafka_offset, value_sha256) NULLS NOT DISTINCT;
COMMENT ON INDEX dead_letters_source IS
    'One row per dead-lettered record: its deployment, source topic, partition and offset, and the SHA-256 of its value (the consumers'' look-up of a batch''s dead letters by offset range).';
COMMENT ON TABLE dead_letters IS
    'Every consumed record sent to a dead-letter topic, with the reason; one row per record: a '
    'record at an offset that an older dead letter holds (offsets that started again) has its own.';
