-- SQL a finance analyst can read: a role for analysts, a comment on every table and column, and
-- read-only views that decode what only the code explained until now (transfer flags, code names,
-- the event behind a transfer and its business time, balances as the API computes them).
--
-- The role. giftledger_analyst reads what giftledger_reader reads (it is a member of it) and
-- nothing else; it is created NOLOGIN, and never gets a password here: whoever administers the
-- server gives it one and LOGIN (README, "SQL for analysts"). Sessions that log in as it are
-- read-only by default and stop a statement after 5 minutes (both can be changed per session).
-- Roles belong to the whole server: created only when missing, as in 0005 and 0007.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'giftledger_analyst') THEN
        BEGIN
            CREATE ROLE giftledger_analyst NOLOGIN;
            ALTER ROLE giftledger_analyst SET default_transaction_read_only = on;
            ALTER ROLE giftledger_analyst SET statement_timeout = '5min';
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created concurrently by the migration of another database
        END;
    END IF;
    IF NOT pg_has_role('giftledger_analyst', 'giftledger_reader', 'MEMBER') THEN
        GRANT giftledger_reader TO giftledger_analyst;
    END IF;
END $$;

-- The topic whose events post each transfer code: where a transfer's `event_id` is looked up.
-- Codes without a row are posted by no consumed event (the batch coin transfer of gifts, a
-- submission to the bank, a catch-up, an expired pending, an operator's adjustment, the tests'
-- synthetic transfers).
CREATE TABLE transfer_code_topics (
    code  smallint PRIMARY KEY REFERENCES transfer_codes (code),
    topic text NOT NULL CHECK (topic ~ '^[a-z]+\.[a-z]+$')
);
INSERT INTO transfer_code_topics (code, topic)
SELECT c.code, known.topic
FROM transfer_codes c
JOIN (VALUES
    ('gift_diamonds', 'gifts.sent'),
    ('gift_reversal_diamonds', 'gifts.reversed'),
    ('gift_reversal_coins', 'gifts.reversed'),
    ('tip', 'tips.received'),
    ('tip_fan_fee', 'tips.received'),
    ('tip_processor_fee', 'tips.received'),
    ('fund_reward', 'fund.rewarded'),
    ('marketplace_payment', 'marketplace.paid'),
    ('marketplace_fee', 'marketplace.paid'),
    ('cashout_hold', 'cashouts.requested'),
    ('cashout_paid', 'payouts.updated'),
    ('cashout_settled', 'payouts.updated'),
    ('cashout_released', 'payouts.updated'),
    ('cashout_returned', 'payouts.updated'),
    ('cashout_conversion', 'payouts.updated'),
    ('rounding', 'payouts.updated')
) AS known (name, topic) ON known.name = c.name;

-- The cash-out report counts by booking time: the time of a cash-out's first transition.
CREATE INDEX cashout_transitions_at ON cashout_transitions (at);

-- An amount in minor units as a decimal in the asset's unit: (12500, 3) is 12.500.
CREATE FUNCTION major_units(amount_minor bigint, scale smallint) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT round(amount_minor / power(10::numeric, scale), scale)
$$;

-- The views ---------------------------------------------------------------------------------

CREATE VIEW transfer_details AS
SELECT t.seq,
       t.id AS transfer_id,
       t.created_at AS booked_at,
       e.occurred_at,
       e.topic AS source_topic,
       t.event_id,
       t.code,
       c.name AS code_name,
       t.asset,
       s.scale,
       t.amount AS amount_minor,
       major_units(t.amount, s.scale) AS amount,
       d.name AS debit_account,
       k.name AS credit_account,
       d.creator_id AS debit_creator_id,
       k.creator_id AS credit_creator_id,
       (t.flags & 1) <> 0 AS is_linked,
       (t.flags & 2) <> 0 AS is_pending,
       (t.flags & 4) <> 0 AS is_post_pending,
       (t.flags & 8) <> 0 AS is_void_pending,
       (t.flags & 16) <> 0 AS is_funded,
       t.pending_id,
       t.expires_at,
       t.rate_card_version,
       t.metadata,
       t.debit_balance_after AS debit_balance_after_minor,
       t.credit_balance_after AS credit_balance_after_minor
FROM transfers t
JOIN transfer_codes c ON c.code = t.code
JOIN assets s ON s.code = t.asset
JOIN accounts d ON d.id = t.debit_account_id
JOIN accounts k ON k.id = t.credit_account_id
LEFT JOIN transfer_code_topics ct ON ct.code = t.code
LEFT JOIN applied_events e ON e.topic = ct.topic AND e.event_id = t.event_id;

CREATE VIEW gift_details AS
SELECT t.seq,
       t.id AS transfer_id,
       t.event_id,
       t.created_at AS booked_at,
       e.occurred_at,
       a.creator_id,
       t.metadata ->> 'surface' AS surface,
       t.metadata ->> 'gift_id' AS gift_id,
       t.metadata ->> 'video_id' AS video_id,
       t.metadata ->> 'live_id' AS live_id,
       t.metadata ->> 'sender_id' AS sender_id,
       CAST(t.metadata ->> 'coins' AS bigint) AS coins,
       t.amount AS diamonds_minor,
       major_units(t.amount, s.scale) AS diamonds,
       t.rate_card_version
FROM transfers t
JOIN transfer_codes c ON c.code = t.code AND c.name = 'gift_diamonds'
JOIN assets s ON s.code = t.asset
JOIN accounts a ON a.id = t.credit_account_id
LEFT JOIN applied_events e ON e.topic = 'gifts.sent' AND e.event_id = t.event_id;

