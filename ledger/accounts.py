"""Accounts appear on first use: insert-if-missing by unique name, then read the ids back.

Two writers creating the same creator's accounts at once both succeed: the unique name makes the
second insert a no-op, and both read the same id. Ids are cached in-process once committed
(accounts are never deleted), so steady-state batches touch the database only for new names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.chart import AccountSpec

# Bounded by memory: a cached account takes about 160 bytes here (its name, e.g.
# `creator:<id>:DIAMOND:available`, its id, the dict's slot) and about 190 in `AccountFacts`,
# so 100,000 accounts keep both within about 35 MiB (measured with tracemalloc over filled
# caches). A full cache starts over: the accounts of the next batches are read again.
ACCOUNT_CACHE_SIZE_MAX = 100_000

_INSERT_MISSING = text(
    """
    INSERT INTO accounts (name, asset, kind, creator_id, flags)
    SELECT * FROM unnest(CAST(:names AS text[]), CAST(:assets AS text[]), CAST(:kinds AS text[]),
                         CAST(:creator_ids AS text[]), CAST(:flags AS smallint[]))
    ON CONFLICT (name) DO NOTHING
    """
)
_SELECT_IDS = text("SELECT id, name FROM accounts WHERE name = ANY(CAST(:names AS text[]))")


async def ensure_accounts_in(conn: AsyncConnection, specs: Iterable[AccountSpec]) -> dict[str, int]:
    """Create the missing accounts among `specs` inside the caller's transaction; name -> id."""
    unique = {spec.name: spec for spec in specs}
    if not unique:
        return {}
    ordered = sorted(unique.values(), key=lambda spec: spec.name)
    await conn.execute(
        _INSERT_MISSING,
        {
            "names": [spec.name for spec in ordered],
            "assets": [spec.asset for spec in ordered],
            "kinds": [spec.kind.value for spec in ordered],
            "creator_ids": [spec.creator_id for spec in ordered],
            "flags": [int(spec.flags) for spec in ordered],
        },
    )
    rows = (await conn.execute(_SELECT_IDS, {"names": list(unique)})).all()
    return {row.name: row.id for row in rows}


class AccountDirectory:
    """Name-to-id lookups with a bounded in-process cache of committed accounts."""

    def __init__(self, engine: AsyncEngine, cache_size_max: int = ACCOUNT_CACHE_SIZE_MAX) -> None:
        self._engine = engine
        self._cache_size_max = cache_size_max
        self._ids_by_name: dict[str, int] = {}

    @property
    def cached_count(self) -> int:
        """Accounts in the cache now: at most `cache_size_max`."""
        return len(self._ids_by_name)

    async def ids(self, specs: Sequence[AccountSpec]) -> dict[str, int]:
        """Ids for `specs`, creating missing accounts in their own short transaction."""
        known = {
            spec.name: self._ids_by_name[spec.name]
            for spec in specs
            if spec.name in self._ids_by_name
        }
        missing = [spec for spec in specs if spec.name not in known]
        if missing:
            async with self._engine.begin() as conn:
                created = await ensure_accounts_in(conn, missing)
            if len(self._ids_by_name) + len(created) > self._cache_size_max:
                self._ids_by_name.clear()
            if len(created) <= self._cache_size_max:
                self._ids_by_name.update(created)
            known.update(created)
        return known

    async def ids_in(self, conn: AsyncConnection, specs: Sequence[AccountSpec]) -> dict[str, int]:
        """Ids for `specs` inside the caller's transaction: cached ids as they are, missing
        accounts created on `conn` (not cached: the transaction may still roll back). For a
        transaction that holds locks already, which must not wait for a second connection."""
        known = {
            spec.name: self._ids_by_name[spec.name]
            for spec in specs
            if spec.name in self._ids_by_name
        }
        missing = [spec for spec in specs if spec.name not in known]
        if missing:
            known.update(await ensure_accounts_in(conn, missing))
        return known

    async def id(self, spec: AccountSpec) -> int:
        return (await self.ids([spec]))[spec.name]
