-- The dead letters list (`services.api.dead_letters.list_dead_letters`: the console's page,
-- `giftledger dead-letters` and `GET /v1/dead-letters`) filtered by topic alone: newest first, a
-- page at a time. Without it the list read every dead letter of the topic (from the primary key
-- or dead_letters_by_error, which lead with the topic but not in the list's order) and sorted
-- them for each page, so a page of a topic that an upstream flooded with bad records cost as much
-- as the flood; with it the page's rows come from the index in the list's order, after a cursor
-- or in a range of days too. By topic and reason the list still reads dead_letters_by_error.
CREATE INDEX dead_letters_by_topic_newest ON dead_letters (topic_prefix, topic, recorded_at DESC, id DESC);
COMMENT ON INDEX dead_letters_by_topic_newest IS
    'The dead letters list of a deployment filtered by topic, newest first (ORDER BY recorded_at DESC, id DESC).';