CREATE VIEW account_balances AS
SELECT a.id AS account_id,
       a.name AS account,
       a.asset,
       s.scale,
       a.kind,
       a.creator_id,
       (a.flags & 1) <> 0 AS debits_must_not_exceed_credits,
       (a.flags & 2) <> 0 AS credits_must_not_exceed_debits,
       a.debits_posted,
       a.credits_posted,
       a.debits_pending,
       a.credits_pending,
       a.credits_posted - a.debits_posted AS posted_minor,
       a.credits_posted - a.debits_posted - a.debits_pending AS available_minor,
       a.debits_pending AS held_minor,
       major_units(a.credits_posted - a.debits_posted, s.scale) AS posted,
       major_units(a.credits_posted - a.debits_posted - a.debits_pending, s.scale) AS available,
       major_units(a.debits_pending, s.scale) AS held
FROM accounts a
JOIN assets s ON s.code = a.asset;

CREATE VIEW cashout_details AS
SELECT c.cashout_id,
       c.creator_id,
       c.status,
       c.rejected_rule,
       c.failure_code,
       c.occurred_at AS requested_at,
       first_transition.at AS booked_at,
       c.updated_at,
       c.asset,
       s.scale,
       c.amount AS amount_minor,
       major_units(c.amount, s.scale) AS amount,
       c.payout_currency,
       p.scale AS payout_scale,
       c.payout_amount AS payout_amount_minor,
       major_units(c.payout_amount, p.scale) AS payout_amount,
       c.usd_value_micros,
       c.rate_card_version,
       c.fx_numerator,
       c.fx_denominator
FROM cashouts c
JOIN assets s ON s.code = c.asset
JOIN assets p ON p.code = c.payout_currency
LEFT JOIN LATERAL (
    SELECT t.at FROM cashout_transitions t
    WHERE t.cashout_id = c.cashout_id
    ORDER BY t.seq
    LIMIT 1
) AS first_transition ON true;

-- Who reads them. The default privileges of 0005 and 0007 gave the reader SELECT and the writer
-- SELECT and INSERT on what this migration creates; spelled out here so they hold whichever
-- login runs it, and the writer inserts into none of it.
GRANT SELECT ON transfer_code_topics, transfer_details, gift_details, account_balances,
    cashout_details TO giftledger_reader, giftledger_analyst;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON transfer_code_topics, transfer_details, gift_details,
    account_balances, cashout_details FROM giftledger_writer;

-- Comments: every table, view and column of the schema ------------------------------------

COMMENT ON FUNCTION major_units(bigint, smallint) IS
    'An amount in minor units as a decimal in the asset''s unit: major_units(12500, 3) = 12.500.';

COMMENT ON TABLE alembic_version IS
    'The schema''s migration revision (Alembic); `giftledger migrate` brings it to the latest.';
COMMENT ON COLUMN alembic_version.version_num IS
    'The revision the schema is at (ledger/migrations/versions).';

COMMENT ON TABLE assets IS
    'Every asset the ledger holds: COIN, DIAMOND and ISO 4217 currencies, with their scale.';
COMMENT ON COLUMN assets.code IS 'The asset''s code: COIN, DIAMOND, USD, EUR, ...';
COMMENT ON COLUMN assets.scale IS
    'Decimal places of the minor unit: amounts are integers of 10^-scale units (DIAMOND 3: '
    '1 diamond = 1000 milli-diamonds; USD 2: cents).';

COMMENT ON TABLE transfer_codes IS
    'Why a transfer happened: a stable number and its name (ledger.model.TransferCode).';
COMMENT ON COLUMN transfer_codes.code IS 'The number stored in transfers.code.';
COMMENT ON COLUMN transfer_codes.name IS 'The name people read, e.g. gift_diamonds, cashout_hold.';

COMMENT ON TABLE transfer_code_topics IS
    'The consumed topic whose events post each transfer code: where a transfer''s event_id is '
    'looked up in applied_events. Codes without a row come from no consumed event.';
COMMENT ON COLUMN transfer_code_topics.code IS 'A transfer code (transfer_codes.code).';
COMMENT ON COLUMN transfer_code_topics.topic IS
    'The topic, without a deployment''s prefix, e.g. gifts.sent.';

COMMENT ON TABLE accounts IS
    'Ledger accounts: one asset each, four totals changed only by transfers. Names: '
    'creator:<id>:DIAMOND:available, creator:<id>:DIAMOND:held, creator:<id>:<CUR>:wallet, '
    'platform:<asset>:<kind>. Balances in the account_balances view.';
COMMENT ON COLUMN accounts.id IS 'The account''s number, referenced by transfers.';
COMMENT ON COLUMN accounts.name IS 'The account''s unique, stable name (ledger/chart.py).';
COMMENT ON COLUMN accounts.asset IS 'The one asset the account holds (assets.code).';
COMMENT ON COLUMN accounts.kind IS
    'What the account is for (ledger.chart.AccountKind), e.g. creator_diamonds_available, '
    'diamond_issuance, payouts_payable.';
COMMENT ON COLUMN accounts.creator_id IS 'The creator the account belongs to; NULL for platform accounts.';
COMMENT ON COLUMN accounts.flags IS
    'Balance rule bits: 1 debits must not exceed credits, 2 credits must not exceed debits '
    '(decoded in account_balances).';
COMMENT ON COLUMN accounts.debits_posted IS 'Sum of posted transfers debiting the account, minor units.';
COMMENT ON COLUMN accounts.credits_posted IS 'Sum of posted transfers crediting the account, minor units.';
COMMENT ON COLUMN accounts.debits_pending IS
    'Sum of pending transfers debiting the account and not yet posted or voided (a cash-out '
    'hold), minor units.';
COMMENT ON COLUMN accounts.credits_pending IS
    'Sum of pending transfers crediting the account and not yet posted or voided, minor units.';
COMMENT ON COLUMN accounts.created_at IS 'When the account was created (on its first use).';

COMMENT ON TABLE transfers IS
    'Immutable double-entry transfers, partitioned by month of commit time: each moves amount '
    'from the debit account to the credit account of one asset. Decoded in transfer_details.';
