"""The ledger's store: its SQL, the account locks, `AccountFacts` and the write. It never decides:
`ledger.decide` does, between the reads and the write below. At most three statements per batch,
whatever its size (and one before them that sets how they are planned, `_generic_plans`, given
back by the write, or by one statement more when nothing is written):

1. Read the stored transfers that the batch names (its own ids, for idempotency, and the pending
   transfers it posts or voids) with how each pending ended. On a unit of work's first attempt
   the own ids are not read but assumed new (`assume_new`): a stored one then fails step 4 on
   its unique key, as a race does (below), and the attempts after it read them; a batch whose
   walk refuses a transfer reads them and walks again, since a stored transfer's result
   (`exists`) comes before any other.
2. If a transfer of the batch could break an account's balance rule (the account is guarded),
   lock all the batch's accounts in id order and read their totals. Else lock and read none
   (but the asset and rules of accounts `AccountFacts` has not met): their running totals count
   from zero, and every lock is taken in step 4.
3. `ledger.decide.decide_batch` walks the batch in order, deciding a result per transfer against
   running totals (linked chains succeed or fail whole). Only the guarded accounts' totals can
   change a result.
4. One statement locks every account the accepted transfers name, in id order, adds one
   aggregated delta to each, and inserts the accepted transfers (their running balances offset
   from the balances the accounts had once locked), their keys and the resolutions of pending
   transfers. The clock read once every lock is held is the batch's commit timestamp. When the
   write is its unit of work's last (`link`), it also appends the batch's link to the hash chain.

A batch of new plain transfers (no flags, ids new and distinct, no account debited that must
not exceed its credits or credited that must not exceed its debits) can only be accepted whole,
so it is not walked: after step 1 it goes to the write of new batches (`store_new_batch`, as
`post_new` posts), which checks its accounts before writing and hands a batch it cannot take back
to steps 2 to 4.

So in the batches most writers post (gifts guard no account), the accounts they share (the
platform's) are locked only for step 4, the hash chain link and the commit, not while the batch
is read and walked. Each batch takes its locks in one ascending pass, in step 2 or in step 4.

A concurrent writer that stored the same transfer id, or resolved the same pending transfer,
between steps 1 and 4 makes step 4 fail on a unique key; the unit of work
(`ledger.unit_of_work`) then runs again, and the second run sees what the other writer did.

Whether a stored pending transfer has expired is decided at the clock of step 2 (read for that
when step 2 read nothing); the transfers are stored with the clock of step 4, a little later.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chain import (
    LINE_HEAD_FIELDS,
    LINK_FORM_HEADS_AND_BALANCES,
    TIMESTAMP_TEXT_SQL,
    ChainEntry,
    chain_entry,
    line_head,
    line_head_sql,
    line_tail,
    link_ctes,
    metadata_json,
)
from ledger.decide import (
    Accepted,
    Walk,
    accepted_as_stored,
    account_roles,
    decide_batch,
    is_guarded,
    plan_new_batch,
)
from ledger.model import (
    BIGINT_MAX,
    TRANSFER_BATCH_SIZE_MAX,
    AccountTotals,
    BatchOutcome,
    NewTransfers,
    NotNewBatchError,
    PostResult,
    StoredTransfer,
    Transfer,
)

ACCOUNT_FACTS_SIZE_MAX = 500_000

# The totals of an account the batch did not read: its running totals count from zero.
_ZERO = AccountTotals(0, "", 0)

# The store's statements find their rows by arrays of ids, so one plan suits every batch: a key
# probe per id, whatever the batch's size and the tables' (they never filter on a value's
# range). So they run with generic plans, each planned once per connection, while the engine
# forces custom plans on every other statement (`ledger.database`). A custom plan of the write
# cost the server about 1.2 ms a batch of 1,000 to make (its array literals are parsed while
# planning), and, seeing the arrays' sizes, it hashed the whole accounts table to join 700
# accounts (bench/README.md, 2026-12-05: "a fifth less CPU a transfer").
#
# The setting is given back by the write itself, the store's last statement, when there is one
# (`_WRITE_RESULT`): a statement of its own after the write was one more round trip while the
# write's locks are held, and a linked write holds them until the commit.
_GENERIC_PLANS = text(
    """
    SELECT before.mode, set_config('plan_cache_mode', 'force_generic_plan', true)
    FROM (SELECT current_setting('plan_cache_mode') AS mode OFFSET 0) AS before
    """
)
_SET_PLANS = text("SELECT set_config('plan_cache_mode', :mode, true)")


@dataclass(slots=True)
class _PlanSetting:
    """The caller's `plan_cache_mode`, to give back, and whether a write has given it back."""

    mode_before: str
    given_back: bool = False


@asynccontextmanager
async def _generic_plans(conn: AsyncConnection) -> AsyncIterator[_PlanSetting]:
    """Run the store's statements with generic plans, then give the rest of the caller's
    transaction the setting it had: a write gives it back itself (its parameter
    `plan_cache_mode_after`, then `given_back`), else one statement more does. Not after an
    error: the transaction is then rolled back (a conflict, a failed statement), and its
    settings with it."""
    mode_before, _ = (await conn.execute(_GENERIC_PLANS)).one()
    setting = _PlanSetting(mode_before)
    yield setting
    if not setting.given_back:
        await conn.execute(_SET_PLANS, {"mode": setting.mode_before})


_SELECT_TRANSFERS = text(
    """
    WITH found AS MATERIALIZED (
        SELECT k.id, k.created_at
        FROM unnest(CAST(:ids AS uuid[])) AS wanted(id)
        JOIN transfer_keys k ON k.id = wanted.id
    )
    SELECT t.id, t.seq, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code,
           t.flags, t.pending_id, t.timeout_s, t.expires_at, t.rate_card_version, t.event_id,
           t.metadata::text AS metadata, t.debit_balance_after, t.credit_balance_after,
           t.created_at, r.outcome
    FROM found k
    JOIN transfers t ON t.id = k.id AND t.created_at = k.created_at
    LEFT JOIN pending_resolutions r ON r.pending_id = t.id
    """
)

