"""The finance API as a real uvicorn server on a free port, for tests that talk plain HTTP from
synchronous code (schemathesis, `requests`): the server runs in a thread of its own, with its own
event loop and its own engine on the session's test database (`database_url`, the database the
`engine` fixture is on), so it answers while a synchronous test blocks the pytest thread.

`seeded_api` feeds one creator's gifts, tip, fund reward, marketplace deal, a paid and a rejected
cash-out and a dead-lettered gift through `Ingestor.process` (the function the Kafka consumers
call) before the server starts, so that a test reaches the 200 answers, not only 404s; and, after
the seeded window, one event id applied in two topics (for another creator), which
`GET /v1/events/{event_id}` answers with 409.

Import both fixtures into a test module (`from tests.api_server import seeded_api,
seeded_ledger`): pytest finds a fixture, and what it depends on, by name in the module.

`served_client` is the same server for asynchronous tests: an app served on a free port as a
task of the test's own event loop, and an `httpx.AsyncClient` on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from schemas import topics
from schemas.topics import all_topics
from services.api.server import serve_api
from services.app.bootstrap import build_api_app
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.embedded_broker import create_topics
from services.runtime.ports import free_loopback_port as free_port
from services.runtime.ports import http_answers
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.books_helpers import reconcile_paid_cashout
from tests.ingestion_fixtures import make_ingestor

SERVER_START_TIMEOUT_S = 15.0
SERVER_STOP_TIMEOUT_S = 30.0
SERVED_START_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0
FINANCE_TOKEN = f"finance-{uuid.uuid4().hex}"
OPERATOR_TOKEN = f"operator-{uuid.uuid4().hex}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_settings(kafka_bootstrap_servers: str | None = None) -> Settings:
    """The finance and operator tokens of this module, and the default limits; the Kafka cluster
    that operator actions publish to, when given."""
    return Settings(
        api_tokens={
            token_digest(FINANCE_TOKEN): "finance",
            token_digest(OPERATOR_TOKEN): "operator",
        },
        kafka_bootstrap_servers=kafka_bootstrap_servers,
    )


class _ServerThread(threading.Thread):
    """`serve_api` on its own event loop, with an engine of its own on `database_url`."""

    def __init__(self, database_url: str, settings: Settings, port: int) -> None:
        super().__init__(name=f"api-server-{port}", daemon=True)
        self.database_url = database_url
        self.settings = settings
        self.port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by `running_api_server`
            self.error = error

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        engine = create_engine(self.database_url, pool_size=4, pool_overflow_max=4)
        try:
            app = build_api_app(engine, self.settings)
            await serve_api(app, "127.0.0.1", self.port, self.stop_event)
        finally:
            await engine.dispose()

    def stop(self) -> None:
        loop, stop_event = self.loop, self.stop_event
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(stop_event.set)
        self.join(SERVER_STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_api_server(database_url: str, settings: Settings) -> Iterator[str]:
    """The finance API served on a free port of 127.0.0.1 until the block ends: its base URL."""
    port = free_port()
    thread = _ServerThread(database_url, settings, port)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not http_answers(f"{base_url}/healthz"):
            assert thread.is_alive(), f"the API server stopped: {thread.error!r}"
            assert time.monotonic() < deadline, "the API server did not answer in time"
            time.sleep(0.05)
        yield base_url
    finally:
        thread.stop()
    assert not thread.is_alive(), "the API server did not stop"
    if thread.error is not None:
        raise thread.error


@contextlib.asynccontextmanager
async def served_client(
    app: FastAPI, *, request_timeout_s: float = REQUEST_TIMEOUT_S
) -> AsyncIterator[httpx.AsyncClient]:
    """`app` served by uvicorn on a free port of 127.0.0.1, on the running event loop, and a
    client on it (each request given `request_timeout_s`); stopped at the end. Ready once
    `/openapi.json` answers: it needs neither a token nor the database."""
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_api(app, "127.0.0.1", port, stop))
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base_url, timeout=request_timeout_s) as client:
        try:
            async with asyncio.timeout(SERVED_START_TIMEOUT_S):
                while True:
                    assert not server.done(), server
                    with contextlib.suppress(httpx.TransportError):
                        await client.get("/openapi.json")
                        break
                    await asyncio.sleep(0.05)
            yield client
        finally:
            stop.set()
            await server


# The data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededLedger:
    """Ids the seeded data has, and the window in which it was written."""

    creator: str
    gift_event: str
    dead_event: str
    paid_cashout: str
    rejected_cashout: str
    start: datetime
    end: datetime
    twice_applied_event: str
    reconciliation: int

    @property
    def available_account(self) -> str:
        return f"creator:{self.creator}:DIAMOND:available"


@dataclass(frozen=True)
class SeededApi:
    """A running API server on seeded data."""

    base_url: str
    ledger: SeededLedger


async def _database_time(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        moment: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return moment


class _Feed:
    """Records fed to `Ingestor.process` with unique offsets (dead letters key on them)."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.partition = 800 + uuid.uuid4().int % 100
        self.offset = uuid.uuid4().int % 2**40

    async def send(self, topic: str, event: dict[str, Any], key: str) -> None:
        self.offset += 1
        record = InputRecord(
            topic, self.partition, self.offset, key.encode(), json.dumps(event).encode()
        )
        report = await self.ingestor.process(topic, [record])
        assert report.applied + len(report.dead_letters) == 1, report


