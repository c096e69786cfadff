-- A reversal parked by one deployment (topic prefix) is retried by that deployment only (0010).
-- Keyed by (topic, event_id) alone, the second of two deployments sharing a database that both
-- read the same reversal before its gift took the first one's row for its own copy and counted
-- a duplicate: the reversal then waited on the first deployment's sweep alone, which stops when
-- that deployment does. Each deployment keeps its own row.
ALTER TABLE parked_events DROP CONSTRAINT parked_events_pkey,
    ADD PRIMARY KEY (topic_prefix, topic, event_id);