# Step 2. An account is guarded when a transfer of the batch could break its balance rule: it is
# debited and its debits must not exceed its credits, it is credited and its credits must not
# exceed its debits, or a funded transfer debits it. A batch with a guarded account locks all
# its accounts here, in id order, and reads their totals; a batch without one reads nothing but
# the asset and rules of accounts it has not met before, and takes its locks in step 4.
_READ_FACTS = text(
    """
    SELECT a.id, a.asset, a.flags
    FROM unnest(CAST(:ids AS bigint[])) AS wanted(id)
    JOIN accounts a ON a.id = wanted.id
    """
)

_LOCK_ACCOUNTS = text(
    """
    WITH locked AS (
        SELECT a.id, a.asset, a.flags, a.debits_posted, a.credits_posted, a.debits_pending,
               a.credits_pending
        FROM unnest(CAST(:ids AS bigint[])) AS wanted(id)
        JOIN accounts a ON a.id = wanted.id
        ORDER BY a.id
        FOR NO KEY UPDATE OF a
    )
    SELECT locked.*, clock_timestamp() AS now FROM locked
    """
)

# The fragments step 4's two statements (`_WRITE_BATCH`, `_WRITE_NEW_BATCH`) share, so that
# they cannot drift apart.
#
# Their columns come as few, cheap parameters: a list parameter costs the driver a check and an
# encoding per element, in Python (about half of the batch path's own CPU when every column was
# a list); a string costs one encoding. So:
# - integer columns come as array literals ('{1,2,NULL}', `_int_array_text`), cast by the
#   server (`_INT_ARRAY_TEXT`, formatted with the parameter's name and the element type);
# - text columns come joined by the unit separator, chr(31), with chr(30) for NULL
#   (`_joined_texts`), or, when a value holds either character, as arrays (the `*_array`
#   parameters, empty otherwise; `_JOINED_TEXTS`, formatted with the parameter's name);
# - uuid columns stay arrays of uuids: parsing their text costs the server more than their
#   check and encoding cost the driver.
_INT_ARRAY_TEXT = "CAST(CAST(:{} AS text) AS {}[])"
_JOINED_TEXTS = (
    "coalesce(string_to_array(CAST(:{0} AS text), chr(31), chr(30)), CAST(:{0}_array AS text[]))"
)
_POSTED_TOTALS = ("debits_posted", "credits_posted")
_ALL_TOTALS = (*_POSTED_TOTALS, "debits_pending", "credits_pending")


def _batch_rows(columns: Sequence[tuple[str, str]], head: str | None) -> str:
    """The CTE `batch_rows`: the batch's transfers, a row each numbered by `position`, from
    `columns` (pairs of the SQL of an array parameter and the column's name), and with `head`
    (SQL over those columns as `t`), each transfer's chain line head, the column `head`, and
    the CTE `chain_heads`, one row: the SHA-256 of the heads in id order (`digest`), for a link
    of the form `LINK_FORM_HEADS_AND_BALANCES` (`ledger.chain`).

    Materialized, and read by `updated` before it locks its first account: parsing the array
    literals, unnesting them, parsing the metadata texts as `jsonb` (the column `document`, which
    the transfers' insert stores: about 0.75 µs a gift's metadata), making the heads and hashing
    them is then done before any lock is taken (about a tenth of the statement), not while the
    accounts' locks are held, as it would be were the transfers' insert to do it itself."""
    arrays = ", ".join(sql for sql, _ in columns)
    names = ", ".join(name for _, name in columns)
    head_column = "" if head is None else f", {head} AS head"
    chain_heads = (
        ""
        if head is None
        else """, chain_heads AS MATERIALIZED (
        SELECT sha256(convert_to(string_agg(head, '' ORDER BY id), 'UTF8')) AS digest
        FROM batch_rows
    )"""
    )
    return f"""
    batch_rows AS MATERIALIZED (
        SELECT t.*, CAST(t.metadata AS jsonb) AS document{head_column}
        FROM unnest({arrays}) WITH ORDINALITY AS t({names}, position)
    ){chain_heads}"""  # noqa: S608 (constant fragments)


def _updated(totals: Sequence[str], linked: bool) -> str:
    """The CTE `updated`: each account of the parameter `account_ids` gets its deltas of
    `totals` (columns of `accounts`, `_POSTED_TOTALS` at least; a parameter each, named as its
    column), every parameter an array literal of bigints. It returns each account's
    id, its posted balance just before the update and the clock once its row is locked.

    It updates nothing unless `batch_rows` holds the parameter `transfer_count` rows (and, when
    `linked`, the heads' digest `chain_heads` is not NULL): conditions that hold for every
    well-formed write, and that PostgreSQL evaluates once, before the first row is updated, so
    `batch_rows` and the heads' digest are made before any lock is taken."""
    arrays = ", ".join(_INT_ARRAY_TEXT.format(name, "bigint") for name in ("account_ids", *totals))
    assignments = ", ".join(f"{total} = a.{total} + d.{total}" for total in totals)
    heads_first = " AND (SELECT digest FROM chain_heads) IS NOT NULL" if linked else ""
    return f"""
    updated AS (
        UPDATE accounts a
        SET {assignments}
        FROM unnest({arrays}) AS d(id, {", ".join(totals)})
        WHERE a.id = d.id AND (SELECT count(*) FROM batch_rows) = :transfer_count{heads_first}
        RETURNING a.id,
                  a.credits_posted - a.debits_posted - (d.credits_posted - d.debits_posted)
                      AS balance_before,
                  clock_timestamp() AS locked_at
    )"""  # noqa: S608 (constant fragments)


