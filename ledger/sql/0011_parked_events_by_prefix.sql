-- A reversal parked by one deployment (topic prefix) is retried by that deployment only (0010).
-- Keyed by (topic, event_id) alone, the second of two deployments sharing a database that both
-- read the same reversal before its gift found the first one's row and wrote none of its own:
-- it counted the reversal as parked and never saw it again. Each deployment keeps its own row.
ALTER TABLE parked_events DROP CONSTRAINT parked_events_pkey,
    ADD PRIMARY KEY (topic_prefix, topic, event_id);