COMMENT ON COLUMN transfers.id IS
    'The transfer''s id and idempotency key (a UUID derived from topic, event and leg).';
COMMENT ON COLUMN transfers.seq IS 'Commit order: increases with every transfer stored.';
COMMENT ON COLUMN transfers.debit_account_id IS 'The account debited (accounts.id).';
COMMENT ON COLUMN transfers.credit_account_id IS 'The account credited (accounts.id).';
COMMENT ON COLUMN transfers.amount IS 'The amount moved, minor units of the asset, > 0.';
COMMENT ON COLUMN transfers.asset IS 'The asset of both accounts (assets.code).';
COMMENT ON COLUMN transfers.code IS 'Why it happened (transfer_codes.code).';
COMMENT ON COLUMN transfers.flags IS
    'Bits: 1 linked (succeeds or fails with the next), 2 pending, 4 posts a pending, 8 voids a '
    'pending, 16 funded (refused if the debit account would go below zero). Decoded in '
    'transfer_details.';
COMMENT ON COLUMN transfers.pending_id IS 'For a post or void: the pending transfer it resolves.';
COMMENT ON COLUMN transfers.timeout_s IS 'For a pending transfer: seconds until it expires.';
COMMENT ON COLUMN transfers.expires_at IS 'For a pending transfer with a timeout: when it expires.';
COMMENT ON COLUMN transfers.rate_card_version IS 'The rate card version that priced it (rate_cards.version).';
COMMENT ON COLUMN transfers.event_id IS
    'The input event that posted it (applied_events.event_id of the topic its code names in '
    'transfer_code_topics), or an id giftledger made for its own events.';
COMMENT ON COLUMN transfers.metadata IS
    'Details by code: a gift''s surface, gift_id, sender_id, coins and video_id or live_id; a '
    'reversal''s gift_event_id and reason; a cash-out''s cashout_id.';
COMMENT ON COLUMN transfers.debit_balance_after IS
    'The debit account''s posted balance (credits minus debits) right after this transfer.';
COMMENT ON COLUMN transfers.credit_balance_after IS
    'The credit account''s posted balance (credits minus debits) right after this transfer.';
COMMENT ON COLUMN transfers.created_at IS
    'Booking time: when the ledger committed the transfer (the clock of every report).';

COMMENT ON TABLE transfer_keys IS
    'One row per transfer id ever stored: ids are unique across the partitions of transfers.';
COMMENT ON COLUMN transfer_keys.id IS 'A transfer''s id (transfers.id).';
COMMENT ON COLUMN transfer_keys.created_at IS 'That transfer''s created_at (which partition holds it).';

COMMENT ON TABLE pending_resolutions IS
    'How each pending transfer ended: posted, voided or expired; at most one row per pending.';
COMMENT ON COLUMN pending_resolutions.pending_id IS 'The pending transfer (transfers.id).';
COMMENT ON COLUMN pending_resolutions.resolved_by IS 'The transfer that posted, voided or expired it.';
COMMENT ON COLUMN pending_resolutions.outcome IS 'posted, voided or expired.';
COMMENT ON COLUMN pending_resolutions.created_at IS 'When it was resolved.';

COMMENT ON TABLE applied_events IS
    'Every input event applied, written with its transfers: a redelivered event finds its row '
    'and changes nothing.';
COMMENT ON COLUMN applied_events.topic IS 'The topic it came from, without a deployment''s prefix.';
COMMENT ON COLUMN applied_events.event_id IS 'The event''s idempotency key, unique per topic.';
COMMENT ON COLUMN applied_events.payload_sha256 IS
    'SHA-256 of the canonical payload: the same event_id with another hash is a conflict.';
COMMENT ON COLUMN applied_events.creator_id IS 'The creator the event is about.';
COMMENT ON COLUMN applied_events.occurred_at IS
    'Business time: when the event happened, as its publisher said (occurred_at).';
COMMENT ON COLUMN applied_events.applied_at IS 'When the ledger applied it (its transaction''s start).';
COMMENT ON COLUMN applied_events.kafka_partition IS 'The partition it was read from.';
COMMENT ON COLUMN applied_events.kafka_offset IS 'The offset it was read at.';

COMMENT ON TABLE rate_cards IS
    'Rate card versions, effective-dated and append-only: a gift is priced by the version in '
    'force at its occurred_at, a cash-out by the one in force at its request.';
COMMENT ON COLUMN rate_cards.version IS 'The version number, recorded on every transfer it priced.';
COMMENT ON COLUMN rate_cards.effective_from IS 'When it takes effect (-infinity for the first).';
COMMENT ON COLUMN rate_cards.milli_diamonds_per_coin IS
    'Milli-diamonds a creator gets per coin of a gift (500: half a diamond).';
COMMENT ON COLUMN rate_cards.diamonds_per_usd IS 'Diamonds worth 1 USD at cash-out (200).';
COMMENT ON COLUMN rate_cards.note IS 'Why the version exists.';
COMMENT ON COLUMN rate_cards.created_at IS 'When it was added.';

COMMENT ON TABLE parked_events IS
    'Events waiting for what they refer to (a reversal before its gift), retried until '
    'retry_until, then dead-lettered; rows leave when resolved.';
COMMENT ON COLUMN parked_events.topic IS 'The topic it came from, without a deployment''s prefix.';
COMMENT ON COLUMN parked_events.event_id IS 'The event''s id.';
COMMENT ON COLUMN parked_events.payload IS 'The record''s bytes as consumed.';
COMMENT ON COLUMN parked_events.headers IS 'The record''s Kafka headers: [key, value] pairs, both base64.';
COMMENT ON COLUMN parked_events.kafka_partition IS 'The partition it was read from.';
COMMENT ON COLUMN parked_events.kafka_offset IS 'The offset it was read at.';
COMMENT ON COLUMN parked_events.waiting_for IS 'What it waits for, e.g. gift <event id>.';
COMMENT ON COLUMN parked_events.parked_at IS 'When it was parked.';
COMMENT ON COLUMN parked_events.retry_until IS 'When it stops waiting and is dead-lettered.';
COMMENT ON COLUMN parked_events.topic_prefix IS 'The deployment (topic prefix) that parked it.';
COMMENT ON COLUMN parked_events.claimed_by IS 'The sweep retrying it now, if any.';
COMMENT ON COLUMN parked_events.claimed_until IS 'Until when that sweep holds it.';