# The CTE `stamp`, one row: the commit timestamp (the clock once every account's lock is held,
# `at`), the number of accounts updated, and their balances before the batch in id order
# (`balances_before`), so that the transfers find their accounts' balances by position, with no
# join.
_STAMP = """
    stamp AS (
        SELECT max(locked_at) AS at, count(*) AS account_count,
               array_agg(balance_before ORDER BY id) AS balances_before
        FROM updated
    )"""


# The transfers' keys, stored with the commit timestamp.
_NEW_KEYS = """
    new_keys AS (
        INSERT INTO transfer_keys (id, created_at)
        SELECT unnest(CAST(:ids AS uuid[])), stamp.at FROM stamp
    )"""

# What `_execute_write` reads, one row: the accounts' balances before the batch (in id order),
# the commit timestamp, the count inserted. It also gives the caller's transaction back its
# `plan_cache_mode` (`_generic_plans`), for the statements after this one.
_WRITE_RESULT = """
    SELECT stamp.balances_before, stamp.at, (SELECT count(*) FROM new_transfers) AS inserted,
           set_config('plan_cache_mode', :plan_cache_mode_after, true) AS plan_cache_mode
    FROM stamp
    """

# The batch's transfers meet the one row of `stamp` only when every account of the batch was
# found and updated (else no transfer is inserted or hashed, and the count says so).
_STAMP_WHEN_ALL_ACCOUNTS_UPDATED = "CROSS JOIN stamp WHERE stamp.account_count = :account_count"


def _linked_write() -> str:
    """The CTEs by which a write links its own transfers into the hash chain, after its last
    lock (the unit of work's last write: `last=True`), with a link of the form
    `LINK_FORM_HEADS_AND_BALANCES`: the heads' digest was made before the locks (`_batch_rows`'
    `chain_heads`); here the transfers' running balances in id order, as a two-dimensional
    array's text, and the commit timestamp are hashed, and the link appended
    (`ledger.chain.link_ctes`). A linked write holds no transfer with an expiry (`store_batch`
    links those at the unit of work's end).

    In a batch of 1,000 (`EXPLAIN ANALYZE`), hashing the whole lines here took 1.04 ms under the
    locks, the balances' array 0.56 (bench/README.md, 2026-12-05, afternoon)."""
    timestamp_text = TIMESTAMP_TEXT_SQL.format(value="stamp.at")
    return f""",
    chain_balances AS (
        SELECT array_agg(
                   ARRAY[stamp.balances_before[l.debit_position + 1] + l.debit_offset,
                         stamp.balances_before[l.credit_position + 1] + l.credit_offset]
                   ORDER BY l.id) AS balances
        FROM batch_rows l
        {_STAMP_WHEN_ALL_ACCOUNTS_UPDATED}
    ), chain_digest AS (
        SELECT sha256((SELECT digest FROM chain_heads)
                      || sha256(convert_to(CAST(b.balances AS text) || '|' || {timestamp_text},
                                           'UTF8'))) AS digest
        FROM chain_balances b CROSS JOIN stamp
    ), {link_ctes("(SELECT digest FROM chain_digest)", LINK_FORM_HEADS_AND_BALANCES)}"""  # noqa: S608 (constant fragments)


# The transfers' columns of `_WRITE_NEW_BATCH`, as `batch_rows` reads them (by name).
_NEW_BATCH_COLUMNS = (
    ("CAST(:ids AS uuid[])", "id"),
    (_INT_ARRAY_TEXT.format("debit_account_ids", "bigint"), "debit_account_id"),
    (_INT_ARRAY_TEXT.format("credit_account_ids", "bigint"), "credit_account_id"),
    (_INT_ARRAY_TEXT.format("amounts", "bigint"), "amount"),
    (_JOINED_TEXTS.format("assets"), "asset"),
    (_INT_ARRAY_TEXT.format("codes", "smallint"), "code"),
    (_INT_ARRAY_TEXT.format("rate_card_versions", "integer"), "rate_card_version"),
    (_JOINED_TEXTS.format("event_ids"), "event_id"),
    (_JOINED_TEXTS.format("metadata"), "metadata"),
    (_INT_ARRAY_TEXT.format("debit_positions", "integer"), "debit_position"),
    (_INT_ARRAY_TEXT.format("credit_positions", "integer"), "credit_position"),
    (_INT_ARRAY_TEXT.format("debit_offsets", "bigint"), "debit_offset"),
    (_INT_ARRAY_TEXT.format("credit_offsets", "bigint"), "credit_offset"),
)
# `_WRITE_BATCH`'s: the same, and what a new plain transfer does not have.
_BATCH_COLUMNS = (
    *_NEW_BATCH_COLUMNS,
    (_INT_ARRAY_TEXT.format("flags", "smallint"), "flags"),
    ("CAST(:pending_ids AS uuid[])", "pending_id"),
    (_INT_ARRAY_TEXT.format("timeouts_s", "integer"), "timeout_s"),
)

# The chain line heads of linked writes, from `batch_rows`' columns: no transfer of a linked
# write has an expiry, and a new plain transfer has no flags, pending transfer or timeout.
_GENERAL_HEAD = line_head_sql(
    {name: f"t.{name}" for name in LINE_HEAD_FIELDS} | {"expires_at": "NULL"}
)
_NEW_HEAD = line_head_sql(
    {name: f"t.{name}" for name in LINE_HEAD_FIELDS}
    | {"flags": "0", "pending_id": "NULL", "timeout_s": "NULL", "expires_at": "NULL"}
)


