-- The writer role inserts only where the services and the commands that act as it write.
--
-- 0007 granted giftledger_writer INSERT on every table there was, and made it a default
-- privilege of the migrations' login, so every table made since gave it INSERT unless its
-- migration took it back (0019, 0020, 0023 did). It could so add assets, transfer codes and
-- account kinds no migration made, rows to the list of cash-outs to catch up, a revision to
-- alembic_version, and rows straight into a month's partition of transfers. None of these is
-- written by the services nor by `close`, `reconcile`, `rates add`, `rates fx-add` or
-- `giftledger operator`, which act as the writer: the reference tables and the catch-up list are
-- filled by migrations, the chain heads' one rows too (the writer updates them), and transfers
-- are inserted through `transfers`, whose partitions only `keep_transfer_partitions` (as the
-- owner) writes directly. tests/test_writer_privileges.py lists what the writer may write on
-- each table.
REVOKE INSERT ON assets, transfer_codes, account_kinds, alembic_version, cashout_catch_ups,
    ledger_chain_head, operator_actions_head FROM giftledger_writer;

DO $$
DECLARE
    partition regclass;
    owner_name name;
BEGIN
    FOR partition IN
        SELECT relid FROM pg_partition_tree('transfers') WHERE relid <> 'transfers'::regclass
    LOOP
        EXECUTE format('REVOKE INSERT ON %s FROM giftledger_writer', partition);
    END LOOP;
    -- Tables made from now on (later migrations, the coming months' partitions) give the
    -- writer SELECT only: a migration that adds a table the writer writes grants it. The
    -- default privileges are those of whoever ran 0007 here, normally this login.
    FOR owner_name IN
        SELECT pg_get_userbyid(d.defaclrole) FROM pg_default_acl d
        WHERE d.defaclnamespace = 'public'::regnamespace AND d.defaclobjtype = 'r'
          AND pg_has_role(d.defaclrole, 'MEMBER')
    LOOP
        EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public'
                       ' REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'
                       ' ON TABLES FROM giftledger_writer', owner_name);
    END LOOP;
END $$;
