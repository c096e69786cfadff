"""Bring a database up to the latest schema with Alembic (also used by the tests)."""

from __future__ import annotations

from typing import Final

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from asyncpg import PostgresError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.migration_privileges import (
    migrating_login,
    not_the_owner,
    privilege_problems,
    refusal_message,
)
from ledger.partitions import TRANSFER_PARTITION_MONTHS_AHEAD, keep_transfer_partitions

NO_SCHEMA_MESSAGE = "the database has no giftledger schema: run giftledger migrate"
INSUFFICIENT_PRIVILEGE_SQLSTATE: Final = "42501"


class SchemaNotCurrentError(Exception):
    """The database's schema is missing or at another revision than this version's head."""


class MigrationPrivilegeError(Exception):
    """The login running the migrations lacks a privilege they need."""


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


def pending_revisions(current: str | None) -> list[str]:
    """The revisions an upgrade from `current` (None: no schema) applies, oldest first."""
    scripts = list(_scripts().iterate_revisions("heads", current or "base"))
    return [script.revision for script in reversed(scripts)]


def _newer_than_head_message(revision: str) -> str:
    return (
        f"the database schema is at revision {revision}, newer than this giftledger knows"
        f" (its latest is {head_revision()}): run a newer giftledger"
    )


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_to_head(
    engine: AsyncEngine, months_ahead: int = TRANSFER_PARTITION_MONTHS_AHEAD
) -> None:
    """Apply every pending migration, then move any rows of the default transfers partition to
    their month and make sure this month and the next `months_ahead` have partitions
    (`ledger.partitions`).

    First it checks that the login may do what the pending migrations do
    (`ledger.migration_privileges`) and raises `MigrationPrivilegeError`, saying what it lacks,
    before anything changes; a privilege the server refuses all the same is raised as one too. A
    database at a revision this version does not know raises `SchemaNotCurrentError`."""
    async with engine.connect() as connection:
        login = await migrating_login(connection)
    try:
        revision = await current_revision(engine)
    except (DBAPIError, PostgresError) as error:
        # A login that may not read the schema's revision may not act as the tables' owner.
        if _sqlstate(error) != INSUFFICIENT_PRIVILEGE_SQLSTATE or login.acts_as_schema_owner:
            raise
        refusal = refusal_message(login.name, [not_the_owner(login)])
        raise MigrationPrivilegeError(refusal) from error
    if revision is not None and not _is_known_revision(revision):
        raise SchemaNotCurrentError(_newer_than_head_message(revision))
    async with engine.connect() as connection:
        problems = await privilege_problems(connection, login, pending_revisions(revision))
    if problems:
        raise MigrationPrivilegeError(refusal_message(login.name, problems))
    config = alembic_config()
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, config)
        await keep_transfer_partitions(engine, months_ahead)
    except (DBAPIError, PostgresError) as error:
        if _sqlstate(error) != INSUFFICIENT_PRIVILEGE_SQLSTATE:
            raise
        driver_error = error.orig if isinstance(error, DBAPIError) else error
        said = str(driver_error).strip().splitlines()[0]
        reached = await current_revision(engine) or "none"
        raise MigrationPrivilegeError(
            f"migrate as {login.name} was refused: {said}. The database stays at"
            f" revision {reached}; migrations run as the login that owns the schema's tables"
            " (README, Security: Roles)"
        ) from error


def _sqlstate(error: DBAPIError | PostgresError) -> str | None:
    driver_error = error.orig if isinstance(error, DBAPIError) else error
    sqlstate = getattr(driver_error, "sqlstate", None)
    return None if sqlstate is None else str(sqlstate)


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
        raise SchemaNotCurrentError(_newer_than_head_message(revision))
    raise SchemaNotCurrentError(
        f"the database schema is at revision {revision}, this giftledger needs {head}:"
        " run giftledger migrate"
    )
