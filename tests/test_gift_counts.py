"""A gift event sends `count` gifts of `coins` coins each (docs/events.md): the gifts report, the
command line, the console's overview and the demo's summary count the gifts, and say how many gift
events there were.

The ledger records each gift transfer's `count` in its metadata (from migration 0042 on). A gift
transfer booked before has none, and nothing the database holds tells it (its coins are the
gifts' coins summed, their price per gift is not kept): such events are counted as events, and a
group holding any has no gift count (`gift_count` null, `gift_events_without_count` says how
many), rather than one made up.

On a database of the module's own: the reports read every gift of their range.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chart import creator_diamonds_available
from ledger.database import create_engine
from ledger.model import PostResult, Transfer, TransferCode
from ledger.service import Ledger
from schemas import topics
from services.api.server import create_app
from services.cli import main
from services.demo import print_gifts_by_surface
from services.ingestion.event_transfers import GIFT_DIAMOND_SOURCE
from services.runtime import settings as settings_module
from tests import event_factory as make
from tests.api_server import api_settings, served_client
from tests.fresh_database import fresh_database
from tests.report_helpers import FINANCE, EventFeed, database_time


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    return module_engine


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(engine, api_settings())
    async with served_client(app) as client:
        yield client


async def _gifts(
    api: httpx.AsyncClient, start: datetime, end: datetime, group_by: str
) -> list[dict[str, Any]]:
    answer = await api.get(
        "/v1/reports/gifts",
        params={"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by},
        headers=FINANCE,
    )
    assert answer.status_code == 200, answer.text
    groups: list[dict[str, Any]] = answer.json()["groups"]
    return groups


async def _gift_metadata(engine: AsyncEngine, event_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT metadata FROM transfers WHERE event_id = :id AND code = :code"),
            {"id": event_id, "code": int(TransferCode.GIFT_DIAMONDS)},
        )
        metadata: dict[str, Any] = found.scalar_one()
    return metadata


def _cli_report(database_url: str, *arguments: str) -> str:
    """What `giftledger report gifts ...` prints, run in a thread (it calls asyncio.run)."""
    output = io.StringIO()
    settings_module.get_settings.cache_clear()
    with contextlib.redirect_stdout(output):
        assert main(["report", "gifts", *arguments]) == 0
    return output.getvalue()


async def test_an_event_of_2500_gifts_counts_2500_gifts_and_one_event(
    engine: AsyncEngine, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    creator = f"gift-counts-{uuid.uuid4().hex[:10]}"
    feed = await EventFeed.on(engine)
    start = await database_time(engine)
    many = make.gift(creator, coins=2, count=2_500)
    await feed.send(topics.GIFTS_SENT, many)
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=2, count=1))
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=20, count=3, surface="live"))
    end = await database_time(engine)
    assert (await _gift_metadata(engine, many["event_id"]))["count"] == 2_500

    def group(key: str, events: int, gifts: int, coins: int) -> dict[str, Any]:
        return {
            "gift_events": events,
            "gift_count": gifts,
            "gift_events_without_count": 0,
            "coins": coins,
            "milli_diamonds": coins * 500,
        }

    assert await _gifts(api, start, end, "surface") == [
        {"surface": "live", **group("live", 1, 3, 60)},
        {"surface": "video", **group("video", 2, 2_501, 5_002)},
    ]
    assert await _gifts(api, start, end, "creator") == [
        {"creator": creator, **group(creator, 3, 2_504, 5_062)}
    ]
    assert await _gifts(api, start, end, "gift") == [
        {"gift": "rose", **group("rose", 3, 2_504, 5_062)}
    ]
    [day] = await _gifts(api, start, end, "day")
    assert (day["gift_events"], day["gift_count"]) == (3, 2_504)

    url = make_url(str(engine.url)).render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    window = ["--from", start.isoformat(), "--to", end.isoformat()]
    text_lines = await asyncio.to_thread(_cli_report, url, *window, "--group-by", "creator")
    assert text_lines.splitlines()[1].split() == [
        "creator",
        "gift",
        "events",
        "gifts",
        "coins",
        "diamonds",
    ]
    assert text_lines.splitlines()[2].split() == [
        creator,
        "3",
        "2504",
        "5062",
        "2531.000",
        "DIAMOND",
    ]
    as_json = await asyncio.to_thread(_cli_report, url, *window, "--json")
    assert json.loads(as_json)["groups"] == await _gifts(api, start, end, "surface")


async def test_gift_events_booked_before_the_count_was_recorded_leave_the_gift_count_unknown(
    engine: AsyncEngine, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gift transfer as giftledger booked it before it recorded the count (its metadata
    without `count`), beside one booked now: the group says how many events had no count, and
    gives no gift count rather than a guess; a group of counted events only keeps its count."""
    creator = f"gift-counts-old-{uuid.uuid4().hex[:10]}"
    ledger = Ledger(engine)
    available = creator_diamonds_available(creator)
    ids = await ledger.account_ids([GIFT_DIAMOND_SOURCE, available])
    start = await database_time(engine)
    before = {
        "coins": 5_000,
        "gift_id": "lion",
        "live_id": "live-1",
        "sender_id": "fan-1",
        "surface": "live",
    }
    old = Transfer(
        uuid.uuid4(),
        ids[GIFT_DIAMOND_SOURCE.name],
        ids[available.name],
        2_500_000,
        TransferCode.GIFT_DIAMONDS,
        rate_card_version=1,
        event_id=f"old-{uuid.uuid4().hex}",
        metadata=before,
    )
    assert await ledger.post([old]) == [PostResult.OK]
    feed = await EventFeed.on(engine)
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=10, count=4, surface="live"))
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=10, count=2))
    end = await database_time(engine)

    assert await _gifts(api, start, end, "surface") == [
        {
            "surface": "live",
            "gift_events": 2,
            "gift_count": None,
            "gift_events_without_count": 1,
            "coins": 5_040,
            "milli_diamonds": 2_520_000,
        },
        {
            "surface": "video",
            "gift_events": 1,
            "gift_count": 2,
            "gift_events_without_count": 0,
            "coins": 20,
            "milli_diamonds": 10_000,
        },
    ]
    url = make_url(str(engine.url)).render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    window = ["--from", start.isoformat(), "--to", end.isoformat()]
    printed = (await asyncio.to_thread(_cli_report, url, *window)).splitlines()
    assert [line.split() for line in printed[2:4]] == [
        ["live", "2", "-", "5040", "2520.000", "DIAMOND"],
        ["video", "1", "2", "20", "10.000", "DIAMOND"],
    ]
    assert printed[4] == (
        "gifts -: 1 gift event was booked before giftledger recorded a gift event's count;"
        " each sent one gift or more"
    )