COMMENT ON TABLE dead_letters IS
    'Every consumed record sent to a dead-letter topic, with the reason; one row per source '
    'offset.';
COMMENT ON COLUMN dead_letters.topic IS 'The topic it came from, without a deployment''s prefix.';
COMMENT ON COLUMN dead_letters.kafka_partition IS 'The partition it was read from.';
COMMENT ON COLUMN dead_letters.kafka_offset IS 'The offset it was read at.';
COMMENT ON COLUMN dead_letters.event_id IS 'Its event_id, when one could be read.';
COMMENT ON COLUMN dead_letters.error IS 'The reason, e.g. malformed_json, schema_violation, conflict.';
COMMENT ON COLUMN dead_letters.detail IS 'What exactly was wrong.';
COMMENT ON COLUMN dead_letters.recorded_at IS 'When it was dead-lettered.';
COMMENT ON COLUMN dead_letters.topic_prefix IS 'The deployment (topic prefix) that read it.';
COMMENT ON COLUMN dead_letters.id IS 'The number an operator names it by (re-drive).';

COMMENT ON TABLE creators IS
    'The latest creators.updated facts per creator (by occurred_at, then event_id), read by '
    'the Creator Next eligibility rules. A projection: rows are replaced.';
COMMENT ON COLUMN creators.creator_id IS 'The creator.';
COMMENT ON COLUMN creators.birth_date IS 'Date of birth (the age rule).';
COMMENT ON COLUMN creators.country IS 'ISO 3166-1 alpha-2 country (the country rule).';
COMMENT ON COLUMN creators.followers IS 'Followers (the follower minimum of the region).';
COMMENT ON COLUMN creators.video_views_30d IS 'Video views in the 30 days before the update.';
COMMENT ON COLUMN creators.posts_30d IS 'Posts in the 30 days before the update.';
COMMENT ON COLUMN creators.in_good_standing IS 'Whether the creator is in good standing.';
COMMENT ON COLUMN creators.identity_verified IS 'Whether the creator''s identity is verified.';
COMMENT ON COLUMN creators.payout_account_ref IS
    'Opaque token naming the payout account at the payout rail, never an account number.';
COMMENT ON COLUMN creators.occurred_at IS 'Business time of the update that set this state.';
COMMENT ON COLUMN creators.event_id IS 'The event_id of that update.';
COMMENT ON COLUMN creators.updated_at IS 'When the ledger stored it.';

COMMENT ON TABLE fx_rates IS
    'Units of a currency per 1 USD as an exact fraction, effective-dated, append-only; a '
    'cash-out in a currency with no rate in force is rejected.';
COMMENT ON COLUMN fx_rates.currency IS 'The currency (assets.code).';
COMMENT ON COLUMN fx_rates.effective_from IS 'When the rate takes effect.';
COMMENT ON COLUMN fx_rates.units_per_usd_numerator IS 'Numerator of units of the currency per USD.';
COMMENT ON COLUMN fx_rates.units_per_usd_denominator IS 'Denominator of units of the currency per USD.';
COMMENT ON COLUMN fx_rates.created_at IS 'When it was added.';

COMMENT ON TABLE cashouts IS
    'One row per cash-out request and its current state (a projection of '
    'cashout_transitions). Decoded, with booking time, in cashout_details.';
COMMENT ON COLUMN cashouts.cashout_id IS 'The cash-out: the event_id of its cashouts.requested event.';
COMMENT ON COLUMN cashouts.creator_id IS 'The creator cashing out.';
COMMENT ON COLUMN cashouts.asset IS 'What is cashed out: DIAMOND or a currency.';
COMMENT ON COLUMN cashouts.amount IS 'How much, minor units of asset (milli-diamonds for DIAMOND).';
COMMENT ON COLUMN cashouts.payout_currency IS 'The currency paid to the bank account.';
COMMENT ON COLUMN cashouts.payout_amount IS
    'What is (or would be) paid, minor units of payout_currency; NULL when never converted.';
COMMENT ON COLUMN cashouts.usd_value_micros IS
    'Its value in millionths of a USD at the rate card (the daily limit counts it).';
COMMENT ON COLUMN cashouts.rate_card_version IS 'The rate card that converted it.';
COMMENT ON COLUMN cashouts.fx_numerator IS 'Numerator of the FX rate used (payout currency units per USD).';
COMMENT ON COLUMN cashouts.fx_denominator IS 'Denominator of the FX rate used.';
COMMENT ON COLUMN cashouts.status IS
    'requested, held, submitted, paid, rejected, failed or returned.';
COMMENT ON COLUMN cashouts.rejected_rule IS 'For rejected: the first rule it broke.';
COMMENT ON COLUMN cashouts.failure_code IS 'For failed or returned: the bank''s code (e.g. R01, AC04).';
COMMENT ON COLUMN cashouts.payout_account_ref IS 'The payout account token it is paid to.';
COMMENT ON COLUMN cashouts.requested_on IS 'The UTC day of occurred_at: the day of the daily limit.';
COMMENT ON COLUMN cashouts.occurred_at IS
    'Request time: the business time of the cashouts.requested event.';
COMMENT ON COLUMN cashouts.updated_at IS 'When its state last changed.';

COMMENT ON TABLE cashout_transitions IS
    'Every state a cash-out went through, in order, append-only; the first one''s time is '
    'when the ledger booked the request.';
