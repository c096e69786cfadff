-- Transfer partitions kept by the running service, rows of the default partition moved to their
-- month, and TRUNCATE refused on every partition.
--
-- Until now only `giftledger migrate` created the coming months. A service that ran past them
-- wrote into transfers_default, and from then on creating that month failed (the default
-- partition held rows in its range), so `migrate` failed too. Now keep_transfer_partitions moves
-- the default partition's rows into their months and creates the coming months; `migrate` calls
-- it as the owner and `giftledger run` calls it daily as giftledger_writer.
--
-- Why moving rows is allowed. A row of transfers_default is a transfer committed in a month that
-- had no partition yet. Moving it to that month's partition changes where it is stored, not what
-- it says: the same id, seq, amounts, balances-after and commit time, so the hash chain, the keys
-- and every total `verify` checks stay as they were. The application sees `transfers`, never a
-- partition, and it can neither update nor delete a row of it.
--
-- How the triggers are handled. The move runs as the schema's owner, in one transaction that
-- first locks `transfers` against every reader and writer: it detaches the default partition
-- (PostgreSQL then drops the no-update/no-delete row trigger it had cloned onto it, since it is no
-- longer part of `transfers`), creates the months its rows belong to, inserts the rows through
-- `transfers` with their own seq (OVERRIDING SYSTEM VALUE), deletes them from the detached table
-- and attaches it again, which clones the trigger back. No other session ever sees the detached
-- table or a row twice or missing. The functions that do it cannot be called by any role but the
-- owner: giftledger_writer may call keep_transfer_partitions only, whose one argument says how
-- many months to keep ahead.

-- The name of the partition holding a month's transfers.
CREATE FUNCTION transfer_month_partition_name(month_start date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('transfers_%s', to_char(month_start, 'YYYY_MM'))
$$;

-- Whether that month's partition is attached to transfers.
CREATE FUNCTION transfer_month_partition_exists(month_start date) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'transfers'::regclass
          AND c.relname = transfer_month_partition_name(month_start))
$$;

-- How many months after the current one (UTC) have their partition, counting until the first
-- month without one: 3 when this month and the next three have one, -1 when this month has none.
CREATE FUNCTION transfer_partition_months_ahead() RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    month_start date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    months_ready integer := -1;
BEGIN
    WHILE months_ready < 120 AND transfer_month_partition_exists(month_start) LOOP
        months_ready := months_ready + 1;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;
    RETURN months_ready;
END $$;

-- One month's partition, refusing TRUNCATE as its parent does (a statement trigger on a
-- partitioned table does not fire for a TRUNCATE of one partition). Returns whether it made it.
-- The default partition must hold no rows of that month: PostgreSQL refuses otherwise.
CREATE FUNCTION create_transfer_month(month_start date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name text := transfer_month_partition_name(month_start);
BEGIN
    IF month_start <> date_trunc('month', month_start)::date THEN
        RAISE EXCEPTION '% is not the first day of a month', month_start;
    END IF;
    IF transfer_month_partition_exists(month_start) THEN
        RETURN false;
    END IF;
    IF to_regclass(name) IS NOT NULL THEN
        RAISE EXCEPTION '% exists but is not a partition of transfers', name;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF transfers FOR VALUES FROM (%L) TO (%L)',
        name, month_start::timestamp AT TIME ZONE 'UTC',
        (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
    EXECUTE format(
        'CREATE TRIGGER transfers_partition_no_truncate BEFORE TRUNCATE ON %I'
        ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change()', name);
    RETURN true;
END $$;

-- Moves every row of the default partition into its month's partition, creating the months it
-- needs, in the caller's transaction. Returns the rows moved. See the top of this file.
CREATE FUNCTION move_default_transfers() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    month_start date;
    moved bigint;
    left_behind bigint;
BEGIN
    LOCK TABLE ONLY transfers IN ACCESS EXCLUSIVE MODE;
    IF NOT EXISTS (SELECT 1 FROM transfers_default) THEN
        RETURN 0;
    END IF;
    ALTER TABLE transfers DETACH PARTITION transfers_default;
    FOR month_start IN
        SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')::date
        FROM transfers_default
    LOOP
        PERFORM create_transfer_month(month_start);
    END LOOP;
    INSERT INTO transfers (
        id, seq, debit_account_id, credit_account_id, amount, asset, code, flags, pending_id,
        timeout_s, expires_at, rate_card_version, event_id, metadata, debit_balance_after,
        credit_balance_after, created_at)
    OVERRIDING SYSTEM VALUE
    SELECT
        id, seq, debit_account_id, credit_account_id, amount, asset, code, flags, pending_id,
        timeout_s, expires_at, rate_card_version, event_id, metadata, debit_balance_after,
        credit_balance_after, created_at
    FROM transfers_default;
    GET DIAGNOSTICS moved = ROW_COUNT;
    DELETE FROM transfers_default;
    GET DIAGNOSTICS left_behind = ROW_COUNT;
    IF left_behind <> moved THEN
        RAISE EXCEPTION 'moved % transfers but removed % from the default partition',
            moved, left_behind;
    END IF;
    ALTER TABLE transfers ATTACH PARTITION transfers_default DEFAULT;
    RETURN moved;
END $$;

-- Replaces the first migration's version: the default partition's rows are moved first (else
-- creating their month fails), and new months refuse TRUNCATE. Returns the months it created
-- among this month and the next months_ahead.
CREATE OR REPLACE FUNCTION create_transfer_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    made integer := 0;
BEGIN
    IF months_ahead NOT BETWEEN 0 AND 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', months_ahead;
    END IF;
    LOCK TABLE ONLY transfers IN ACCESS EXCLUSIVE MODE;
    PERFORM move_default_transfers();
    FOR i IN 0..months_ahead LOOP
        IF create_transfer_month(month_start) THEN
            made := made + 1;
        END IF;
        month_start := (month_start + interval '1 month')::date;
    END LOOP;
    RETURN made;
END $$;

-- The upkeep `migrate` and `run` call: move the default partition's rows, make sure this month
-- and the next months_ahead have partitions, return transfer_partition_months_ahead(). Nothing
-- is locked beyond a look at the catalog and the default partition when all is in place already.
-- Two upkeeps at once take turns (a transaction-level advisory lock; its key spells "giftpart").
CREATE FUNCTION keep_transfer_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7451599708748870260);
    IF transfer_partition_months_ahead() < months_ahead
       OR EXISTS (SELECT 1 FROM transfers_default) THEN
        PERFORM create_transfer_partitions(months_ahead);
    END IF;
    RETURN transfer_partition_months_ahead();
END $$;

REVOKE ALL ON FUNCTION create_transfer_month(date) FROM PUBLIC;
REVOKE ALL ON FUNCTION move_default_transfers() FROM PUBLIC;
REVOKE ALL ON FUNCTION create_transfer_partitions(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION keep_transfer_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION keep_transfer_partitions(integer) TO giftledger_writer;

-- Every partition there already is refuses TRUNCATE too (the default one and the months made by
-- the first migration's create_transfer_partitions).
DO $$
DECLARE
    child regclass;
BEGIN
    FOR child IN
        SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'transfers'::regclass
    LOOP
        EXECUTE format(
            'CREATE TRIGGER transfers_partition_no_truncate BEFORE TRUNCATE ON %s'
            ' FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change()', child);
    END LOOP;
END $$;
