-- Operator recovery: re-driving dead letters to their source topic, and resubmitting failed
-- cash-outs (services/ingestion/redrive.py, services/cashout/recovery.py).

-- Each dead letter gets a number an operator can name it by (rows already there are numbered
-- now, in no particular order).
ALTER TABLE dead_letters ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_id_key UNIQUE (id);
CREATE INDEX dead_letters_by_error ON dead_letters (topic_prefix, topic, error, recorded_at);

-- Each dead letter re-driven, at most once (the primary key): written once the broker has
-- acknowledged the copy, in the transaction that records its operator action, with the key of
-- the operator's request. The copy's partition and offset in the source topic say which later
-- dead letter, if any, is the copy failing again: such a dead letter is never picked by a
-- re-drive by topic and reason, only by its id, so nothing loops.
CREATE TABLE dead_letter_redrives (
    dead_letter_id     bigint PRIMARY KEY REFERENCES dead_letters (id),
    operator_action_id bigint NOT NULL CHECK (operator_action_id > 0),
    idempotency_key    text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    topic_prefix       text NOT NULL CHECK (length(topic_prefix) <= 200),
    topic              text NOT NULL CHECK (length(topic) BETWEEN 1 AND 255),
    kafka_partition    integer NOT NULL CHECK (kafka_partition >= 0),
    kafka_offset       bigint NOT NULL CHECK (kafka_offset >= 0),
    redriven_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE UNIQUE INDEX dead_letter_redrives_copy
    ON dead_letter_redrives (topic_prefix, topic, kafka_partition, kafka_offset);
CREATE INDEX dead_letter_redrives_request
    ON dead_letter_redrives (topic_prefix, idempotency_key, redriven_at);

-- A failed cash-out resubmitted as a new one (at most once each: the primary key; a
-- resubmission that fails too is resubmitted in turn).
CREATE TABLE cashout_resubmissions (
    cashout_id             text PRIMARY KEY REFERENCES cashouts (cashout_id),
    resubmitted_cashout_id text NOT NULL UNIQUE REFERENCES cashouts (cashout_id),
    operator_action_id     bigint NOT NULL CHECK (operator_action_id > 0),
    recorded_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (resubmitted_cashout_id <> cashout_id)
);

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['dead_letter_redrives', 'cashout_resubmissions'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I'
                       ' FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change()',
                       name || '_immutable', name);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I'
                       ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change()',
                       name || '_no_truncate', name);
    END LOOP;
END $$;

-- Spelled out, not left to the default privileges, so they hold whichever login runs this.
GRANT SELECT, INSERT ON dead_letter_redrives, cashout_resubmissions TO giftledger_writer;
GRANT SELECT ON dead_letter_redrives, cashout_resubmissions TO giftledger_reader;