COMMENT ON COLUMN cashout_transitions.cashout_id IS 'The cash-out (cashouts.cashout_id).';
COMMENT ON COLUMN cashout_transitions.seq IS 'Order of the transitions.';
COMMENT ON COLUMN cashout_transitions.status IS 'The state entered.';
COMMENT ON COLUMN cashout_transitions.detail IS 'The rule that rejected it, or the failure code.';
COMMENT ON COLUMN cashout_transitions.at IS 'When the ledger recorded the change.';

COMMENT ON TABLE outbox IS
    'Messages to publish (cashouts.updated, payouts.requested, operator.actions) once the '
    'transaction that wrote them has committed.';
COMMENT ON COLUMN outbox.id IS 'Order of writing.';
COMMENT ON COLUMN outbox.topic IS 'The topic, without the deployment''s prefix.';
COMMENT ON COLUMN outbox.message_key IS 'The Kafka key (the creator).';
COMMENT ON COLUMN outbox.payload IS 'The message''s JSON bytes.';
COMMENT ON COLUMN outbox.created_at IS 'When it was written.';
COMMENT ON COLUMN outbox.published_at IS 'When the broker took it; NULL while unpublished.';
COMMENT ON COLUMN outbox.topic_prefix IS 'The deployment (topic prefix) that publishes it.';
COMMENT ON COLUMN outbox.claimed_by IS 'The relay round sending it now, if any.';
COMMENT ON COLUMN outbox.claimed_until IS 'Until when that round holds it.';

COMMENT ON TABLE ledger_links IS
    'The hash chain: one link per posted batch, hash = sha256(previous hash || digest of the '
    'batch''s transfers); giftledger verify recomputes it.';
COMMENT ON COLUMN ledger_links.id IS 'Order of the links.';
COMMENT ON COLUMN ledger_links.transfer_ids IS 'The ids of the batch''s transfers.';
COMMENT ON COLUMN ledger_links.transfers_sha256 IS 'SHA-256 of their canonical form (ledger/chain.py).';
COMMENT ON COLUMN ledger_links.previous_hash IS 'The hash of the link before.';
COMMENT ON COLUMN ledger_links.hash IS 'sha256(previous_hash || transfers_sha256).';
COMMENT ON COLUMN ledger_links.linked_at IS 'When the batch was linked.';

COMMENT ON TABLE ledger_chain_head IS 'The last link of the hash chain: one row.';
COMMENT ON COLUMN ledger_chain_head.only_row IS 'Always true: the table holds one row.';
COMMENT ON COLUMN ledger_chain_head.link_id IS 'The last link (ledger_links.id); NULL before the first.';
COMMENT ON COLUMN ledger_chain_head.hash IS 'That link''s hash (zeros before the first).';

COMMENT ON TABLE operator_actions IS
    'What operators did by hand, who, why, under which key: append-only and hash-chained.';
COMMENT ON COLUMN operator_actions.id IS 'Order of the actions.';
COMMENT ON COLUMN operator_actions.idempotency_key IS 'The client''s key: the same key is the same action.';
COMMENT ON COLUMN operator_actions.actor IS 'Who acted (the token''s name, or --as).';
COMMENT ON COLUMN operator_actions.role IS 'The actor''s role: operator or finance.';
COMMENT ON COLUMN operator_actions.action IS 'What was done, e.g. adjustment_proposed, creator_frozen.';
COMMENT ON COLUMN operator_actions.target IS 'What it was done to, e.g. creator:<id>, dead-letter:<id>.';
COMMENT ON COLUMN operator_actions.reason IS 'Why, in the operator''s words.';
COMMENT ON COLUMN operator_actions.ticket IS 'A ticket reference, if given.';
COMMENT ON COLUMN operator_actions.details IS 'The action''s particulars as a JSON object.';
COMMENT ON COLUMN operator_actions.recorded_at IS 'When it was recorded.';
COMMENT ON COLUMN operator_actions.previous_hash IS 'The hash of the action before.';
COMMENT ON COLUMN operator_actions.hash IS 'sha256(previous_hash || canonical content).';

COMMENT ON TABLE operator_actions_head IS 'The last operator action of the chain: one row.';
COMMENT ON COLUMN operator_actions_head.only_row IS 'Always true: the table holds one row.';
COMMENT ON COLUMN operator_actions_head.action_id IS 'The last action (operator_actions.id); NULL before the first.';
COMMENT ON COLUMN operator_actions_head.hash IS 'That action''s hash (zeros before the first).';

COMMENT ON TABLE balance_adjustments IS
    'Balance adjustments proposed by an operator; approved when a row of '
    'balance_adjustment_approvals exists.';
COMMENT ON COLUMN balance_adjustments.id IS 'The id of the action that proposed it (operator_actions.id).';
COMMENT ON COLUMN balance_adjustments.creator_id IS 'The creator adjusted.';
COMMENT ON COLUMN balance_adjustments.asset IS 'DIAMOND or a currency.';
COMMENT ON COLUMN balance_adjustments.amount_minor IS
    'Signed minor units: > 0 credits the creator, < 0 debits.';
COMMENT ON COLUMN balance_adjustments.proposed_by IS 'The proposing operator.';
COMMENT ON COLUMN balance_adjustments.proposed_at IS 'When it was proposed.';

COMMENT ON TABLE balance_adjustment_approvals IS
    'The approval of an adjustment by a second operator, and the transfer it posted.';
COMMENT ON COLUMN balance_adjustment_approvals.adjustment_id IS 'The adjustment (balance_adjustments.id).';
COMMENT ON COLUMN balance_adjustment_approvals.proposed_by IS 'Who proposed it.';
COMMENT ON COLUMN balance_adjustment_approvals.approved_by IS 'Who approved it (never the proposer).';
COMMENT ON COLUMN balance_adjustment_approvals.approval_action_id IS 'The approving action (operator_actions.id).';
COMMENT ON COLUMN balance_adjustment_approvals.transfer_id IS 'The operator_adjustment transfer it posted.';
COMMENT ON COLUMN balance_adjustment_approvals.approved_at IS 'When it was approved.';