async def seed_ledger(engine: AsyncEngine) -> SeededLedger:
    """One eligible creator with video and live gifts, a tip, a fund reward, a marketplace deal,
    a paid cash-out and a rejected one; and a gift refused as a schema violation. After the
    window, another creator's tip and fund reward under one event id."""
    creator = f"api-server-creator-{uuid.uuid4().hex[:10]}"
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    feed = _Feed(make_ingestor(engine, rate_cards))
    start = await _database_time(engine)
    await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator), creator)
    gift = make.gift(creator, coins=10)
    await feed.send(topics.GIFTS_SENT, gift, creator)
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=2, count=2_500), creator)
    await feed.send(
        topics.GIFTS_SENT, make.gift(creator, coins=20, count=3, surface="live"), creator
    )
    await feed.send(topics.TIPS_RECEIVED, make.tip(creator), creator)
    await feed.send(topics.FUND_REWARDED, make.fund_reward(creator), creator)
    await feed.send(topics.MARKETPLACE_PAID, make.marketplace_payment(creator), creator)
    paid = make.cashout_request(creator, 2_000)
    await feed.send(topics.CASHOUTS_REQUESTED, paid, creator)
    await feed.send(topics.PAYOUTS_UPDATED, make.payout_update(paid["event_id"], "paid"), creator)
    rejected = make.cashout_request(creator, 100)  # 0.50 USD: under the minimum
    await feed.send(topics.CASHOUTS_REQUESTED, rejected, creator)
    refused = {**make.gift(creator), "coins": 0}
    await feed.send(topics.GIFTS_SENT, refused, creator)
    end = await _database_time(engine)
    twice = f"{creator}-twice"
    tip = make.tip(twice)
    await feed.send(topics.TIPS_RECEIVED, tip, twice)
    await feed.send(
        topics.FUND_REWARDED, {**make.fund_reward(twice), "event_id": tip["event_id"]}, twice
    )
    return SeededLedger(
        creator=creator,
        gift_event=gift["event_id"],
        dead_event=refused["event_id"],
        paid_cashout=paid["event_id"],
        rejected_cashout=rejected["event_id"],
        start=start,
        end=end,
        twice_applied_event=tip["event_id"],
        reconciliation=await reconcile_paid_cashout(engine, paid["event_id"]),
    )


# Fixtures ------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded_ledger(engine: AsyncEngine, kafka_bootstrap: str) -> SeededLedger:
    """The seeded ledger, and its deployment's topics on the test broker (empty: the seed goes
    straight to the ingestor), so that a re-drive finds its source record gone."""
    await create_topics(kafka_bootstrap, all_topics(""), 1)
    return await seed_ledger(engine)


@pytest.fixture(scope="module")
def seeded_api(
    database_url: str, kafka_bootstrap: str, seeded_ledger: SeededLedger
) -> Iterator[SeededApi]:
    """The finance API on a free port, in a thread, on the seeded test database and the test
    Kafka cluster."""
    with running_api_server(database_url, api_settings(kafka_bootstrap)) as base_url:
        yield SeededApi(base_url, seeded_ledger)


__all__ = [
    "FINANCE_TOKEN",
    "OPERATOR_TOKEN",
    "SeededApi",
    "SeededLedger",
    "api_settings",
    "free_port",
    "running_api_server",
    "seed_ledger",
    "seeded_api",
    "seeded_ledger",
    "served_client",
]
