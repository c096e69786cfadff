-- Creator profiles: the latest `creators.updated` facts about each creator, read by the
-- eligibility rules (services/eligibility.py).
--
-- A projection, not ledger rows: a row is replaced in place when a later event arrives, so this
-- table has no immutability trigger. "Later" is the event's (occurred_at, event_id), compared in
-- the upsert of services/profiles.py, so the outcome does not depend on delivery order and
-- applying the same event again changes nothing. event_id breaks a tie between two events that
-- carry the same occurred_at.
CREATE TABLE creators (
    creator_id         text PRIMARY KEY CHECK (length(creator_id) BETWEEN 1 AND 128),
    birth_date         date NOT NULL CHECK (birth_date >= DATE '1900-01-01'),
    country            char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    followers          bigint NOT NULL CHECK (followers >= 0),
    video_views_30d    bigint NOT NULL CHECK (video_views_30d >= 0),
    -- bigint, not integer: the event schema allows tallies up to 10^12, and a valid event that
    -- overflowed the column would fail its whole batch on every retry.
    posts_30d          bigint NOT NULL CHECK (posts_30d >= 0),
    in_good_standing   boolean NOT NULL,
    identity_verified  boolean NOT NULL,
    -- An opaque token naming the payout account at the rail, never a raw account number.
    payout_account_ref text CHECK (length(payout_account_ref) BETWEEN 1 AND 128),
    -- occurred_at and event_id of the event that set this state.
    occurred_at        timestamptz NOT NULL,
    event_id           text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 128),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