COMMENT ON TABLE creator_freezes IS
    'Each freeze and unfreeze of a creator; the latest row is the state. A frozen creator''s '
    'cash-outs are rejected.';
COMMENT ON COLUMN creator_freezes.id IS 'Order of the changes.';
COMMENT ON COLUMN creator_freezes.creator_id IS 'The creator.';
COMMENT ON COLUMN creator_freezes.frozen IS 'true: frozen from then on; false: unfrozen.';
COMMENT ON COLUMN creator_freezes.action_id IS 'The operator action (operator_actions.id).';
COMMENT ON COLUMN creator_freezes.recorded_at IS 'When it was recorded.';

COMMENT ON TABLE dead_letter_redrives IS
    'Each dead letter re-driven to its source topic, at most once, and where the copy landed.';
COMMENT ON COLUMN dead_letter_redrives.dead_letter_id IS 'The dead letter (dead_letters.id).';
COMMENT ON COLUMN dead_letter_redrives.operator_action_id IS 'The operator action that re-drove it.';
COMMENT ON COLUMN dead_letter_redrives.idempotency_key IS 'The key of the operator''s request.';
COMMENT ON COLUMN dead_letter_redrives.topic_prefix IS 'The deployment whose topic got the copy.';
COMMENT ON COLUMN dead_letter_redrives.topic IS 'The source topic, without the prefix.';
COMMENT ON COLUMN dead_letter_redrives.kafka_partition IS 'The copy''s partition.';
COMMENT ON COLUMN dead_letter_redrives.kafka_offset IS 'The copy''s offset.';
COMMENT ON COLUMN dead_letter_redrives.redriven_at IS 'When the broker acknowledged the copy.';

COMMENT ON TABLE cashout_resubmissions IS
    'A failed cash-out resubmitted as a new one (<cashout_id>:resubmit), at most once.';
COMMENT ON COLUMN cashout_resubmissions.cashout_id IS 'The failed cash-out.';
COMMENT ON COLUMN cashout_resubmissions.resubmitted_cashout_id IS 'The new cash-out.';
COMMENT ON COLUMN cashout_resubmissions.operator_action_id IS 'The operator action that resubmitted it.';
COMMENT ON COLUMN cashout_resubmissions.recorded_at IS 'When it was resubmitted.';

-- The views' comments.

COMMENT ON VIEW transfer_details IS
    'Every transfer decoded: code name, flags as booleans, accounts by name, amounts in minor '
    'and major units, and the event behind it with its business time next to the booking time.';
COMMENT ON COLUMN transfer_details.seq IS 'Commit order.';
COMMENT ON COLUMN transfer_details.transfer_id IS 'The transfer''s id.';
COMMENT ON COLUMN transfer_details.booked_at IS 'Booking time: when the ledger committed it.';
COMMENT ON COLUMN transfer_details.occurred_at IS
    'Business time of the event that posted it; NULL when no consumed event did.';
COMMENT ON COLUMN transfer_details.source_topic IS 'The topic of that event; NULL when none.';
COMMENT ON COLUMN transfer_details.event_id IS 'The event id stored on the transfer.';
COMMENT ON COLUMN transfer_details.code IS 'The code''s number.';
COMMENT ON COLUMN transfer_details.code_name IS 'Why it happened, e.g. gift_diamonds, cashout_hold.';
COMMENT ON COLUMN transfer_details.asset IS 'The asset moved.';
COMMENT ON COLUMN transfer_details.scale IS 'The asset''s decimal places.';
COMMENT ON COLUMN transfer_details.amount_minor IS 'The amount, minor units.';
COMMENT ON COLUMN transfer_details.amount IS 'The amount in the asset''s unit (12.500 DIAMOND).';
COMMENT ON COLUMN transfer_details.debit_account IS 'The debited account''s name.';
COMMENT ON COLUMN transfer_details.credit_account IS 'The credited account''s name.';
COMMENT ON COLUMN transfer_details.debit_creator_id IS 'The debited account''s creator; NULL for a platform account.';
COMMENT ON COLUMN transfer_details.credit_creator_id IS 'The credited account''s creator; NULL for a platform account.';
COMMENT ON COLUMN transfer_details.is_linked IS 'Succeeds or fails together with the next transfer.';
COMMENT ON COLUMN transfer_details.is_pending IS 'Reserves the amount until posted, voided or expired (a cash-out hold).';
COMMENT ON COLUMN transfer_details.is_post_pending IS 'Posts the pending transfer pending_id.';
COMMENT ON COLUMN transfer_details.is_void_pending IS 'Voids the pending transfer pending_id.';
COMMENT ON COLUMN transfer_details.is_funded IS 'Refused had the debit account gone below zero.';
COMMENT ON COLUMN transfer_details.pending_id IS 'For a post or void: the pending transfer.';
COMMENT ON COLUMN transfer_details.expires_at IS 'For a pending transfer with a timeout: when it expires.';
COMMENT ON COLUMN transfer_details.rate_card_version IS 'The rate card version that priced it.';
COMMENT ON COLUMN transfer_details.metadata IS 'Details by code (see transfers.metadata).';
COMMENT ON COLUMN transfer_details.debit_balance_after_minor IS
    'The debit account''s posted balance right after it, minor units.';
COMMENT ON COLUMN transfer_details.credit_balance_after_minor IS
    'The credit account''s posted balance right after it, minor units.';

COMMENT ON VIEW gift_details IS
    'Every gift: the Diamonds it credited its creator, with its surface, gift, sender and '
    'coins, booked and business time. Reversals are not netted out (code '
    'gift_reversal_diamonds in transfer_details).';
