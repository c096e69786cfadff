"""The account id cache is bounded by LEDGER_ACCOUNT_CACHE_SIZE_MAX: new creators arriving for
ever never take it past the bound, a lookup of more accounts than the bound caches none of them,
and ids stay right across the cache starting over."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.accounts import ACCOUNT_CACHE_SIZE_MAX, AccountDirectory
from ledger.chart import creator_diamonds_available
from services.runtime.settings import Settings

BOUND = 1_000
BATCH = 300
CREATORS = 2_500


def test_the_setting_defaults_to_the_bound_chosen_by_memory() -> None:
    assert Settings().ledger_account_cache_size_max == ACCOUNT_CACHE_SIZE_MAX == 100_000


async def test_new_creators_never_take_the_cache_past_its_bound(
    engine: AsyncEngine, unique_id: str
) -> None:
    bound = Settings(ledger_account_cache_size_max=BOUND).ledger_account_cache_size_max
    directory = AccountDirectory(engine, bound)
    specs = [creator_diamonds_available(f"{unique_id}-c{rank}") for rank in range(CREATORS)]
    first: dict[str, int] = {}
    counts = []
    for start in range(0, len(specs), BATCH):
        first.update(await directory.ids(specs[start : start + BATCH]))
        counts.append(directory.cached_count)
    assert max(counts) <= BOUND, counts
    assert counts[-1] > 0, counts  # it does cache
    assert len(set(first.values())) == CREATORS

    again = await directory.ids(specs)  # more than the bound at once
    assert again == first
    assert directory.cached_count <= BOUND

    fresh = AccountDirectory(engine, bound)
    assert await fresh.ids(specs) == first
    assert fresh.cached_count == 0  # too many to cache at once: none is
