"""The database a command or service runs against: `DATABASE_URL`, or the embedded PostgreSQL.

With `DATABASE_URL` unset, the embedded server keeps its data under `data_dir/postgres`, so one
command's ledger (`giftledger demo`) is still there for the next (`giftledger balance c1`). The
URL's password is never printed: logs and errors show it rendered with the password hidden.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ledger.database import create_engine, to_async_url
from services.runtime.embedded_postgres import EmbeddedPostgres
from services.runtime.settings import Settings

EMBEDDED_DATABASE_NAME = "giftledger"
DUPLICATE_DATABASE_SQLSTATE = "42P04"

logger = logging.getLogger(__name__)


class DatabaseUnavailableError(Exception):
    """The database could not be reached; the message names the host, never the password."""


def safe_url(url: str) -> str:
    """`url` with its password replaced by `***`, fit for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def _driver_error(error: BaseException) -> BaseException:
    """What the driver raised, under SQLAlchemy's wrapping (the error itself when unwrapped)."""
    return error.orig if isinstance(error, DBAPIError) and error.orig is not None else error


def error_reason(error: BaseException) -> str:
    """The first line of what the driver said, without SQLAlchemy's wrapping."""
    cause = _driver_error(error)
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def error_text(error: BaseException) -> str:
    """The error on one line, for a log line or a dead letter's detail: its type, what the
    driver said (its lines joined, without SQLAlchemy's wrapping) and the server's SQLSTATE when
    it sent one. Never the statement or its parameters, which SQLAlchemy's own message adds on
    lines of their own (`DBAPIError: bigint out of range (SQLSTATE 22003)`, not the batch's
    SQL)."""
    said = " ".join(str(_driver_error(error)).split())
    text = f"{type(error).__name__}: {said}" if said else type(error).__name__
    sqlstate = getattr(error.orig, "sqlstate", None) if isinstance(error, DBAPIError) else None
    return f"{text} (SQLSTATE {sqlstate})" if sqlstate else text


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on `DATABASE_URL`, or on the embedded server's `giftledger` database.

    The connection is checked before the engine is handed out, within `db_pool_timeout_s`, so an
    unreachable server fails fast with `DatabaseUnavailableError` instead of on the first query.
    """
    if settings.database_url is not None:
        url = to_async_url(settings.database_url.get_secret_value())
        async with _engine_on(url, settings) as engine:
            yield engine
        return
    server_dir = settings.data_dir / "postgres"
    # EmbeddedPostgres creates only the parent of its directory; get_server needs the directory.
    try:
        server_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise DatabaseUnavailableError(
            f"DATA_DIR {settings.data_dir}: cannot make {server_dir} ({reason}): set DATA_DIR"
            " to a directory giftledger may write, or DATABASE_URL"
        ) from error
    server = EmbeddedPostgres(server_dir)
    try:
        await server.start()
    except RuntimeError as error:  # the embedded PostgreSQL is not installed
        raise DatabaseUnavailableError(str(error)) from error
    try:
        await _create_database_if_missing(server.url("postgres"), EMBEDDED_DATABASE_NAME)
        async with _engine_on(server.url(EMBEDDED_DATABASE_NAME), settings) as engine:
            yield engine
    finally:
        await server.stop()


class ServicesLoginError(Exception):
    """SERVICES_DATABASE_URL's login could change the ledger's rows or triggers itself."""


# Shown once by `giftledger run` on a configured database without SERVICES_DATABASE_URL.
SHARED_LOGIN_WARNING: Final = (
    "SERVICES_DATABASE_URL is unset: the services connect with DATABASE_URL, the login that owns"
    " the schema, and act as giftledger_writer and giftledger_reader, which guards against the"
    " code's mistakes, not against arbitrary SQL on their connections (RESET ROLE returns to the"
    " owner, who may disable the ledger's triggers); set SERVICES_DATABASE_URL to a login that"
    " owns nothing and is only a member of those two roles"
)

# What the services' login may do beyond the roles it is a member of: each column true is a way
# to change the ledger's rows or their triggers (a CREATEROLE login can grant itself the owner's
# role on PostgreSQL 15; membership in a role, direct or not, lets it SET ROLE to it).
_SERVICES_LOGIN_POWERS: Final = text(
    """
    SELECT r.rolsuper AS superuser,
           r.rolcreaterole AS creates_roles,
           pg_has_role(session_user, d.datdba, 'MEMBER') AS owns_the_database,
           pg_has_role(session_user, n.nspowner, 'MEMBER') AS owns_the_schema,
           EXISTS (SELECT 1 FROM pg_class c
                   WHERE c.relnamespace = n.oid
                     AND pg_has_role(session_user, c.relowner, 'MEMBER')) AS owns_tables
    FROM pg_roles r, pg_database d, pg_namespace n
    WHERE r.rolname = session_user AND d.datname = current_database() AND n.nspname = 'public'
    """
)
_POWER_NAMES: Final = {
    "superuser": "is a superuser",
    "creates_roles": "may create roles (CREATEROLE)",
    "owns_the_database": "owns the database or may act as its owner",
    "owns_the_schema": "owns the schema public or may act as its owner",
    "owns_tables": "owns tables of the schema or may act as their owner",
}


async def services_login_problem(engine: AsyncEngine) -> str | None:
    """Why the login of `engine`'s connections could change the ledger's rows or triggers by
    itself, whatever role its connections start as, or None when it cannot."""
    async with engine.connect() as conn:
        login = str(await conn.scalar(text("SELECT session_user")))
        row = (await conn.execute(_SERVICES_LOGIN_POWERS)).mappings().one()
    powers = [said for column, said in _POWER_NAMES.items() if row[column]]
    if not powers:
        return None
    return (
        f"SERVICES_DATABASE_URL logs in as {login}, which {' and '.join(powers)}: any statement"
        " on the services' connections could then change the ledger's rows or disable its"
        " triggers. Give the services a login that owns nothing and is only a member of"
        " giftledger_writer and giftledger_reader (README, Security)"
    )


@asynccontextmanager
async def open_services_database(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The engine `giftledger run` works through: on SERVICES_DATABASE_URL when it is set, once
    its login is found to own nothing (else `ServicesLoginError`); else `open_database`'s, with
    one warning when the database is a configured one (the embedded one is a sandbox)."""
    if settings.services_database_url is None:
        if settings.database_url is not None:
            logger.warning(SHARED_LOGIN_WARNING)
        async with open_database(settings) as engine:
            yield engine
        return
    url = to_async_url(settings.services_database_url.get_secret_value())
    async with _engine_on(url, settings) as engine:
        problem = await services_login_problem(engine)
        if problem is not None:
            raise ServicesLoginError(problem)
        yield engine


