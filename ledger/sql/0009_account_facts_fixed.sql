-- An account's asset and balance rules never change once it exists: posting keeps them in memory
-- (ledger.posting.AccountFacts) and reads only the accounts whose rules a batch could break. The
-- writer role may update an account's four totals and nothing else about it.
REVOKE UPDATE ON accounts FROM giftledger_writer;
GRANT UPDATE (debits_posted, credits_posted, debits_pending, credits_pending)
    ON accounts TO giftledger_writer;