COMMENT ON COLUMN gift_details.seq IS 'Commit order.';
COMMENT ON COLUMN gift_details.transfer_id IS 'The gift''s transfer.';
COMMENT ON COLUMN gift_details.event_id IS 'The gifts.sent event.';
COMMENT ON COLUMN gift_details.booked_at IS 'Booking time: when the ledger committed it.';
COMMENT ON COLUMN gift_details.occurred_at IS 'Business time: when the fan sent it.';
COMMENT ON COLUMN gift_details.creator_id IS 'The creator credited.';
COMMENT ON COLUMN gift_details.surface IS 'video or live.';
COMMENT ON COLUMN gift_details.gift_id IS 'Which gift.';
COMMENT ON COLUMN gift_details.video_id IS 'The video, for surface video.';
COMMENT ON COLUMN gift_details.live_id IS 'The LIVE stream, for surface live.';
COMMENT ON COLUMN gift_details.sender_id IS 'The fan.';
COMMENT ON COLUMN gift_details.coins IS 'Coins spent: coins per gift times count.';
COMMENT ON COLUMN gift_details.diamonds_minor IS 'Diamonds credited, in milli-diamonds.';
COMMENT ON COLUMN gift_details.diamonds IS 'Diamonds credited (12.500).';
COMMENT ON COLUMN gift_details.rate_card_version IS 'The rate card version that priced it.';

COMMENT ON VIEW account_balances IS
    'Every account''s balances as the finance API computes them (credit-normal: credits minus '
    'debits). A creator''s balance per asset is the sum over the creator''s accounts.';
COMMENT ON COLUMN account_balances.account_id IS 'The account''s number.';
COMMENT ON COLUMN account_balances.account IS 'The account''s name.';
COMMENT ON COLUMN account_balances.asset IS 'Its asset.';
COMMENT ON COLUMN account_balances.scale IS 'The asset''s decimal places.';
COMMENT ON COLUMN account_balances.kind IS 'What the account is for.';
COMMENT ON COLUMN account_balances.creator_id IS 'Its creator; NULL for a platform account.';
COMMENT ON COLUMN account_balances.debits_must_not_exceed_credits IS 'Balance rule: never below zero.';
COMMENT ON COLUMN account_balances.credits_must_not_exceed_debits IS 'Balance rule: never above zero.';
COMMENT ON COLUMN account_balances.debits_posted IS 'Posted debits, minor units.';
COMMENT ON COLUMN account_balances.credits_posted IS 'Posted credits, minor units.';
COMMENT ON COLUMN account_balances.debits_pending IS 'Pending debits, minor units.';
COMMENT ON COLUMN account_balances.credits_pending IS 'Pending credits, minor units.';
COMMENT ON COLUMN account_balances.posted_minor IS 'Credits posted minus debits posted, minor units.';
COMMENT ON COLUMN account_balances.available_minor IS
    'The API''s available: posted balance less what pending debits hold, minor units.';
COMMENT ON COLUMN account_balances.held_minor IS
    'The API''s pending: what pending debits hold (a cash-out in flight), minor units.';
COMMENT ON COLUMN account_balances.posted IS 'posted_minor in the asset''s unit.';
COMMENT ON COLUMN account_balances.available IS 'available_minor in the asset''s unit.';
COMMENT ON COLUMN account_balances.held IS 'held_minor in the asset''s unit.';

COMMENT ON VIEW cashout_details IS
    'Every cash-out with its state, amounts in minor and major units, and both clocks: when it '
    'was requested (business time) and when the ledger booked it.';
COMMENT ON COLUMN cashout_details.cashout_id IS 'The cash-out.';
COMMENT ON COLUMN cashout_details.creator_id IS 'The creator.';
COMMENT ON COLUMN cashout_details.status IS 'Its state now.';
COMMENT ON COLUMN cashout_details.rejected_rule IS 'For rejected: the first rule it broke.';
COMMENT ON COLUMN cashout_details.failure_code IS 'For failed or returned: the bank''s code.';
COMMENT ON COLUMN cashout_details.requested_at IS 'Request time: the occurred_at of the request.';
COMMENT ON COLUMN cashout_details.booked_at IS 'Booking time: when the ledger recorded the request.';
COMMENT ON COLUMN cashout_details.updated_at IS 'When its state last changed.';
COMMENT ON COLUMN cashout_details.asset IS 'DIAMOND or a currency.';
COMMENT ON COLUMN cashout_details.scale IS 'The asset''s decimal places.';
COMMENT ON COLUMN cashout_details.amount_minor IS 'Amount requested, minor units of asset.';
COMMENT ON COLUMN cashout_details.amount IS 'Amount requested in the asset''s unit.';
COMMENT ON COLUMN cashout_details.payout_currency IS 'The currency paid.';
COMMENT ON COLUMN cashout_details.payout_scale IS 'That currency''s decimal places.';
COMMENT ON COLUMN cashout_details.payout_amount_minor IS 'What is or would be paid, minor units.';
COMMENT ON COLUMN cashout_details.payout_amount IS 'What is or would be paid, in the currency''s unit.';
COMMENT ON COLUMN cashout_details.usd_value_micros IS 'Its value in millionths of a USD.';
COMMENT ON COLUMN cashout_details.rate_card_version IS 'The rate card that converted it.';
COMMENT ON COLUMN cashout_details.fx_numerator IS 'Numerator of the FX rate used (units per USD).';
COMMENT ON COLUMN cashout_details.fx_denominator IS 'Denominator of the FX rate used.';

