"""A gifts report by creator or gift holds every group or none: past `REPORT_GROUP_COUNT_MAX`
groups it is refused with what to ask instead (422 from the API, exit 2 from the command line),
never cut short as if it were whole."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from schemas import topics
from services.api import queries
from services.api.queries import TooManyGroupsError, gifts_report
from services.cli import main
from services.commands.common import EXIT_USAGE
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.settings import get_settings
from tests import event_factory as make
from tests.fresh_database import fresh_database
from tests.ingestion_fixtures import make_ingestor

PARTITION = 6
CREATOR_COUNT = 4


async def _gifts_to_new_creators(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        ingestor = make_ingestor(engine, await load_rate_cards(conn))
    records = []
    for index in range(CREATOR_COUNT):
        creator = f"creator-{uuid.uuid4().hex[:10]}"
        records.append(
            InputRecord(
                topics.GIFTS_SENT,
                PARTITION,
                10**12 + index,
                creator.encode(),
                make.encode(make.gift(creator)),
            )
        )
    report = await ingestor.process(topics.GIFTS_SENT, records)
    assert report.applied == CREATOR_COUNT


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own_database(postgres_admin_url: str) -> AsyncIterator[str]:
    """A database of this module's own: the reports count every gift of their range."""
    async with fresh_database(postgres_admin_url) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def engine(own_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(own_database, pool_size=2)
    yield engine
    await engine.dispose()


async def test_a_report_with_more_groups_than_the_cap_is_refused_whole(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=1)
    await _gifts_to_new_creators(engine)
    ended = datetime.now(UTC) + timedelta(minutes=1)
    async with engine.connect() as conn:
        whole = await gifts_report(conn, started, ended, "creator")
        assert len(whole) == CREATOR_COUNT  # the module's tests run in this order
        monkeypatch.setattr(queries, "REPORT_GROUP_COUNT_MAX", CREATOR_COUNT)
        assert await gifts_report(conn, started, ended, "creator") == whole
        monkeypatch.setattr(queries, "REPORT_GROUP_COUNT_MAX", CREATOR_COUNT - 1)
        with pytest.raises(TooManyGroupsError, match="more than 3 groups by creator"):
            await gifts_report(conn, started, ended, "creator")
        assert len(await gifts_report(conn, started, ended, "surface")) == 1


async def test_the_command_line_says_what_to_ask_instead(
    engine: AsyncEngine,
    own_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _gifts_to_new_creators(engine)
    monkeypatch.setenv("DATABASE_URL", own_database)
    monkeypatch.setattr(queries, "REPORT_GROUP_COUNT_MAX", 1)
    get_settings.cache_clear()  # the settings are read once a process
    try:
        code = await asyncio.to_thread(main, ["report", "gifts", "--group-by", "creator"])
    finally:
        get_settings.cache_clear()
    assert code == EXIT_USAGE
    assert "ask for a shorter range, or group by surface or day" in capsys.readouterr().err
