-- The console's lists, newest first, a page at a time: each reads its first rows from an index in
-- the list's order instead of sorting the whole table on every request.

-- The cash-outs list (`services.console.reads.find_cashouts`): every cash-out, or those requested
-- in a range of days, newest first.
CREATE INDEX cashouts_newest ON cashouts (occurred_at DESC, cashout_id);
COMMENT ON INDEX cashouts_newest IS
    'The console''s cash-outs list, newest first (ORDER BY occurred_at DESC, cashout_id), with or without a range of days.';

-- The same list filtered by state.
CREATE INDEX cashouts_status_newest ON cashouts (status, occurred_at DESC, cashout_id);
COMMENT ON INDEX cashouts_status_newest IS
    'The console''s cash-outs list filtered by state, newest first.';

-- The dead letters list (`services.console.reads.find_dead_letters`): a deployment's dead
-- letters, or those recorded in a range of days, newest first. Filtered by topic and reason it
-- reads dead_letters_by_error instead.
CREATE INDEX dead_letters_newest ON dead_letters (topic_prefix, recorded_at DESC, id DESC);
COMMENT ON INDEX dead_letters_newest IS
    'The console''s dead letters list of a deployment (topic prefix), newest first (ORDER BY recorded_at DESC, id DESC).';