# Step 4. Every account the accepted transfers name is updated by its aggregated deltas, in id
# order (the unnest is sorted and drives the join), so writers take their locks in one order.
# Should the planner ever join the other way round, PostgreSQL detects the deadlock and
# the unit of work runs the batch again. Once all are locked, the clock is the batch's
# commit timestamp, and each account's balance just before this batch is known: the transfers
# are inserted with their running balances offset from it, in batch order, with their keys and
# the resolutions of the pending transfers they post or void. The accounts' balances before,
# the timestamp and the count inserted come back.
def _write_batch_sql(linked: bool) -> str:
    """`_WRITE_BATCH`'s text; `linked`, with the CTEs that link the chain (`_linked_write`)."""
    return f"""
    WITH {_batch_rows(_BATCH_COLUMNS, _GENERAL_HEAD if linked else None)},
         {_updated(_ALL_TOTALS, linked)}, {_STAMP}, {_NEW_KEYS},
         new_resolutions AS (
        INSERT INTO pending_resolutions (pending_id, resolved_by, outcome, created_at)
        SELECT r.pending_id, r.resolved_by, r.outcome, stamp.at
        FROM unnest(CAST(:resolved_pending_ids AS uuid[]), CAST(:resolved_by AS uuid[]),
                    CAST(:outcomes AS text[])) AS r(pending_id, resolved_by, outcome),
             stamp
    ), new_transfers AS (
        INSERT INTO transfers (
            id, debit_account_id, credit_account_id, amount, asset, code, flags, pending_id,
            timeout_s, expires_at, rate_card_version, event_id, metadata,
            debit_balance_after, credit_balance_after, created_at)
        SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code,
               t.flags, t.pending_id, t.timeout_s,
               stamp.at + make_interval(secs => t.timeout_s), t.rate_card_version, t.event_id,
               t.document, stamp.balances_before[t.debit_position + 1] + t.debit_offset,
               stamp.balances_before[t.credit_position + 1] + t.credit_offset, stamp.at
        FROM batch_rows t
        {_STAMP_WHEN_ALL_ACCOUNTS_UPDATED}
        ORDER BY t.position
        RETURNING 1
    ){_linked_write() if linked else ""}{_WRITE_RESULT}"""  # noqa: S608 (constant fragments)


_WRITE_BATCH = text(_write_batch_sql(linked=False))
_WRITE_BATCH_LINKED = text(_write_batch_sql(linked=True))


# Step 4 alone, for a batch of new plain transfers (`store_new_batch`): the same rows as
# `_WRITE_BATCH` stores for them, from fewer parameters: what is the same for every new plain
# transfer is written here (no flags, no pending transfer, no timeout, no expiry, no
# resolution, no pending totals).
def _write_new_batch_sql(linked: bool) -> str:
    """`_WRITE_NEW_BATCH`'s text; `linked`, with the CTEs that link the chain."""
    return f"""
    WITH {_batch_rows(_NEW_BATCH_COLUMNS, _NEW_HEAD if linked else None)},
         {_updated(_POSTED_TOTALS, linked)},
         {_STAMP}, {_NEW_KEYS}, new_transfers AS (
        INSERT INTO transfers (
            id, debit_account_id, credit_account_id, amount, asset, code, flags, pending_id,
            timeout_s, expires_at, rate_card_version, event_id, metadata,
            debit_balance_after, credit_balance_after, created_at)
        SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount,
               t.asset, t.code, 0, NULL, NULL, NULL,
               t.rate_card_version, t.event_id, t.document,
               stamp.balances_before[t.debit_position + 1] + t.debit_offset,
               stamp.balances_before[t.credit_position + 1] + t.credit_offset, stamp.at
        FROM batch_rows t
        {_STAMP_WHEN_ALL_ACCOUNTS_UPDATED}
        ORDER BY t.position
        RETURNING 1
    ){_linked_write() if linked else ""}{_WRITE_RESULT}"""  # noqa: S608 (constant fragments)


_WRITE_NEW_BATCH = text(_write_new_batch_sql(linked=False))
_WRITE_NEW_BATCH_LINKED = text(_write_new_batch_sql(linked=True))

_TEXT_SEPARATOR = "\x1f"  # chr(31), the unit separator
_TEXT_NULL = "\x1e"  # chr(30), the record separator


def _int_array_text(values: Sequence[int]) -> str:
    """`values` as a PostgreSQL array literal, '{1,2,3}'. `int.__repr__` writes an int subclass
    (a `TransferCode`) as its number and refuses anything that is not an int."""
    return "{" + ",".join(map(int.__repr__, values)) + "}"


def _nullable_int_array_text(values: Sequence[int | None]) -> str:
    """`values` as a PostgreSQL array literal, None as NULL: '{1,NULL,3}'."""
    if None not in values:
        return "{" + ",".join(map(int.__repr__, values)) + "}"
    return "{" + ",".join("NULL" if v is None else int.__repr__(v) for v in values) + "}"


def _joined_texts(values: Sequence[str | None]) -> str | None:
    """`values` as one string that `string_to_array(text, chr(31), chr(30))` splits back: joined
    by `_TEXT_SEPARATOR`, None written as `_TEXT_NULL`. None when no string can say it: a value
    holds either character, or the one value is '' (an empty string splits into no element)."""
    nulls = values.count(None)
    joined = _TEXT_SEPARATOR.join([_TEXT_NULL if value is None else value for value in values])
    if (
        joined == ""
        or joined.count(_TEXT_SEPARATOR) != len(values) - 1
        or joined.count(_TEXT_NULL) != nulls
    ):
        return None
    return joined


def _text_column(name: str, values: Sequence[str | None]) -> dict[str, Any]:
    """The two parameters of a text column of `_WRITE_NEW_BATCH`: the joined text, or else (the
    text is NULL) the array."""
    joined = _joined_texts(values)
    if joined is None:
        return {name: None, f"{name}_array": list(values)}
    return {name: joined, f"{name}_array": []}


class LedgerConflictError(Exception):
    """Another writer stored the same transfer or resolved the same pending transfer first."""


