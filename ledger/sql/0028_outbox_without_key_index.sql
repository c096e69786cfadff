-- The outbox relay's claim (services/cashout/outbox.py) reads the oldest unpublished rows of its
-- deployment by id (`outbox_unpublished`) and counts each key's held rows over them in memory;
-- rows are then found by id. Nothing reads the unpublished rows in key order any more, as the
-- claim of migration 0015 did, so their index by key goes: every row paid for an entry in it
-- when written and another when claimed.
DROP INDEX outbox_unpublished_by_key;
