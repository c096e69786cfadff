-- Cash-outs: FX rates, the cash-outs and their state history, and the transactional outbox that
-- publishes `payouts.requested` and `cashouts.updated` after the database commit.

-- Units of a currency per 1 USD, as an exact fraction, effective-dated. USD is 1/1 from the start;
-- other currencies are added by finance (`giftledger rates fx-add`); a cash-out in a currency with
-- no rate in force is rejected, never guessed.
CREATE TABLE fx_rates (
    currency       text NOT NULL REFERENCES assets (code),
    effective_from timestamptz NOT NULL,
    units_per_usd_numerator   bigint NOT NULL CHECK (units_per_usd_numerator > 0),
    units_per_usd_denominator bigint NOT NULL CHECK (units_per_usd_denominator > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (currency, effective_from)
);
CREATE TRIGGER fx_rates_immutable BEFORE UPDATE OR DELETE ON fx_rates
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
INSERT INTO fx_rates VALUES ('USD', '-infinity', 1, 1);

-- One row per cash-out; its status moves along the contract's states. The row is a projection
-- of cashout_transitions (insert-only), which keeps every state change with its time.
CREATE TABLE cashouts (
    cashout_id        text PRIMARY KEY CHECK (length(cashout_id) BETWEEN 1 AND 128),
    creator_id        text NOT NULL,
    asset             text NOT NULL REFERENCES assets (code),
    amount            bigint NOT NULL CHECK (amount > 0),          -- minor units of asset
    payout_currency   text NOT NULL REFERENCES assets (code),
    payout_amount     bigint CHECK (payout_amount > 0),            -- minor units of payout_currency
    usd_value_micros  bigint NOT NULL CHECK (usd_value_micros >= 0),
    rate_card_version integer REFERENCES rate_cards (version),
    fx_numerator      bigint,
    fx_denominator    bigint,
    status            text NOT NULL CHECK (status IN
        ('requested', 'held', 'submitted', 'paid', 'rejected', 'failed', 'returned')),
    rejected_rule     text,
    failure_code      text,
    payout_account_ref text,
    requested_on      date NOT NULL,                               -- UTC day, for the daily limit
    occurred_at       timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cashouts_creator_day ON cashouts (creator_id, requested_on);
CREATE INDEX cashouts_status ON cashouts (status, updated_at);

CREATE TABLE cashout_transitions (
    cashout_id text NOT NULL REFERENCES cashouts (cashout_id),
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    status     text NOT NULL,
    detail     text NOT NULL DEFAULT '',
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (cashout_id, seq)
);
CREATE TRIGGER cashout_transitions_immutable BEFORE UPDATE OR DELETE ON cashout_transitions
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();

-- Messages to publish once the transaction that wrote them has committed. The publisher sends
-- the oldest unpublished rows, then marks them; a crash in between sends them again, and
-- consumers deduplicate (payouts.requested by cashout_id, cashouts.updated by event_id).
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic        text NOT NULL,
    message_key  text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
