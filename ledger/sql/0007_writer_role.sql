-- The role the services write as. It may read everything and insert everywhere, update only the
-- tables that are projections or counters by design (account totals, cash-out state, creator
-- profiles, the outbox, the chain head) and delete only parked events once they are resolved.
-- It cannot UPDATE, DELETE or TRUNCATE transfers, their keys, resolutions, links, applied events,
-- rate cards, FX rates or cash-out transitions: the database refuses before any trigger runs.
-- Migrations run as the login that owns the schema; the finance API reads as giftledger_reader.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'giftledger_writer') THEN
        BEGIN
            CREATE ROLE giftledger_writer NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created concurrently by the migration of another database
        END;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'giftledger_writer', 'MEMBER') THEN
        EXECUTE format('GRANT giftledger_writer TO %I', current_user);
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO giftledger_writer;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO giftledger_writer;
GRANT UPDATE ON accounts, cashouts, creators, outbox, ledger_chain_head TO giftledger_writer;
GRANT DELETE ON parked_events TO giftledger_writer;
-- Tables the migration owner creates later (monthly transfer partitions, later migrations).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO giftledger_writer;