@asynccontextmanager
async def open_read_database(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The engine the finance API and the console read through: one on `API_DATABASE_URL` (a
    streaming replica of `engine`'s database), checked as `open_database` checks its own, or
    `engine` itself when that is unset."""
    if settings.api_database_url is None:
        yield engine
        return
    url = to_async_url(settings.api_database_url.get_secret_value())
    async with _engine_on(url, settings) as read_engine:
        yield read_engine


@asynccontextmanager
async def _engine_on(url: str, settings: Settings) -> AsyncIterator[AsyncEngine]:
    logger.info("database %s", safe_url(url))
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        pool_overflow_max=settings.db_pool_overflow_max,
        pool_timeout_s=settings.db_pool_timeout_s,
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    try:
        await _check_connection(engine, url, settings.db_pool_timeout_s)
        yield engine
    finally:
        await engine.dispose()


async def _check_connection(engine: AsyncEngine, url: str, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError as error:
        raise DatabaseUnavailableError(
            f"cannot reach the database at {safe_url(url)}: no answer within {timeout_s:g} s"
        ) from error
    except (OSError, DBAPIError) as error:
        raise DatabaseUnavailableError(
            f"cannot reach the database at {safe_url(url)}: {error_reason(error)}"
        ) from error


async def _create_database_if_missing(admin_url: str, name: str) -> None:
    """CREATE DATABASE cannot run in a transaction, hence the AUTOCOMMIT engine."""
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists is None:
                await _create_database(conn, name)
    finally:
        await admin.dispose()


async def _create_database(conn: AsyncConnection, name: str) -> None:
    try:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as error:
        # Another process created it between our check and our CREATE: that is what we wanted.
        if getattr(error.orig, "sqlstate", None) != DUPLICATE_DATABASE_SQLSTATE:
            raise
    logger.info("created database %s", name)


def engine_as_role(engine: AsyncEngine, settings: Settings, role: str) -> AsyncEngine:
    """A second engine on the same database whose connections act as `role`."""
    return create_engine(
        engine.url.render_as_string(hide_password=False),
        pool_size=settings.db_pool_size,
        pool_overflow_max=settings.db_pool_overflow_max,
        pool_timeout_s=settings.db_pool_timeout_s,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        role=role,
    )
