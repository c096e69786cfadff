"""The two paths `bench.ledger_bench` holds giftledger's batch path against, without giftledger.

Both talk to PostgreSQL through asyncpg directly (no SQLAlchemy, no `Ledger`), in a database
migrated like the ledger's (the same tables, constraints, indexes and triggers), and neither
links the hash chain:

- `naive`: what a straightforward service does, one transaction per transfer, from
  `--naive-connections` connections. Each transfer is one call of a PL/pgSQL function created
  for the benchmark (`bench_post_transfer`), sent as one prepared statement in autocommit: one
  round trip and one implicit transaction per transfer. The function inserts the transfer's key,
  updates the credit account and then the debit account (the funding account, which every
  transfer debits, is locked last, so it is held for the shortest time), each guarded by its
  balance rule and returning its new balance, and inserts the transfer row with both running
  balances. A refusal raises, which rolls the whole transfer back.
- `ceiling`: no ledger logic at all: per batch, one statement that adds the batch's amounts to
  its accounts, aggregated per account (in id order), and inserts its keys and its transfer rows
  (the same columns as the batch path fills, running balances 0 since nothing is read or walked)
  from `unnest` over arrays; autocommit, so one round trip per batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.model import Transfer

DEADLOCK_SQLSTATE = "40P01"
CEILING_RETRY_COUNT_MAX = 5

CREATE_NAIVE_FUNCTION = """
CREATE FUNCTION bench_post_transfer(
    p_id uuid, p_debit_account_id bigint, p_credit_account_id bigint, p_amount bigint,
    p_code smallint, p_flags smallint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    debit_asset text;
    debit_balance bigint;
    credit_asset text;
    credit_balance bigint;
BEGIN
    INSERT INTO transfer_keys (id, created_at) VALUES (p_id, now());
    UPDATE accounts SET credits_posted = credits_posted + p_amount
    WHERE id = p_credit_account_id
      AND (flags & 2 = 0 OR credits_posted + credits_pending + p_amount <= debits_posted)
    RETURNING asset, credits_posted - debits_posted INTO credit_asset, credit_balance;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'exceeds_debits' USING ERRCODE = 'P0001';
    END IF;
    UPDATE accounts SET debits_posted = debits_posted + p_amount
    WHERE id = p_debit_account_id
      AND (flags & 1 = 0 OR debits_posted + debits_pending + p_amount <= credits_posted)
    RETURNING asset, credits_posted - debits_posted INTO debit_asset, debit_balance;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'exceeds_credits' USING ERRCODE = 'P0001';
    END IF;
    IF debit_asset <> credit_asset THEN
        RAISE EXCEPTION 'asset_mismatch' USING ERRCODE = 'P0001';
    END IF;
    INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, asset, code, flags,
                           debit_balance_after, credit_balance_after, created_at)
    VALUES (p_id, p_debit_account_id, p_credit_account_id, p_amount, debit_asset, p_code,
            p_flags, debit_balance, credit_balance, now());
END
$$
"""

_NAIVE_CALL = "SELECT bench_post_transfer($1, $2, $3, $4, $5, $6)"

_CEILING_BATCH = """
WITH updated AS (
    UPDATE accounts a
    SET debits_posted = a.debits_posted + d.debits, credits_posted = a.credits_posted + d.credits
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS d(id, debits, credits)
    WHERE a.id = d.id
    RETURNING a.id
), new_keys AS (
    INSERT INTO transfer_keys (id, created_at) SELECT unnest($4::uuid[]), now()
), new_transfers AS (
    INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, asset, code, flags,
                           debit_balance_after, credit_balance_after, created_at)
    SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code, t.flags,
           0, 0, now()
    FROM unnest($4::uuid[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[],
                $9::smallint[], $10::smallint[])
         AS t(id, debit_account_id, credit_account_id, amount, asset, code, flags)
    RETURNING 1
)
SELECT (SELECT count(*) FROM updated) AS accounts, (SELECT count(*) FROM new_transfers) AS rows
"""


@dataclass(frozen=True, slots=True)
class PlainTotals:
    """What the checks of the plain paths compare before and after a run."""

    transfers: int
    keys: int
    credits_posted: int
    debits_posted: int


def asyncpg_dsn(url: str) -> str:
    """A libpq-style URL for asyncpg from a SQLAlchemy `postgresql+asyncpg://` one."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def install_naive_function(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(CREATE_NAIVE_FUNCTION)
    finally:
        await conn.close()


