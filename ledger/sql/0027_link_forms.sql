-- A link's digest has one of two forms (ledger/chain.py): 1, the SHA-256 of its transfers' whole
-- canonical lines; 2, sha256(sha256(the lines' heads) || sha256(the running balances and the
-- commit timestamp)), which the ledger's write makes of its own transfers so that the heads,
-- known before the accounts are locked, are hashed before the locks. Both cover every field of
-- every transfer the link names. Every link stored before is of form 1, and so is a link that
-- does not name its form (one appended by a giftledger older than this revision, still running
-- while the schema is upgraded, or by the ledger's own links of form 1, whose statement is the
-- same on either schema).
ALTER TABLE ledger_links ADD COLUMN form smallint NOT NULL DEFAULT 1
    CONSTRAINT link_form_known CHECK (form IN (1, 2));

COMMENT ON COLUMN ledger_links.form IS
    'How transfers_sha256 is made of the transfers (ledger/chain.py): 1, SHA-256 of their '
    'canonical lines; 2, sha256(sha256(the lines'' heads) || sha256(their balances and commit '
    'timestamp)).';