def _row_to_stored(row: Any) -> StoredTransfer:
    return StoredTransfer(
        id=row.id,
        seq=row.seq,
        debit_account_id=row.debit_account_id,
        credit_account_id=row.credit_account_id,
        amount=row.amount,
        asset=row.asset,
        code=row.code,
        flags=row.flags,
        pending_id=row.pending_id,
        timeout_s=row.timeout_s,
        expires_at=row.expires_at,
        rate_card_version=row.rate_card_version,
        event_id=row.event_id,
        metadata=None if row.metadata is None else json.loads(row.metadata),
        debit_balance_after=row.debit_balance_after,
        credit_balance_after=row.credit_balance_after,
        created_at=row.created_at,
    )


async def read_stored(
    conn: AsyncConnection, ids: Iterable[uuid.UUID]
) -> tuple[dict[uuid.UUID, StoredTransfer], dict[uuid.UUID, str | None]]:
    """Stored transfers by id, and for pending ones how they ended (None while open)."""
    id_list = list(ids)
    if not id_list:
        return {}, {}
    rows = (await conn.execute(_SELECT_TRANSFERS, {"ids": id_list})).all()
    stored = {row.id: _row_to_stored(row) for row in rows}
    outcomes: dict[uuid.UUID, str | None] = {row.id: row.outcome for row in rows}
    return stored, outcomes


class AccountFacts:
    """What never changes about an account: its asset and its balance rules (the writer role
    may update only its totals). With these known, a batch that guards no account reads none.

    One per database (the `Ledger` keeps one). Bounded: when full, it starts over.
    """

    def __init__(self, size_max: int = ACCOUNT_FACTS_SIZE_MAX) -> None:
        self._facts: dict[int, tuple[str, int]] = {}
        self._size_max = size_max

    def get(self, account_id: int) -> tuple[str, int] | None:
        return self._facts.get(account_id)

    def remember(self, account_id: int, asset: str, flags: int) -> None:
        if len(self._facts) >= self._size_max and account_id not in self._facts:
            self._facts.clear()
        self._facts[account_id] = (asset, flags)


async def _account_facts(
    conn: AsyncConnection, account_ids: Iterable[int], facts: AccountFacts
) -> dict[int, tuple[str, int]]:
    """Asset and rules of each account, read from the database only for those new to `facts`;
    an account that does not exist is left out."""
    known: dict[int, tuple[str, int]] = {}
    unknown: list[int] = []
    for account_id in account_ids:
        fact = facts.get(account_id)
        if fact is None:
            unknown.append(account_id)
        else:
            known[account_id] = fact
    if unknown:
        rows = (await conn.execute(_READ_FACTS, {"ids": sorted(unknown)})).all()
        for account_id, asset, flags in rows:
            known[account_id] = (asset, flags)
            facts.remember(account_id, asset, flags)
    return known


async def _read_accounts(
    conn: AsyncConnection, roles: dict[int, int], facts: AccountFacts | None
) -> tuple[dict[int, AccountTotals], dict[int, AccountTotals], datetime | None]:
    """The batch's accounts, a copy of the totals read, and the clock when they were locked.

    When the batch guards an account, all its accounts are locked in id order and read. Else
    none is locked or read (but for the asset and rules of accounts new to `facts`): their
    running totals start at zero, and they have no entry in the copy."""
    if facts is None:  # nothing known: lock and read them all, as a guarded batch does
        return await _lock_accounts(conn, roles)
    known = await _account_facts(conn, roles, facts)
    if not any(is_guarded(roles[i], flags) for i, (_, flags) in known.items()):
        accounts = {i: AccountTotals(i, asset, flags) for i, (asset, flags) in known.items()}
        return accounts, {}, None
    return await _lock_accounts(conn, roles)


async def _lock_accounts(
    conn: AsyncConnection, roles: dict[int, int]
) -> tuple[dict[int, AccountTotals], dict[int, AccountTotals], datetime | None]:
    rows = (await conn.execute(_LOCK_ACCOUNTS, {"ids": sorted(roles)})).all()
    accounts = {row[0]: AccountTotals(*row[:7]) for row in rows}
    originals = {row[0]: AccountTotals(*row[:7]) for row in rows}
    return accounts, originals, max((row[7] for row in rows), default=None)


async def _clock(conn: AsyncConnection) -> datetime:
    now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    assert isinstance(now, datetime)
    return now


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """Step 4's parameters, and per accepted transfer its accounts' positions in the accounts'
    id order and its running balances as offsets from their balances before the batch."""

    parameters: dict[str, Any]
    debit_positions: list[int]
    credit_positions: list[int]
    debit_offsets: list[int]
    credit_offsets: list[int]


def _account_positions(account_ids: Sequence[int]) -> dict[int, int]:
    return {account_id: position for position, account_id in enumerate(account_ids)}


