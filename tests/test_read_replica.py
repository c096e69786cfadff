"""Reads leave the primary: the API process built with `API_DATABASE_URL` on a real streaming
replica reads the finance API's and the console's pages from it, writes operator actions on the
primary, and shows how far behind the replica is.

The primary and the replica are this module's own (tests/streaming_replica.py): the machine's
server refuses replication connections, so the tests do not use `DATABASE_URL`'s server and pass
whether it is set or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.migrate import upgrade_to_head
from schemas import topics
from services.api.deps import reader_connection
from services.api.replica_lag import ReplicaLag, read_replica_lag
from services.app.bootstrap import build_api_app, load_ingestor
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.operator.freezes import creator_is_frozen
from services.runtime.database import open_read_database
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.streaming_replica import ReplicatedPair, new_replicated_pair

FINANCE_TOKEN: Final = f"replica-finance-{uuid.uuid4().hex}"
OPERATOR_TOKEN: Final = f"replica-operator-{uuid.uuid4().hex}"
REPLAY_WAIT_S: Final = 15.0
POLL_S: Final = 0.05
RECORD_PARTITION: Final = 900

T = TypeVar("T")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _settings(api_database_url: str | None) -> Settings:
    return Settings(
        api_tokens={
            _digest(FINANCE_TOKEN): {"role": "finance", "name": "replica-finance"},
            _digest(OPERATOR_TOKEN): {"role": "operator", "name": "replica-operator"},
        },
        api_database_url=api_database_url,
    )


async def _eventually(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    """`read()` again every POLL_S until `done` holds, for at most REPLAY_WAIT_S."""
    try:
        async with asyncio.timeout(REPLAY_WAIT_S):
            while True:
                value = await read()
                if done(value):
                    return value
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError(f"{what} within {REPLAY_WAIT_S} s") from None


# The servers and the apps --------------------------------------------------------------------


@pytest.fixture(scope="module")
def replicated() -> Iterator[ReplicatedPair]:
    """Both servers, stopped at the end of the module whatever happened (a failed start too)."""
    pair = new_replicated_pair()
    try:
        try:
            pair.start_primary()
            pair.start_replica()
        except subprocess.SubprocessError as error:
            raise AssertionError(f"the servers did not start:\n{pair.command_log()}") from error
        yield pair
    finally:
        pair.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def primary(replicated: ReplicatedPair) -> AsyncIterator[AsyncEngine]:
    """The primary, migrated by the project's migrations after the replica was made (so the
    replica gets the schema by streaming too)."""
    engine = create_engine(replicated.primary.url(), pool_size=4)
    try:
        await upgrade_to_head(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def read_engine(
    replicated: ReplicatedPair, primary: AsyncEngine
) -> AsyncIterator[AsyncEngine]:
    """The API's read engine as the service opens it from `API_DATABASE_URL`."""
    settings = _settings(replicated.replica.url())
    async with open_read_database(settings, primary) as engine:
        assert engine is not primary
        yield engine


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def replica_app(
    replicated: ReplicatedPair, primary: AsyncEngine, read_engine: AsyncEngine
) -> FastAPI:
    return build_api_app(primary, _settings(replicated.replica.url()), read_engine=read_engine)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def primary_app(primary: AsyncEngine) -> FastAPI:
    """The same app without `API_DATABASE_URL`: it reads the primary."""
    return build_api_app(primary, _settings(None))


