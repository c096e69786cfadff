-- Verify checks the per-day totals (0022) too: a full run recomputes every rolled day from its
-- transfers, an incremental run only the days rolled since the checkpoint it starts from. Rolled
-- days form a gapless run from the first day and are rolled in order, each in a transaction of
-- its own, so the days a snapshot sees are exactly those up to the highest it sees: the days
-- after a checkpoint's highest rolled day are the ones it has not checked.
--
-- A new nullable column: the table stays append-only (its triggers refuse UPDATE and DELETE),
-- and checkpoints written before this migration hold NULL, after which the next run checks every
-- rolled day.
ALTER TABLE verify_checkpoints ADD COLUMN rolled_day_max date;

COMMENT ON COLUMN verify_checkpoints.rolled_day_max IS
    'The highest rolled day (rolled_days.day) the run saw and checked, every day up to it too; NULL: none, or written before the runs checked rolled days.';
