-- `cashouts_status (status, updated_at)` goes. Every read that filters cash-outs by status (the
-- console's and the command line's lists, the stale holds among them, the overview's counts,
-- verify's open holds) is served by `cashouts_status_newest (status, occurred_at DESC,
-- cashout_id)` of migration 0021, which reads the same rows for it: the stale holds are the open
-- cash-outs filtered by `updated_at`, and open cash-outs are few. Every cash-out paid for four
-- entries in the dropped index (its insert, and its updates to held, submitted and paid, none
-- of them HOT since `status` is indexed).
DROP INDEX cashouts_status;