@contextlib.asynccontextmanager
async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def on_replica(replica_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(replica_app) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def on_primary(primary_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(primary_app) as client:
        yield client


@pytest.fixture
def creator() -> str:
    return f"replica-creator-{uuid.uuid4().hex[:10]}"


class _Feed:
    """Events posted on the primary through `Ingestor.process`, as the consumers post them."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor
        self.offset = uuid.uuid4().int % 2**40

    async def send(self, topic: str, event: dict[str, Any], key: str) -> None:
        self.offset += 1
        value = json.dumps(event).encode()
        record = InputRecord(topic, RECORD_PARTITION, self.offset, key.encode(), value)
        report = await self.ingestor.process(topic, [record])
        assert report.applied == 1, report


@pytest_asyncio.fixture(loop_scope="session")
async def feed(primary: AsyncEngine) -> _Feed:
    return _Feed(await load_ingestor(Settings(), primary))


# Reading the replica -------------------------------------------------------------------------


async def _balances(client: httpx.AsyncClient, creator: str) -> httpx.Response:
    return await client.get(f"/v1/creators/{creator}/balances", headers=_bearer(FINANCE_TOKEN))


def _diamonds_available(answer: httpx.Response) -> int:
    assert answer.status_code == 200, answer.text
    [diamond] = [line for line in answer.json()["balances"] if line["asset"] == "DIAMOND"]
    return int(diamond["available"])


async def _replica_lag(engine: AsyncEngine) -> ReplicaLag:
    async with reader_connection(engine, Settings().api_database_role) as conn:
        return await read_replica_lag(conn)


async def _scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def test_a_balance_written_on_the_primary_is_read_from_the_replica_once_replayed(
    primary: AsyncEngine,
    read_engine: AsyncEngine,
    on_primary: httpx.AsyncClient,
    on_replica: httpx.AsyncClient,
    feed: _Feed,
    creator: str,
) -> None:
    await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator), creator)
    await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=10), creator)
    written = await _balances(on_primary, creator)
    first_diamonds = _diamonds_available(written)
    assert first_diamonds > 0
    await _eventually(
        lambda: _balances(on_replica, creator),
        lambda answer: answer.status_code == 200 and answer.json() == written.json(),
        "the replica did not replay the gift",
    )

    # With replay paused, a second gift reaches the replica's WAL but not its tables: what the
    # API answers is the replica's, and its lag shows.
    await _scalar(read_engine, "SELECT pg_wal_replay_pause()::text")
    try:
        await _eventually(
            lambda: _scalar(read_engine, "SELECT pg_get_wal_replay_pause_state()"),
            lambda state: state == "paused",
            "replay did not pause",
        )
        await feed.send(topics.GIFTS_SENT, make.gift(creator, coins=10), creator)
        written_lsn = await _scalar(primary, "SELECT pg_current_wal_lsn()::text")
        await _eventually(
            lambda: _scalar(
                read_engine,
                f"SELECT pg_last_wal_receive_lsn() >= '{written_lsn}'::pg_lsn",
            ),
            lambda received: bool(received),
            "the replica did not received the second gift",
        )
        second_diamonds = _diamonds_available(await _balances(on_primary, creator))
        assert second_diamonds > first_diamonds
        assert _diamonds_available(await _balances(on_replica, creator)) == first_diamonds
        lag = await _replica_lag(read_engine)
        assert lag.on_replica
        assert not lag.caught_up
        assert lag.lag_s is not None
        assert lag.lag_s >= 0
        assert lag.text().startswith("replica, ")
        assert lag.text().endswith(" behind")
    finally:
        await _scalar(read_engine, "SELECT pg_wal_replay_resume()::text")
    await _eventually(
        lambda: _balances(on_replica, creator),
        lambda answer: _diamonds_available(answer) == second_diamonds,
        "the replica did not replayed the second gift",
    )
    caught_up = await _eventually(
        lambda: _replica_lag(read_engine),
        lambda lag: lag.caught_up,
        "the replica did not caught up",
    )
    assert caught_up.lag_s == 0.0
    assert caught_up.text().startswith("replica, caught up")


async def test_a_write_route_lands_on_the_primary(
    primary: AsyncEngine,
    read_engine: AsyncEngine,
    on_replica: httpx.AsyncClient,
    feed: _Feed,
    creator: str,
) -> None:
    await feed.send(topics.CREATORS_UPDATED, make.creator_update(creator), creator)
    answer = await on_replica.post(
        f"/v1/operator/creators/{creator}/freeze",
        json={"reason": "checked by the read replica test"},
        headers={**_bearer(OPERATOR_TOKEN), "Idempotency-Key": f"replica-{uuid.uuid4().hex}"},
    )
    assert answer.status_code == 200, answer.text
    async with primary.connect() as conn:
        assert await creator_is_frozen(conn, creator)

    async def frozen_on_replica() -> bool:
        async with read_engine.connect() as conn:
            return await creator_is_frozen(conn, creator)

    await _eventually(frozen_on_replica, bool, "the freeze did not reach the replica")


# The lag, where people see it ---------------------------------------------------------------


async def test_the_lag_read_says_primary_on_the_primary_and_replica_on_the_replica(
    primary: AsyncEngine, read_engine: AsyncEngine
) -> None:
    on_primary = await _replica_lag(primary)
    assert on_primary == ReplicaLag(on_replica=False, replayed_age_s=None, caught_up=False)
    assert on_primary.text() == "primary"
    assert on_primary.lag_s == 0.0
    on_replica = await _replica_lag(read_engine)
    assert on_replica.on_replica
    assert on_replica.text().startswith("replica, ")


async def _console_overview(client: httpx.AsyncClient) -> str:
    form = await client.get("/console/sign-in")
    assert form.status_code == 200
    found = re.search(r'name="sign_in_token" value="([^"]+)"', form.text)
    assert found is not None
    signed_in = await client.post(
        "/console/sign-in", data={"token": FINANCE_TOKEN, "sign_in_token": found.group(1)}
    )
    assert signed_in.status_code == 303, signed_in.text
    overview = await client.get("/console")
    assert overview.status_code == 200, overview.text
    return overview.text


def _reads_from_line(page: str) -> str:
    found = re.search(r'<p id="reads-from">Pages read from: ([^<]*)</p>', page)
    assert found is not None, page
    return found.group(1)


def _lag_samples(metrics: str) -> list[str]:
    return [
        line for line in metrics.splitlines() if line.startswith("giftledger_api_read_lag_seconds{")
    ]


async def test_the_console_overview_and_the_metrics_show_where_reads_come_from(
    on_primary: httpx.AsyncClient, on_replica: httpx.AsyncClient
) -> None:
    assert _reads_from_line(await _console_overview(on_primary)) == "primary"
    assert _reads_from_line(await _console_overview(on_replica)).startswith("replica, ")

    metrics = await on_primary.get("/metrics", headers=_bearer(FINANCE_TOKEN))
    assert metrics.status_code == 200
    assert _lag_samples(metrics.text) == [
        'giftledger_api_read_lag_seconds{reads_from="primary"} 0.0'
    ]
    metrics = await on_replica.get("/metrics", headers=_bearer(FINANCE_TOKEN))
    assert metrics.status_code == 200
    [sample] = _lag_samples(metrics.text)
    assert sample.startswith('giftledger_api_read_lag_seconds{reads_from="replica"} ')
    assert float(sample.rsplit(" ", 1)[1]) >= 0


async def test_without_api_database_url_the_api_reads_the_database_it_writes(
    primary: AsyncEngine,
) -> None:
    async with open_read_database(_settings(None), primary) as engine:
        assert engine is primary
    assert build_api_app(primary, _settings(None)).state.read_engine is primary


def test_api_database_url_is_checked_like_database_url() -> None:
    with pytest.raises(ValueError, match="api_database_url"):
        _settings("mysql://someone@127.0.0.1/ledger")
