-- A dead letter's id, what names it (re-drives, the API, the console), is the table's primary
-- key: migration 0040 dropped the key of source positions for the unique index of position and
-- value hash, and left the table with a unique id but no primary key. The re-drives' foreign
-- key names the id's unique constraint, so it is made again on the primary key.
ALTER TABLE dead_letter_redrives DROP CONSTRAINT dead_letter_redrives_dead_letter_id_fkey;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_id_key,
    ADD CONSTRAINT dead_letters_pkey PRIMARY KEY (id);
ALTER TABLE dead_letter_redrives ADD CONSTRAINT dead_letter_redrives_dead_letter_id_fkey
    FOREIGN KEY (dead_letter_id) REFERENCES dead_letters (id);

-- A copy's place in its source topic no longer names one re-drive: a topic whose offsets start
-- again (recreated, or the embedded broker restarted) puts a new copy where a copy of its earlier
-- life landed, and the unique index refused to record it once the broker had taken it (sent
-- again at every retry, never recorded). The index stays, not unique, for the re-drive by
-- topic's look-up of copies that failed again, which also compares the records
-- (`services/ingestion/redrive.py`).
DROP INDEX dead_letter_redrives_copy;
CREATE INDEX dead_letter_redrives_copy
    ON dead_letter_redrives (topic_prefix, topic, kafka_partition, kafka_offset);
COMMENT ON INDEX dead_letter_redrives_copy IS
    'Re-drives by the place of their copy in the source topic: several when the topic''s offsets started again.';
