"""A database of its own for a test module, migrated to head and dropped at the end.

The session's database is shared by every module; month-end closes and reconciliations are about
the whole ledger (every account, every cash-out of a day), so the tests of them run on a database
where only their own data is.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from ledger.database import create_engine
from ledger.migrate import upgrade_to_head


@asynccontextmanager
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """The URL of a new database on the test server, migrated by the Alembic migrations."""
    name = f"giftledger_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        engine = create_engine(url, pool_size=2)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
