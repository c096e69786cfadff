-- A statement's running pending amount (`ledger.queries.statement`, `pending_after`): a page that
-- does not begin at the account's first transfer starts from the holds still open before its
-- first line, the account's pending transfers up to there that were not yet posted, voided or
-- expired. These indexes hold the pending transfers only (a few per cash-out), so finding them
-- costs as many rows as the account has had holds, not as many as it has had transfers (the
-- platform's issuance account is debited by every gift and has never had one).
CREATE INDEX transfers_debit_account_holds ON transfers (debit_account_id, seq)
    WHERE flags & 2 <> 0;
CREATE INDEX transfers_credit_account_holds ON transfers (credit_account_id, seq)
    WHERE flags & 2 <> 0;

COMMENT ON INDEX transfers_debit_account_holds IS
    'Pending transfers (holds) by the account they debit, in seq order: the holds open before a statement page.';
COMMENT ON INDEX transfers_credit_account_holds IS
    'Pending transfers (holds) by the account they credit, in seq order: the holds open before a statement page.';
