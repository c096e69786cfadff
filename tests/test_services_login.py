"""The services' own login (SERVICES_DATABASE_URL), on a real PostgreSQL and broker.

A connection that starts as `giftledger_writer` through the startup setting `role=` returns to
its login with `SET ROLE NONE`: connected as the schema's owner, any statement on it may then
disable the ledger's triggers and rewrite its rows. With SERVICES_DATABASE_URL naming a login
that is only a member of `giftledger_writer`, `giftledger run` applies gifts as before and such a
statement is refused; `run` refuses to start with a login that could do it, and warns once when
the setting is unset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Final

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger.database import create_engine
from schemas import topics
from schemas.topics import all_topics
from services.runtime.database import (
    SHARED_LOGIN_WARNING,
    ServicesLoginError,
    open_services_database,
)
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.fresh_database import fresh_database
from tests.ingestion_fixtures import wait_until

pytestmark = pytest.mark.server

WRITER: Final = "giftledger_writer"
PARTITION_COUNT: Final = 2
GIFT_COUNT: Final = 20
APPLIED_WAIT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 30.0
REFUSAL_TIMEOUT_S: Final = 60.0


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A database of this module's own: on the session's, other modules' engines and services
    of this process open connections as the owner at any moment, which the check of who the
    run's connections are would take for the run's."""
    async with fresh_database(postgres_admin_url) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=4)
    yield engine
    await engine.dispose()


def _as_login(database_url: str, login: str) -> str:
    """`database_url` with `login` as its user and no password (the test server trusts it)."""
    url = make_url(database_url).set(username=login, password=None)
    return url.render_as_string(hide_password=False)


@pytest_asyncio.fixture(loop_scope="session")
async def make_login(database_url: str) -> AsyncIterator[list[str]]:
    """Logins made by the test (roles are the server's, not the database's): dropped after."""
    made: list[str] = []
    yield made
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            for login in made:
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE usename = :login"
                    ),
                    {"login": login},
                )
                await conn.execute(text(f'DROP ROLE IF EXISTS "{login}"'))
    finally:
        await admin.dispose()


async def _new_login(engine: AsyncEngine, made: list[str], grants: str) -> str:
    """A LOGIN role with no password, then `GRANT <grants> TO` it (`grants` may be empty)."""
    login = f"giftledger_services_test_{uuid.uuid4().hex[:10]}"
    made.append(login)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE ROLE "{login}" LOGIN'))
        if grants:
            await conn.execute(text(f'GRANT {grants} TO "{login}"'))
    return login


async def _owner(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        owner = await conn.scalar(
            text("SELECT tableowner FROM pg_tables WHERE tablename = 'transfers'")
        )
    return str(owner)


async def _applied(engine: AsyncEngine, creators: list[str]) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM applied_events WHERE creator_id = ANY(:c)"),
            {"c": creators},
        )
    return int(count or 0)


async def _backend_pids(engine: AsyncEngine, database: str) -> set[int]:
    """The server processes of `database`'s connections, this one's left out."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": database},
        )
        return {int(row.pid) for row in rows}


async def _service_logins(engine: AsyncEngine, database: str, before: set[int]) -> set[str]:
    """The logins of `database`'s giftledger connections opened since `before` was read (the
    module's earlier tests may leave connections of their own, as the owner)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = :db"
                " AND application_name = 'giftledger' AND pid <> pg_backend_pid()"
                " AND pid <> ALL(:before)"
            ),
            {"db": database, "before": sorted(before)},
        )
        return {str(row.usename) for row in rows}


