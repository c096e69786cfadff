-- Ingestion bookkeeping: which events were applied (with a hash of their payload), the rate card
-- versions that priced them, events parked until what they refer to arrives, and dead letters.

-- Every applied input event, written in the same transaction as its transfers. Redelivery finds
-- the row and changes nothing; the same id with another payload hash is a conflict.
CREATE TABLE applied_events (
    topic          text NOT NULL CHECK (length(topic) BETWEEN 1 AND 255),
    event_id       text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    payload_sha256 bytea NOT NULL CHECK (length(payload_sha256) = 32),
    creator_id     text,
    occurred_at    timestamptz NOT NULL,
    applied_at     timestamptz NOT NULL DEFAULT now(),
    kafka_partition integer NOT NULL,
    kafka_offset   bigint NOT NULL,
    PRIMARY KEY (topic, event_id)
);
CREATE TRIGGER applied_events_immutable BEFORE UPDATE OR DELETE ON applied_events
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();

-- Rate card versions. A gift is priced by the version in force at its occurred_at, so a
-- redelivered gift is priced the same way whenever it is applied.
CREATE TABLE rate_cards (
    version                 integer PRIMARY KEY CHECK (version > 0),
    effective_from          timestamptz NOT NULL UNIQUE,
    milli_diamonds_per_coin integer NOT NULL CHECK (milli_diamonds_per_coin BETWEEN 1 AND 1000),
    diamonds_per_usd        integer NOT NULL CHECK (diamonds_per_usd BETWEEN 1 AND 1000000),
    note                    text NOT NULL DEFAULT '' CHECK (length(note) <= 500),
    created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER rate_cards_immutable BEFORE UPDATE OR DELETE ON rate_cards
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();

-- The contract's default: a creator gets half of a gift's coins as diamonds (500 milli-diamonds
-- per coin), and 200 diamonds are worth 1 USD at cash-out.
INSERT INTO rate_cards (version, effective_from, milli_diamonds_per_coin, diamonds_per_usd, note)
VALUES (1, '-infinity', 500, 200, 'contract default: creator share 50 %, 200 diamonds = 1 USD');

-- Events that refer to something not yet applied (a reversal before its gift). Retried by the
-- consumer until `retry_until`, then dead-lettered. Rows leave this table when resolved.
CREATE TABLE parked_events (
    topic           text NOT NULL,
    event_id        text NOT NULL,
    payload         bytea NOT NULL,
    headers         jsonb NOT NULL DEFAULT '[]',
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    waiting_for     text NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    retry_until     timestamptz NOT NULL,
    PRIMARY KEY (topic, event_id)
);
CREATE INDEX parked_events_retry_until ON parked_events (retry_until);

-- Every input sent to a dead-letter topic, with the reason; one row per source offset.
CREATE TABLE dead_letters (
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    event_id        text,
    error           text NOT NULL CHECK (length(error) BETWEEN 1 AND 64),
    detail          text NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
CREATE INDEX dead_letters_event_id ON dead_letters (event_id) WHERE event_id IS NOT NULL;
