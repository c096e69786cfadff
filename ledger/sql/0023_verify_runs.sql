-- Verify runs (ledger/verify_runs.py): every `giftledger verify`, clean or not, with what it
-- found, so that the console's overview can say when the ledger was last verified and how that
-- went. A checkpoint (0020) records only clean runs; this log records the failed ones too.
--
-- Append-only: the triggers of the ledger's tables refuse UPDATE, DELETE and TRUNCATE, for the
-- owner too. `giftledger verify` writes it as the login that owns the schema; the writer role
-- reads it and writes nothing, the reader role reads it.
CREATE TABLE verify_runs (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at            timestamptz NOT NULL,
    finished_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    full_check            boolean NOT NULL,
    walked_transfer_count bigint NOT NULL CHECK (walked_transfer_count >= 0),
    problem_count         integer NOT NULL CHECK (problem_count >= 0),
    failed_checks         text[] NOT NULL,
    first_problems        text NOT NULL CHECK (length(first_problems) <= 4000),
    checkpoint_id         bigint CHECK (checkpoint_id >= 1),
    CONSTRAINT failed_checks_only_with_problems CHECK (
        (problem_count = 0) = (cardinality(failed_checks) = 0)),
    CONSTRAINT checkpoint_only_when_clean CHECK (checkpoint_id IS NULL OR problem_count = 0),
    CONSTRAINT finished_after_started CHECK (finished_at >= started_at)
);

CREATE TRIGGER verify_runs_immutable BEFORE UPDATE OR DELETE ON verify_runs
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER verify_runs_no_truncate BEFORE TRUNCATE ON verify_runs
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

-- The writer role may move account totals; it must not also be able to record that the ledger
-- was verified (the default privileges of 0007 would let it insert).
REVOKE INSERT ON verify_runs FROM giftledger_writer;
GRANT SELECT ON verify_runs TO giftledger_reader, giftledger_writer;

COMMENT ON TABLE verify_runs IS
    'Every `giftledger verify`, clean or not, and what it found; the newest is the highest id.';
COMMENT ON COLUMN verify_runs.id IS 'The run''s number, in the order runs were recorded.';
COMMENT ON COLUMN verify_runs.started_at IS 'When the run began reading the ledger.';
COMMENT ON COLUMN verify_runs.finished_at IS 'When the run was recorded.';
COMMENT ON COLUMN verify_runs.full_check IS
    'Whether the run checked the whole ledger (`verify --full`, or no checkpoint before).';
COMMENT ON COLUMN verify_runs.walked_transfer_count IS
    'Transfers whose hash the run recomputed (all of them in a full run).';
COMMENT ON COLUMN verify_runs.problem_count IS 'Problems found (0: the ledger verified clean).';
COMMENT ON COLUMN verify_runs.failed_checks IS
    'The names of the checks that found problems, each once, sorted (empty when clean).';
COMMENT ON COLUMN verify_runs.first_problems IS
    'The first problems as `check: detail` lines, cut at 4,000 characters (empty when clean).';
COMMENT ON COLUMN verify_runs.checkpoint_id IS
    'The checkpoint the clean run recorded (NULL: a failed run, or none was recorded).';