def _write_plan(
    walk: Walk, originals: dict[int, AccountTotals], metadata_texts: list[str | None]
) -> _WritePlan:
    """The accounts' aggregated deltas, in id order, and the accepted transfers in batch order,
    with their running balances as offsets from their accounts' balances before the batch."""
    accepted = walk.accepted
    named = {a.debit_account_id for a in accepted}
    named.update(a.credit_account_id for a in accepted)
    account_ids = sorted(named)
    positions = _account_positions(account_ids)
    deltas: dict[str, list[int]] = {
        "debits_posted": [],
        "credits_posted": [],
        "debits_pending": [],
        "credits_pending": [],
    }
    for account_id in account_ids:
        now, before = walk.accounts[account_id], originals.get(account_id, _ZERO)
        deltas["debits_posted"].append(now.debits_posted - before.debits_posted)
        deltas["credits_posted"].append(now.credits_posted - before.credits_posted)
        deltas["debits_pending"].append(now.debits_pending - before.debits_pending)
        deltas["credits_pending"].append(now.credits_pending - before.credits_pending)
    transfers = [a.transfer for a in accepted]
    debit_positions = [positions[a.debit_account_id] for a in accepted]
    credit_positions = [positions[a.credit_account_id] for a in accepted]
    debit_offsets = [
        a.debit_balance_after - originals.get(a.debit_account_id, _ZERO).posted_balance
        for a in accepted
    ]
    credit_offsets = [
        a.credit_balance_after - originals.get(a.credit_account_id, _ZERO).posted_balance
        for a in accepted
    ]
    parameters = {
        "account_ids": _int_array_text(account_ids),
        "account_count": len(account_ids),
        "transfer_count": len(accepted),
        **{total: _int_array_text(values) for total, values in deltas.items()},
        "ids": [t.id for t in transfers],
        "debit_account_ids": _int_array_text([a.debit_account_id for a in accepted]),
        "credit_account_ids": _int_array_text([a.credit_account_id for a in accepted]),
        "amounts": _int_array_text([a.amount for a in accepted]),
        **_text_column("assets", [a.asset for a in accepted]),
        "codes": _int_array_text([t.code for t in transfers]),
        "flags": _int_array_text([t.flags for t in transfers]),
        "pending_ids": [t.pending_id for t in transfers],
        "timeouts_s": _nullable_int_array_text([t.timeout_s for t in transfers]),
        "rate_card_versions": _nullable_int_array_text([t.rate_card_version for t in transfers]),
        **_text_column("event_ids", [t.event_id for t in transfers]),
        **_text_column("metadata", metadata_texts),
        "debit_positions": _int_array_text(debit_positions),
        "credit_positions": _int_array_text(credit_positions),
        "debit_offsets": _int_array_text(debit_offsets),
        "credit_offsets": _int_array_text(credit_offsets),
        "resolved_pending_ids": [r[0] for r in walk.resolutions],
        "resolved_by": [r[1] for r in walk.resolutions],
        "outcomes": [r[2] for r in walk.resolutions],
    }
    return _WritePlan(parameters, debit_positions, credit_positions, debit_offsets, credit_offsets)


async def _execute_write(
    conn: AsyncConnection,
    statement: TextClause,
    parameters: dict[str, Any],
    accepted_count: int,
    plans: _PlanSetting,
) -> tuple[list[int], datetime]:
    """Run step 4 (`_WRITE_BATCH` or `_WRITE_NEW_BATCH`), which gives the caller its planning
    back (`plans`); returns the accounts' balances before the batch, in id order, and the
    commit timestamp."""
    try:
        row = (
            await conn.execute(
                statement, {**parameters, "plan_cache_mode_after": plans.mode_before}
            )
        ).one()
    except IntegrityError as error:
        if _is_unique_violation(error):
            raise LedgerConflictError(str(error.orig)) from error
        raise
    plans.given_back = True
    balances_before, committed_at, inserted, _ = row
    if inserted != accepted_count:
        raise AssertionError(f"stored {inserted} of {accepted_count} accepted transfers")
    assert isinstance(committed_at, datetime)
    return balances_before, committed_at


async def _write(
    conn: AsyncConnection,
    walk: Walk,
    originals: dict[int, AccountTotals],
    plan: _WritePlan,
    linked: bool,
    plans: _PlanSetting,
) -> datetime:
    """Step 4. Moves the accepted transfers onto the balances their accounts had once
    locked, as the database stored them, and onto the commit timestamp, which it returns,
    for their chain entries.

    With `linked`, the write links them into the hash chain itself and no entry is made: the
    transfers are left as walked, since nothing reads them after, and the accounts' locks are
    held until the commit.

    Accounts the batch did not lock in step 2 were walked from zero: their running balances
    shift by the balance the write found them at.
    """
    if linked:
        _, committed_at = await _execute_write(
            conn, _WRITE_BATCH_LINKED, plan.parameters, len(walk.accepted), plans
        )
        return committed_at
    before, committed_at = await _execute_write(
        conn, _WRITE_BATCH, plan.parameters, len(walk.accepted), plans
    )
    for accepted, debit_position, credit_position, debit_offset, credit_offset in zip(
        walk.accepted,
        plan.debit_positions,
        plan.credit_positions,
        plan.debit_offsets,
        plan.credit_offsets,
        strict=True,
    ):
        accepted.debit_balance_after = before[debit_position] + debit_offset
        accepted.credit_balance_after = before[credit_position] + credit_offset
        if accepted.expires_at is not None:
            timeout_s = accepted.transfer.timeout_s
            assert timeout_s is not None
            accepted.expires_at = committed_at + timedelta(seconds=timeout_s)
    return committed_at


def _chain_line_head(accepted: Accepted, metadata_text: str | None) -> str | None:
    """The start of the transfer's line in the hash chain, made before the accounts are locked;
    None for a pending transfer with a timeout, whose expiry is known only once written."""
    if accepted.expires_at is not None:
        return None
    transfer = accepted.transfer
    return line_head(
        transfer_id=transfer.id,
        debit_account_id=accepted.debit_account_id,
        credit_account_id=accepted.credit_account_id,
        amount=accepted.amount,
        asset=accepted.asset,
        code=int(transfer.code),
        flags=transfer.flags,
        pending_id=transfer.pending_id,
        timeout_s=transfer.timeout_s,
        expires_at=None,
        rate_card_version=transfer.rate_card_version,
        event_id=transfer.event_id,
        metadata_text=metadata_text,
    )


def _chain_entries(
    accepted: Sequence[Accepted], heads: Sequence[str | None], committed_at: datetime
) -> list[ChainEntry]:
    entries: list[ChainEntry] = []
    for item, head in zip(accepted, heads, strict=True):
        if head is None:
            entries.append(chain_entry(accepted_as_stored(item, committed_at)))
            continue
        tail = line_tail(item.debit_balance_after, item.credit_balance_after, committed_at)
        transfer_id = item.transfer.id
        entries.append((transfer_id.int, transfer_id, (head + tail).encode("utf-8")))
    return entries


