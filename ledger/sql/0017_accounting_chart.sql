-- The chart's accounting types, payouts settled against cash at the bank.
--
-- Every account kind has an accounting type and a normal side (ledger/chart.py KIND_TYPES holds
-- the same; docs/accounting.md says why each). A cash-out's money becomes payable when its
-- payout request is submitted to the bank, and the payable is settled against cash at the bank
-- when the bank reports it paid: new transfer codes for both. Cash-outs paid before this
-- migration left their payable open: they are listed here, and `giftledger migrate` settles
-- each once with a transfer of its own code (services/cashout/catch_up.py).

CREATE TABLE account_kinds (
    kind         text PRIMARY KEY CHECK (length(kind) BETWEEN 1 AND 64),
    account_type text NOT NULL
        CHECK (account_type IN ('asset', 'liability', 'revenue', 'expense', 'clearing')),
    normal_side  text NOT NULL CHECK (normal_side IN ('debit', 'credit')),
    description  text NOT NULL CHECK (length(description) BETWEEN 1 AND 300)
);

INSERT INTO account_kinds (kind, account_type, normal_side, description) VALUES
    ('creator_diamonds_available', 'liability', 'credit',
     'Diamonds a creator has earned and not cashed out'),
    ('creator_diamonds_held', 'liability', 'credit',
     'Diamonds of a cash-out held until it is submitted to the bank'),
    ('creator_wallet', 'liability', 'credit',
     'money owed to a creator in one currency (tips, fund rewards, marketplace deals)'),
    ('diamond_issuance', 'expense', 'debit',
     'the creators'' share of gifts, in Diamonds'),
    ('diamonds_redeemed', 'clearing', 'credit',
     'Diamonds converted to money at cash-out: the Diamond side of cashout_conversion'),
    ('coins_spent', 'liability', 'credit',
     'coins fans spent on gifts: the spent side of their coin balances, kept outside giftledger'),
    ('coin_gift_revenue', 'revenue', 'credit', 'coins spent on gifts'),
    ('tips_clearing', 'clearing', 'debit',
     'tips charged by the card processor and not yet settled by it'),
    ('tip_fees', 'revenue', 'credit', 'the fan''s fee on a tip'),
    ('processor_fees', 'expense', 'debit', 'the card processor''s fee on a tip'),
    ('payouts_payable', 'liability', 'credit',
     'cash-outs submitted to the bank and not yet paid'),
    ('cashout_conversion', 'clearing', 'debit',
     'money of Diamonds converted at cash-out: the money side of diamonds_redeemed'),
    ('creator_fund_expense', 'expense', 'debit', 'Creator Fund rewards'),
    ('marketplace_clearing', 'clearing', 'debit',
     'brands'' payments for Creator Marketplace deals, not yet settled'),
    ('marketplace_fees', 'revenue', 'credit', 'the platform''s fee on a marketplace deal'),
    ('rounding', 'revenue', 'credit',
     'Diamonds of a cash-out worth less than one minor unit of its currency, not paid out'),
    ('operator_adjustments', 'expense', 'debit',
     'balance adjustments operators proposed and approved'),
    ('cash_at_bank', 'asset', 'debit',
     'the payout bank account: paid cash-outs leave it, returned ones come back'),
    ('synthetic', 'clearing', 'debit', 'accounts of benchmarks and tests');

-- The chart changes by new kinds only (a later migration's INSERT).
CREATE TRIGGER account_kinds_immutable BEFORE UPDATE OR DELETE ON account_kinds
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER account_kinds_no_truncate BEFORE TRUNCATE ON account_kinds
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

-- Every account's kind is in the chart, so every account has a type.
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_in_chart
    FOREIGN KEY (kind) REFERENCES account_kinds (kind);

INSERT INTO transfer_codes (code, name) VALUES
    (45, 'cashout_submitted'), (46, 'cashout_settled'), (47, 'cashout_settled_catch_up');

-- Cash-outs booked before this migration: a `paid` one moved its money to payouts_payable and
-- nothing settled it; a `submitted` one still has its hold pending and nothing payable.
-- `giftledger migrate` posts what each lacks, once (deterministic transfer ids), and records
-- when it did; the list is kept as the record of the catch-up.
CREATE TABLE cashout_catch_ups (
    cashout_id      text PRIMARY KEY REFERENCES cashouts (cashout_id),
    status_migrated text NOT NULL CHECK (status_migrated IN ('submitted', 'paid')),
    caught_up_at    timestamptz
);
INSERT INTO cashout_catch_ups (cashout_id, status_migrated)
SELECT cashout_id, status FROM cashouts WHERE status IN ('submitted', 'paid');
CREATE INDEX cashout_catch_ups_open ON cashout_catch_ups (cashout_id) WHERE caught_up_at IS NULL;

-- Spelled out, not left to the default privileges, so they hold whichever login runs this.
GRANT SELECT ON account_kinds, cashout_catch_ups TO giftledger_reader, giftledger_writer;
