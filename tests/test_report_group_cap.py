"""A gifts report by creator or gift holds every group or none: past `REPORT_GROUP_COUNT_MAX`
groups it is refused with what to ask instead (422 from the API, exit 2 from the command line),
never cut short as if it were whole."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.api import queries
from services.api.queries import TooManyGroupsError, gifts_report
from services.cli import main
from services.commands.common import EXIT_USAGE
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
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


async def test_a_report_with_more_groups_than_the_cap_is_refused_whole(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=1)
    await _gifts_to_new_creators(engine)
    ended = datetime.now(UTC) + timedelta(minutes=1)
    async with engine.connect() as conn:
        whole = await gifts_report(conn, started, ended, "creator")
        assert len(whole) == CREATOR_COUNT
        monkeypatch.setattr(queries, "REPORT_GROUP_COUNT_MAX", CREATOR_COUNT)
        assert await gifts_report(conn, started, ended, "creator") == whole
        monkeypatch.setattr(queries, "REPORT_GROUP_COUNT_MAX", CREATOR_COUNT - 1)
        with pytest.raises(TooManyGroupsError, match="more than 3 groups by creator"):
            await gifts_report(conn, started, ended, "creator")
        assert len(await gifts_report(conn, started, ended, "surface")) == 1


async def test_the_command_line_says_what_to_ask_instead(
    engine: AsyncEngine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _gifts_to_new_creators(engine)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(queries, "REPORT_GROUP_COUNT_MAX", 1)
    code = await asyncio.to_thread(main, ["report", "gifts", "--group-by", "creator"])
    assert code == EXIT_USAGE
    assert "ask for a shorter range, or group by surface or day" in capsys.readouterr().err