async def store_batch(
    conn: AsyncConnection,
    transfers: Sequence[Transfer],
    facts: AccountFacts | None,
    *,
    link: bool = False,
    assume_new: bool = False,
    freed_after_commit: list[object] | None = None,
) -> tuple[BatchOutcome, list[ChainEntry]]:
    """Post `transfers` inside the caller's transaction on `conn`: read what the walk needs,
    decide (`ledger.decide`), write what it accepted. `facts` (the database's `AccountFacts`)
    spares locking and reading the accounts of a batch that guards none; without it, every batch
    locks and reads its accounts first. `assume_new` spares reading the batch's own ids (step 1
    in the module's docstring): for a unit of work that may run again.

    Returns a result per transfer and the chain entries of the stored ones, for the unit of work
    to link just before its commit. With `link`, the write links them itself when it can (no
    accepted transfer has an expiry, known only once written) and returns no entries. Transfers
    that are not OK change nothing. A `LedgerConflictError` means the unit of work should be run
    again.

    The batch's working objects (its walk, the write's parameters) are appended to
    `freed_after_commit`, for the unit of work to drop once it has committed: freeing them
    (about 0.3 ms for 1,000 transfers) would otherwise happen as this returns, after the write
    has taken its accounts' locks and before the `COMMIT` releases them.
    """
    if len(transfers) > TRANSFER_BATCH_SIZE_MAX:
        raise ValueError(f"batch of {len(transfers)} exceeds {TRANSFER_BATCH_SIZE_MAX}")
    if not transfers:
        return BatchOutcome(results=[]), []
    async with _generic_plans(conn) as plans:
        return await _read_decide_write(
            conn,
            transfers,
            facts,
            plans,
            link=link,
            assume_new=assume_new,
            freed_after_commit=[] if freed_after_commit is None else freed_after_commit,
        )


async def _read_decide_write(
    conn: AsyncConnection,
    transfers: Sequence[Transfer],
    facts: AccountFacts | None,
    plans: _PlanSetting,
    *,
    link: bool,
    assume_new: bool,
    freed_after_commit: list[object],
) -> tuple[BatchOutcome, list[ChainEntry]]:
    """`store_batch`'s steps, for a batch of at least one transfer."""
    pending_ids = {t.pending_id for t in transfers if t.pending_id is not None}
    own_ids: set[uuid.UUID] = set() if assume_new else {t.id for t in transfers}
    stored, outcomes = await read_stored(conn, own_ids | pending_ids)
    # A batch of new plain transfers that can break no balance rule needs no walk: the write of
    # new batches (`store_new_batch`) takes it, or says before writing that it cannot.
    if facts is not None and not stored and (assume_new or len(own_ids) == len(transfers)):
        plain = _plain_batch(transfers)
        if plain is not None:
            try:
                committed_at, entries = await _write_new_batch(
                    conn, plain, facts, plans, link=link, freed_after_commit=freed_after_commit
                )
            except NotNewBatchError:
                pass  # walked below, which gives each transfer its result
            else:
                count = len(transfers)
                return BatchOutcome([PostResult.OK] * count, committed_at, count), entries
    roles = account_roles(transfers, stored)
    accounts, originals, clock = await _read_accounts(conn, roles, facts)
    # The walk's clock decides whether a stored pending transfer has expired. Without one to
    # resolve, it is only a placeholder: transfers are stored with the clock of the write.
    if clock is None and any(pending_id in stored for pending_id in pending_ids):
        clock = await _clock(conn)
    results, walk = decide_batch(
        transfers,
        accounts=accounts,
        stored=stored,
        pending_outcomes=outcomes,
        decided_at=clock or datetime.now(UTC),
    )
    if assume_new and any(result is not PostResult.OK for result in results):
        return await _read_decide_write(
            conn,
            transfers,
            facts,
            plans,
            link=link,
            assume_new=False,
            freed_after_commit=freed_after_commit,
        )
    if not walk.accepted:
        return BatchOutcome(results, None, 0), []
    metadata_texts = [metadata_json(accepted.transfer.metadata) for accepted in walk.accepted]
    # A transfer's expiry is known only once written: a batch with one is linked at the end of
    # the unit of work. Its lines are started here, before the write takes the accounts' locks.
    linked = link and all(accepted.expires_at is None for accepted in walk.accepted)
    heads = (
        []
        if linked
        else [
            _chain_line_head(accepted, text)
            for accepted, text in zip(walk.accepted, metadata_texts, strict=True)
        ]
    )
    plan = _write_plan(walk, originals, metadata_texts)
    freed_after_commit.append((stored, outcomes, roles, accounts, originals, walk, plan, heads))
    committed_at = await _write(conn, walk, originals, plan, linked, plans)
    outcome = BatchOutcome(results, committed_at, len(walk.accepted))
    if linked:
        return outcome, []
    return outcome, _chain_entries(walk.accepted, heads, committed_at)


def _plain_batch(transfers: Sequence[Transfer]) -> NewTransfers | None:
    """The batch as the columns of new plain transfers, when the walk could only accept every
    one of them: none has flags (so none is pending, resolves one, has a timeout, is funded or
    in a chain) and their amounts together fit a bigint (so no running total overflows). Its
    ids must be new and distinct (the caller knows, or assumes as step 1 does), and its accounts
    must exist, share an asset per transfer and have no rule that what it does to them could
    break (`plan_new_batch` checks, before the write). None otherwise."""
    if any(t.flags for t in transfers):
        return None
    amounts = [t.amount for t in transfers]
    if sum(amounts) > BIGINT_MAX:
        return None
    codes: list[int] = [t.code for t in transfers]
    return NewTransfers(
        ids=[t.id for t in transfers],
        debit_account_ids=[t.debit_account_id for t in transfers],
        credit_account_ids=[t.credit_account_id for t in transfers],
        amounts=amounts,
        codes=codes,
        rate_card_versions=[t.rate_card_version for t in transfers],
        event_ids=[t.event_id for t in transfers],
        metadata_texts=[metadata_json(t.metadata) for t in transfers],
    )


