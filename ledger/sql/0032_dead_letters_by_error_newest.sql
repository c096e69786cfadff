-- The dead letters list (`services.api.dead_letters.list_dead_letters`: the console's page,
-- `giftledger dead-letters` and `GET /v1/dead-letters`) filtered by reason alone: newest first, a
-- page at a time. Without it a rare reason (`processing_failed`) was found by reading the whole
-- table, since no index led with the reason; with it the first rows of the page, after a cursor or
-- in a range of days, come from the index in the list's order. By topic (and reason) the list
-- reads dead_letters_by_error, unfiltered or by range dead_letters_newest (migration 0021).
CREATE INDEX dead_letters_by_error_newest ON dead_letters (topic_prefix, error, recorded_at DESC, id DESC);
COMMENT ON INDEX dead_letters_by_error_newest IS
    'The dead letters list of a deployment filtered by reason, newest first (ORDER BY recorded_at DESC, id DESC).';
