-- The finance API's read-only role. The API runs every request in a read-only transaction that
-- first switches to this role (`SET LOCAL ROLE giftledger_reader`), so even a bug in a query can
-- only read: the role has USAGE on the schema and SELECT on its tables, nothing else.
--
-- Roles belong to the whole server, not to one database: the role is created only when missing,
-- and a migration of another database creating it at the same moment is not an error. The login
-- role the API connects as must be a member of it; the migration makes its own (non-superuser)
-- login a member, which covers the usual deployment where the API shares `DATABASE_URL`. A
-- separate API login needs `GRANT giftledger_reader TO <that login>` once.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'giftledger_reader') THEN
        BEGIN
            CREATE ROLE giftledger_reader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created concurrently by the migration of another database
        END;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'giftledger_reader', 'MEMBER') THEN
        EXECUTE format('GRANT giftledger_reader TO %I', current_user);
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO giftledger_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO giftledger_reader;
-- Tables the migration owner creates later (the monthly transfer partitions, later migrations).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO giftledger_reader;
