"""A real PostgreSQL for the tests, and a fresh database built by the Alembic migrations.

Where the server comes from: `DATABASE_URL` when set (CI points it at the machine's server),
else a testcontainers PostgreSQL where a Docker engine answers, else the embedded PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine, to_async_url
from services.runtime.embedded_postgres import EmbeddedPostgres
from tests.fresh_database import fresh_database

DOCKER_PROBE_TIMEOUT_S = 10


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=DOCKER_PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.fixture(scope="session")
def postgres_source() -> Iterator[str]:
    """'env', 'testcontainers' or 'embedded', for the record in the test report."""
    if os.environ.get("DATABASE_URL"):
        yield "env"
    elif _docker_engine_answers():
        yield "testcontainers"
    else:
        yield "embedded"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres_admin_url(postgres_source: str) -> AsyncIterator[str]:
    """A URL on the server's maintenance database, with rights to create databases."""
    if postgres_source == "env":
        yield to_async_url(os.environ["DATABASE_URL"])
    elif postgres_source == "testcontainers":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver="asyncpg") as container:
            yield to_async_url(container.get_connection_url())
    else:
        async with EmbeddedPostgres() as server:
            yield server.url("postgres")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A new database for this test session, migrated to head, dropped at the end."""
    async with fresh_database(postgres_admin_url) as url:
        yield url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=8, pool_overflow_max=8)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def module_engine(postgres_admin_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a database of the requesting module's own: a module whose property tests
    run the full `verify` after every example then reads only its own transfers, not every
    earlier module's (which made each example cost seconds late in the session)."""
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=8, pool_overflow_max=8)
        yield engine
        await engine.dispose()


@pytest.fixture
def unique_id() -> str:
    """A short id no other test uses: tests share one database and never see each other."""
    return uuid.uuid4().hex[:12]