async def plain_totals(dsn: str) -> PlainTotals:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM transfers) AS transfers,
                   (SELECT count(*) FROM transfer_keys) AS keys,
                   (SELECT CAST(sum(credits_posted) AS bigint) FROM accounts) AS credits,
                   (SELECT CAST(sum(debits_posted) AS bigint) FROM accounts) AS debits
            """
        )
    finally:
        await conn.close()
    return PlainTotals(row["transfers"], row["keys"], row["credits"], row["debits"])


def check_plain_run(
    label: str, transfers: Sequence[Transfer], before: PlainTotals, after: PlainTotals
) -> None:
    """Exactly one transfer row and one key per transfer, and both totals grew by the amounts."""
    count = len(transfers)
    expected = sum(transfer.amount for transfer in transfers)
    assert after.transfers - before.transfers == count, (
        f"{label}: {after.transfers - before.transfers} transfer rows, expected {count}"
    )
    assert after.keys - before.keys == count, (
        f"{label}: {after.keys - before.keys} keys, expected {count}"
    )
    for name, grown in (
        ("credits", after.credits_posted - before.credits_posted),
        ("debits", after.debits_posted - before.debits_posted),
    ):
        assert grown == expected, f"{label}: {name} posted grew by {grown}, expected {expected}"


# The naive path.


async def _post_each(conn: Any, transfers: Sequence[Transfer]) -> int:
    call = await conn.prepare(_NAIVE_CALL)
    for transfer in transfers:
        await call.fetchval(
            transfer.id,
            transfer.debit_account_id,
            transfer.credit_account_id,
            transfer.amount,
            int(transfer.code),
            int(transfer.flags),
        )
    return len(transfers)


async def run_naive_path(
    dsn: str, transfers: Sequence[Transfer], connection_count: int
) -> tuple[int, float]:
    """(transfers posted, seconds), connected before the clock starts. Any refusal or error
    raises and fails the benchmark."""
    connections = [await asyncpg.connect(dsn) for _ in range(connection_count)]
    try:
        started = time.perf_counter()
        posted = await asyncio.gather(
            *(
                _post_each(conn, transfers[index::connection_count])
                for index, conn in enumerate(connections)
            )
        )
        seconds = time.perf_counter() - started
    finally:
        for conn in connections:
            await conn.close()
    return sum(posted), seconds


# The ceiling.


def ceiling_arguments(batch: Sequence[Transfer], asset: str) -> list[Any]:
    """The batch's accounts with their amounts aggregated, in id order, then its rows."""
    debits: defaultdict[int, int] = defaultdict(int)
    credits: defaultdict[int, int] = defaultdict(int)
    for transfer in batch:
        debits[transfer.debit_account_id] += transfer.amount
        credits[transfer.credit_account_id] += transfer.amount
    account_ids = sorted(debits.keys() | credits.keys())
    return [
        account_ids,
        [debits.get(account_id, 0) for account_id in account_ids],
        [credits.get(account_id, 0) for account_id in account_ids],
        [transfer.id for transfer in batch],
        [transfer.debit_account_id for transfer in batch],
        [transfer.credit_account_id for transfer in batch],
        [transfer.amount for transfer in batch],
        [asset] * len(batch),
        [int(transfer.code) for transfer in batch],
        [int(transfer.flags) for transfer in batch],
    ]


async def _ceiling_writer(
    conn: Any, batches: Sequence[Sequence[Transfer]], asset: str
) -> tuple[int, int]:
    """(rows inserted, deadlocks retried)."""
    inserted = retried = 0
    statement = await conn.prepare(_CEILING_BATCH)
    for batch in batches:
        arguments = ceiling_arguments(batch, asset)
        for attempt in range(CEILING_RETRY_COUNT_MAX + 1):
            try:
                row = await statement.fetchrow(*arguments)
            except asyncpg.PostgresError as error:
                if error.sqlstate != DEADLOCK_SQLSTATE or attempt == CEILING_RETRY_COUNT_MAX:
                    raise
                retried += 1
                continue
            break
        assert row["accounts"] == len(arguments[0]), "an account of the batch is missing"
        inserted += row["rows"]
    return inserted, retried


async def run_ceiling_path(
    dsn: str, transfers: Sequence[Transfer], batch_size: int, writers: int, asset: str
) -> tuple[int, int, float]:
    """(rows inserted, deadlocks retried, seconds), connected before the clock starts."""
    batches = [
        transfers[start : start + batch_size] for start in range(0, len(transfers), batch_size)
    ]
    connections = [await asyncpg.connect(dsn) for _ in range(writers)]
    try:
        started = time.perf_counter()
        per_writer = await asyncio.gather(
            *(
                _ceiling_writer(conn, batches[writer::writers], asset)
                for writer, conn in enumerate(connections)
            )
        )
        seconds = time.perf_counter() - started
    finally:
        for conn in connections:
            await conn.close()
    return sum(rows for rows, _ in per_writer), sum(r for _, r in per_writer), seconds