-- The tables of 0017 (the chart's account types, the cash-out catch-up) and 0018
-- (reconciliations, period closes), described like every other table.
COMMENT ON TABLE account_kinds IS
    'Each kind of account with its accounting type and normal side (docs/accounting.md).';
COMMENT ON COLUMN account_kinds.kind IS 'The account kind, as accounts.kind names it.';
COMMENT ON COLUMN account_kinds.account_type IS
    'asset, liability, revenue, expense or clearing.';
COMMENT ON COLUMN account_kinds.normal_side IS
    'debit or credit: the side on which a balance of this type normally stands.';
COMMENT ON COLUMN account_kinds.description IS 'What an account of this kind holds, in words.';

COMMENT ON TABLE cashout_catch_ups IS
    'Cash-outs paid or submitted before the chart settled payouts against cash at the bank, and'
    ' when `giftledger migrate` posted what each lacked (once).';
COMMENT ON COLUMN cashout_catch_ups.cashout_id IS 'The cash-out caught up.';
COMMENT ON COLUMN cashout_catch_ups.status_migrated IS 'Its state when the migration ran.';
COMMENT ON COLUMN cashout_catch_ups.caught_up_at IS
    'When its missing transfers were posted; null while not yet.';

COMMENT ON TABLE reconciliations IS
    'One run of `giftledger reconcile` over a set of settlement files (append-only).';
COMMENT ON COLUMN reconciliations.id IS 'The reconciliation''s number (GET /v1/reconciliations/{id}).';
COMMENT ON COLUMN reconciliations.content_sha256 IS
    'SHA-256 of the files'' contents and days: the same files reconcile once.';
COMMENT ON COLUMN reconciliations.first_day IS 'The first settlement day covered.';
COMMENT ON COLUMN reconciliations.last_day IS 'The last settlement day covered.';
COMMENT ON COLUMN reconciliations.missing_days IS 'Days in the range with no settlement file.';
COMMENT ON COLUMN reconciliations.line_count IS 'Lines read from the files.';
COMMENT ON COLUMN reconciliations.item_count IS 'Items classified (reconciliation_items).';
COMMENT ON COLUMN reconciliations.break_count IS 'Items that are not matched.';
COMMENT ON COLUMN reconciliations.reconciled_at IS 'When the reconciliation ran.';

COMMENT ON TABLE reconciliation_files IS 'The settlement files of a reconciliation, in order.';
COMMENT ON COLUMN reconciliation_files.reconciliation_id IS 'The reconciliation.';
COMMENT ON COLUMN reconciliation_files.position IS 'The file''s place in the command line.';
COMMENT ON COLUMN reconciliation_files.name IS 'The file''s name as given.';
COMMENT ON COLUMN reconciliation_files.settlement_day IS 'The UTC day the file settles.';
COMMENT ON COLUMN reconciliation_files.sha256 IS 'SHA-256 of the file''s bytes.';
COMMENT ON COLUMN reconciliation_files.line_count IS 'Payout lines in the file.';

COMMENT ON TABLE reconciliation_items IS
    'Each settlement line and each cash-out the files should hold, classified: matched,'
    ' missing in the bank, missing in the ledger, amount or currency differs, status differs.';
COMMENT ON COLUMN reconciliation_items.reconciliation_id IS 'The reconciliation.';
COMMENT ON COLUMN reconciliation_items.item_no IS 'The item''s number within it.';
COMMENT ON COLUMN reconciliation_items.cashout_id IS 'The cash-out the item is about.';
COMMENT ON COLUMN reconciliation_items.kind IS 'The classification (matched or a break).';
COMMENT ON COLUMN reconciliation_items.provider_reference IS 'The bank''s reference, if any.';
COMMENT ON COLUMN reconciliation_items.bank_statuses IS 'The statuses the bank reported.';
COMMENT ON COLUMN reconciliation_items.bank_amount_minor IS
    'The amount the bank reported, in minor units of bank_currency.';
COMMENT ON COLUMN reconciliation_items.bank_currency IS 'The currency the bank reported.';
COMMENT ON COLUMN reconciliation_items.bank_value_date IS 'The bank''s value date.';
COMMENT ON COLUMN reconciliation_items.ledger_status IS 'The cash-out''s state in the ledger.';
COMMENT ON COLUMN reconciliation_items.ledger_statuses IS
    'The bank results the ledger recorded for the cash-out.';
COMMENT ON COLUMN reconciliation_items.ledger_amount_minor IS
    'The payout amount in the ledger, in minor units of ledger_currency.';
COMMENT ON COLUMN reconciliation_items.ledger_currency IS 'The payout currency in the ledger.';
COMMENT ON COLUMN reconciliation_items.ledger_value_date IS
    'The UTC day the ledger booked the bank''s result.';
COMMENT ON COLUMN reconciliation_items.detail IS 'What differs, in words.';

COMMENT ON TABLE period_closes IS
    'Month-end closes (`giftledger close`): each chained to the one before and to the ledger''s'
    ' hash chain head at close time.';
COMMENT ON COLUMN period_closes.id IS 'The close''s number.';
COMMENT ON COLUMN period_closes.period IS 'The month closed, YYYY-MM.';
COMMENT ON COLUMN period_closes.period_start IS 'The first instant of the month (UTC).';
COMMENT ON COLUMN period_closes.period_end IS 'The first instant after the month (UTC).';
COMMENT ON COLUMN period_closes.account_count IS 'Accounts with a closing balance.';
COMMENT ON COLUMN period_closes.balances_sha256 IS 'SHA-256 over the closing balances.';
COMMENT ON COLUMN period_closes.chain_link_id IS 'The hash chain link that was the head.';
COMMENT ON COLUMN period_closes.chain_hash IS 'That link''s hash.';
COMMENT ON COLUMN period_closes.previous_hash IS 'The previous close''s hash.';
COMMENT ON COLUMN period_closes.hash IS 'SHA-256 over the previous hash and this close.';
COMMENT ON COLUMN period_closes.closed_at IS 'When the close ran.';

COMMENT ON TABLE closing_balances IS 'Each account''s totals at the end of a closed period.';
COMMENT ON COLUMN closing_balances.close_id IS 'The close.';
COMMENT ON COLUMN closing_balances.account_id IS 'The account.';
COMMENT ON COLUMN closing_balances.debits_minor IS 'Posted debits up to the period end.';
COMMENT ON COLUMN closing_balances.credits_minor IS 'Posted credits up to the period end.';