async def test_run_on_a_login_of_its_own_applies_gifts_and_cannot_leave_the_writer(
    database_url: str, engine: AsyncEngine, kafka_bootstrap: str, make_login: list[str]
) -> None:
    login = await _new_login(engine, make_login, WRITER)
    services_url = _as_login(database_url, login)
    prefix = f"p{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITION_COUNT)
    database = make_url(database_url).database
    assert database is not None
    connected_before = await _backend_pids(engine, database)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "run",
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "SERVICES_DATABASE_URL": services_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": prefix,
            "KAFKA_CONSUMER_GROUP": f"g-{prefix}",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "KAFKA_PARTITION_COUNT": str(PARTITION_COUNT),
            "METRICS_PORT": "0",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    creators = [f"sl-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for number in range(GIFT_COUNT):
            creator = creators[number % len(creators)]
            await producer.send(
                prefix + topics.GIFTS_SENT,
                value=make.encode(make.gift(creator, coins=2)),
                key=creator.encode(),
            )
        await producer.flush()

        async def all_applied() -> bool:
            return await _applied(engine, creators) == GIFT_COUNT

        await wait_until(all_applied, APPLIED_WAIT_S)
        assert await _service_logins(engine, database, connected_before) == {login}
    finally:
        await producer.stop()
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT_S)
    assert process.returncode == 0, stderr.decode(errors="replace")
    assert "SERVICES_DATABASE_URL is unset" not in stderr.decode(errors="replace")

    # What the services' connections are: the writer from their start, on the login.
    services = create_engine(services_url, pool_size=1, role=WRITER)
    try:
        for statement, refusal in (
            ("ALTER TABLE transfers DISABLE TRIGGER transfers_immutable", "must be owner"),
            ("ALTER TABLE verify_runs DISABLE TRIGGER verify_runs_immutable", "must be owner"),
            ("UPDATE transfers SET amount = amount + 1 WHERE false", "permission denied"),
            ("DELETE FROM verify_runs WHERE false", "permission denied"),
            (f"SET ROLE {await _owner(engine)}", "permission denied"),
        ):
            async with services.connect() as conn:
                await conn.execute(text("SET ROLE NONE"))
                assert await conn.scalar(text("SELECT current_user")) == login
                with pytest.raises(DBAPIError, match=refusal):
                    await conn.execute(text(statement))
                await conn.rollback()
    finally:
        await services.dispose()


async def test_run_refuses_a_login_that_owns_the_schema_or_may_become_its_owner(
    database_url: str, engine: AsyncEngine, make_login: list[str]
) -> None:
    owner = await _owner(engine)
    member_of_owner = await _new_login(engine, make_login, f'"{owner}"')
    creates_roles = await _new_login(engine, make_login, WRITER)
    async with engine.begin() as conn:
        await conn.execute(text(f'ALTER ROLE "{creates_roles}" CREATEROLE'))
    for login, said in (
        (owner, "owns tables of the schema or may act as their owner"),
        (member_of_owner, "owns tables of the schema or may act as their owner"),
        (creates_roles, r"may create roles \(CREATEROLE\)"),
    ):
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            services_database_url=_as_login(database_url, login),
        )
        with pytest.raises(ServicesLoginError, match=f"logs in as {login}, which .*{said}"):
            async with open_services_database(settings):
                pass


async def test_run_refuses_to_start_on_the_owners_login_with_exit_2(
    database_url: str, kafka_bootstrap: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "run",
        env={
            **os.environ,
            "DATABASE_URL": database_url,
            "SERVICES_DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "METRICS_PORT": "0",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), REFUSAL_TIMEOUT_S)
    said = stderr.decode(errors="replace")
    assert process.returncode == 2, said
    assert "SERVICES_DATABASE_URL logs in as" in said
    assert "postgresql" not in said  # the URL (and a password in it) is never repeated


async def test_without_the_setting_run_warns_once_and_connects_as_before(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(_env_file=None, database_url=database_url)
    with caplog.at_level(logging.WARNING):
        async with open_services_database(settings) as services, services.connect() as conn:
            login = await conn.scalar(text("SELECT session_user"))
    assert login == make_url(database_url).username
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [SHARED_LOGIN_WARNING]
    assert "not against arbitrary SQL" in SHARED_LOGIN_WARNING


def test_the_services_login_needs_the_owners_url() -> None:
    with pytest.raises(ValueError, match="SERVICES_DATABASE_URL needs DATABASE_URL"):
        Settings(
            _env_file=None,
            database_url=None,
            services_database_url="postgresql+asyncpg://services@127.0.0.1:5432/giftledger",
        )