async def store_new_batch(
    conn: AsyncConnection,
    batch: NewTransfers,
    facts: AccountFacts,
    *,
    link: bool = False,
    freed_after_commit: list[object] | None = None,
) -> tuple[datetime, list[ChainEntry]]:
    """Post plain transfers that are not stored yet (`ledger.decide.plan_new_batch` says which
    batches qualify), inside the caller's transaction, in one statement: step 4 alone. Returns
    the commit timestamp and the transfers' chain entries; with `link`, the statement links
    them into the hash chain itself, and no entries come back.

    A transfer id that is stored already fails the write on its unique key with
    `LedgerConflictError`, as a race does in `store_batch`: the caller's unit of work runs
    again, and should then post with `store_batch`.

    `freed_after_commit`, as `store_batch`'s.
    """
    async with _generic_plans(conn) as plans:
        return await _write_new_batch(
            conn,
            batch,
            facts,
            plans,
            link=link,
            freed_after_commit=[] if freed_after_commit is None else freed_after_commit,
        )


async def _write_new_batch(
    conn: AsyncConnection,
    batch: NewTransfers,
    facts: AccountFacts,
    plans: _PlanSetting,
    *,
    link: bool,
    freed_after_commit: list[object],
) -> tuple[datetime, list[ChainEntry]]:
    """`store_new_batch`'s steps."""
    known = await _account_facts(
        conn, set(batch.debit_account_ids) | set(batch.credit_account_ids), facts
    )
    plan = plan_new_batch(batch, known)
    count = len(batch.ids)
    positions = _account_positions(plan.account_ids)
    debit_positions = [positions[account_id] for account_id in batch.debit_account_ids]
    credit_positions = [positions[account_id] for account_id in batch.credit_account_ids]
    parameters = {
        "account_ids": _int_array_text(plan.account_ids),
        "account_count": len(plan.account_ids),
        "transfer_count": count,
        "debits_posted": _int_array_text(plan.debits_posted),
        "credits_posted": _int_array_text(plan.credits_posted),
        "ids": batch.ids,
        "debit_account_ids": _int_array_text(batch.debit_account_ids),
        "credit_account_ids": _int_array_text(batch.credit_account_ids),
        "amounts": _int_array_text(batch.amounts),
        **_text_column("assets", plan.assets),
        "codes": _int_array_text(batch.codes),
        "rate_card_versions": _nullable_int_array_text(batch.rate_card_versions),
        **_text_column("event_ids", batch.event_ids),
        **_text_column("metadata", batch.metadata_texts),
        "debit_positions": _int_array_text(debit_positions),
        "credit_positions": _int_array_text(credit_positions),
        "debit_offsets": _int_array_text(plan.debit_offsets),
        "credit_offsets": _int_array_text(plan.credit_offsets),
    }
    freed_after_commit.append(
        (known, plan, positions, debit_positions, credit_positions, parameters)
    )
    if link:
        _, committed_at = await _execute_write(
            conn, _WRITE_NEW_BATCH_LINKED, parameters, count, plans
        )
        return committed_at, []
    # The chain's lines are started before the write takes the accounts' locks.
    heads = [
        line_head(
            transfer_id=batch.ids[index],
            debit_account_id=batch.debit_account_ids[index],
            credit_account_id=batch.credit_account_ids[index],
            amount=batch.amounts[index],
            asset=plan.assets[index],
            code=batch.codes[index],
            flags=0,
            pending_id=None,
            timeout_s=None,
            expires_at=None,
            rate_card_version=batch.rate_card_versions[index],
            event_id=batch.event_ids[index],
            metadata_text=batch.metadata_texts[index],
        )
        for index in range(count)
    ]
    before, committed_at = await _execute_write(conn, _WRITE_NEW_BATCH, parameters, count, plans)
    entries: list[ChainEntry] = []
    for index in range(count):
        transfer_id = batch.ids[index]
        tail = line_tail(
            before[debit_positions[index]] + plan.debit_offsets[index],
            before[credit_positions[index]] + plan.credit_offsets[index],
            committed_at,
        )
        entries.append((transfer_id.int, transfer_id, (heads[index] + tail).encode("utf-8")))
    return committed_at, entries


_UNIQUE_VIOLATION_SQLSTATE = "23505"
# The races other than a duplicate key (`is_duplicate_key`), whose writers could meet again, by
# the kind `conflict_kind` names them.
_RACE_LOST_KINDS = {
    "40001": "serialization_failure",
    "40P01": "deadlock",
}
CONFLICT_KINDS = ("unique_key", *_RACE_LOST_KINDS.values())


def _is_unique_violation(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) == _UNIQUE_VIOLATION_SQLSTATE


def is_duplicate_key(error: BaseException) -> bool:
    """Whether `error` is a conflict on a unique key (`conflict_kind`)."""
    if isinstance(error, LedgerConflictError):
        return True
    return isinstance(error, DBAPIError) and _is_unique_violation(error)


def conflict_kind(error: BaseException) -> str | None:
    """Which race with another writer `error` says the unit of work lost, one of
    `CONFLICT_KINDS` (a duplicate key, a deadlock, a serialization failure), so that it runs
    again; or None when it is not such a race."""
    if is_duplicate_key(error):
        return "unique_key"
    if isinstance(error, DBAPIError):
        return _RACE_LOST_KINDS.get(str(getattr(error.orig, "sqlstate", None)))
    return None
