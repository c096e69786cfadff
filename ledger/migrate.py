"""Bring a database up to the latest schema with Alembic (also used by the tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.partitions import TRANSFER_PARTITION_MONTHS_AHEAD, keep_transfer_partitions

NO_SCHEMA_MESSAGE = "the database has no giftledger schema: run giftledger migrate"


class SchemaNotCurrentError(Exception):
    """The database's schema is missing or at another revision than this version's head."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "ledger:migrations")
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The latest revision among the migrations shipped with this version."""
    head = _scripts().get_current_head()
    assert head is not None, "no migrations found"
    return head


def _is_known_revision(revision: str) -> bool:
    return revision in {script.revision for script in _scripts().walk_revisions()}


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_to_head(
    engine: AsyncEngine, months_ahead: int = TRANSFER_PARTITION_MONTHS_AHEAD
) -> None:
    """Apply every pending migration, then move any rows of the default transfers partition to
    their month and make sure this month and the next `months_ahead` have partitions
    (`ledger.partitions`)."""
    config = alembic_config()
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade, config)
    await keep_transfer_partitions(engine, months_ahead)


def _current(connection: Connection) -> str | None:
    """The database's revision; None where Alembic never ran (no `alembic_version` table)."""
    if connection.scalar(text("SELECT to_regclass('alembic_version')")) is None:
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def require_current_schema(engine: AsyncEngine) -> None:
    """Raise `SchemaNotCurrentError` unless the database is at this version's head revision."""
    revision = await current_revision(engine)
    head = head_revision()
    if revision == head:
        return
    if revision is None:
        raise SchemaNotCurrentError(NO_SCHEMA_MESSAGE)
    if not _is_known_revision(revision):
        raise SchemaNotCurrentError(
            f"the database schema is at revision {revision}, newer than this giftledger knows"
            f" (its latest is {head}): run a newer giftledger"
        )
    raise SchemaNotCurrentError(
        f"the database schema is at revision {revision}, this giftledger needs {head}:"
        " run giftledger migrate"
    )