async def test_the_demo_summary_counts_gifts_and_gift_events_per_surface(
    postgres_admin_url: str,
) -> None:
    """On a database of its own (the summary reads every gift): 2,500 gifts in one event are
    2,500 gifts; a surface holding an event booked without its count shows `-`."""
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=2)
        try:
            feed = await EventFeed.on(engine)
            for count, surface in ((2_500, "live"), (1, "live"), (3, "video")):
                event = make.gift("creator-00", coins=2, count=count, surface=surface)
                await feed.send(topics.GIFTS_SENT, event)
            ledger = Ledger(engine)
            available = creator_diamonds_available("creator-00")
            ids = await ledger.account_ids([GIFT_DIAMOND_SOURCE, available])
            old = Transfer(  # as giftledger booked a gift before it recorded the count
                uuid.uuid4(),
                ids[GIFT_DIAMOND_SOURCE.name],
                ids[available.name],
                1_000,
                TransferCode.GIFT_DIAMONDS,
                rate_card_version=1,
                event_id="old-1",
                metadata={"coins": 2, "surface": "live"},
            )
            assert await ledger.post([old]) == [PostResult.OK]
            out = io.StringIO()
            await print_gifts_by_surface(engine, out)
        finally:
            await engine.dispose()
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["", "Diamonds issued by surface"]
    assert [line.split() for line in lines[2:4]] == [
        ["live", "3", "gift", "events", "-", "gifts", "2,502.000", "DIAMOND"],
        ["video", "1", "gift", "event", "3", "gifts", "3.000", "DIAMOND"],
    ]
    assert lines[4].strip().startswith("-: 1 gift event was booked before"), lines[4]
