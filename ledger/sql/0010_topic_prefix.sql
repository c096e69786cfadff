-- Deployments that share one database but not one set of topics (KAFKA_TOPIC_PREFIX, e.g. a load
-- test next to the service) keep their own outbox, parked events and dead letters: a deployment
-- publishes only the outbox rows it wrote, retries only the reversals it parked, and records a
-- dead letter under the topic it actually read. Rows from before this migration belong to the
-- deployment without a prefix.
ALTER TABLE outbox ADD COLUMN topic_prefix text NOT NULL DEFAULT ''
    CHECK (length(topic_prefix) <= 200);
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (topic_prefix, id) WHERE published_at IS NULL;

ALTER TABLE parked_events ADD COLUMN topic_prefix text NOT NULL DEFAULT ''
    CHECK (length(topic_prefix) <= 200);

ALTER TABLE dead_letters ADD COLUMN topic_prefix text NOT NULL DEFAULT ''
    CHECK (length(topic_prefix) <= 200);
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey,
    ADD PRIMARY KEY (topic_prefix, topic, kafka_partition, kafka_offset);
