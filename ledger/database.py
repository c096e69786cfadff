"""The async engine, with the connection settings the ledger relies on."""

from __future__ import annotations

from typing import Any, Final

from asyncpg.exceptions import InternalClientError
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

APPLICATION_NAME = "giftledger"
RANDOM_PAGE_COST = "1.1"
POSTGRESQL_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")
PORT_MAX = 65_535
# The element types of the arrays the project's statements bind (`CAST(:ids AS bigint[])`).
# asyncpg has no built-in codec for most array types: it asks the server about each the first
# time a statement on a connection uses it (three round trips: JIT off, the type query, JIT
# back), inside whatever transaction prepares that statement, holding its locks. A connection
# learns them all at once when it opens instead (`_learn_array_types`): the cash-out bench's
# batched phase made 30 such queries, 469 ms in all, one type at a time, on the connections the
# pool opened during it (bench/README.md, 2026-12-06, morning).
ARRAY_ELEMENT_TYPES = (
    "bigint",
    "integer",
    "smallint",
    "uuid",
    "timestamptz",
    "date",
    "bytea",
    "boolean",
    "text",
    "jsonb",
)
_ARRAY_TYPES_STATEMENT = "SELECT " + ", ".join(
    f"CAST(${number} AS {element}[])" for number, element in enumerate(ARRAY_ELEMENT_TYPES, 1)
)


def create_engine(
    url: str,
    *,
    pool_size: int = 8,
    pool_overflow_max: int = 4,
    pool_timeout_s: float = 10.0,
    statement_timeout_ms: int = 30_000,
    role: str | None = None,
) -> AsyncEngine:
    """An engine for `url` (postgresql+asyncpg://...).

    Custom plans are forced because the ledger's statements take arrays whose sizes vary from one
    batch to the next, and a generic plan cached while tables were small keeps sequential scans
    after they grow. JIT is off: our statements are short and JIT compile time dominates them.
    With `role`, every connection acts as that database role from its start (least privilege:
    the services write as `giftledger_writer`, which cannot change or remove ledger rows).
    A failed statement's error never carries its parameters (`hide_parameters`): they hold
    creators' data, payout account references among them, and errors end up in logs and
    tracebacks.
    """
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_overflow_max,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={
            "server_settings": {
                "application_name": APPLICATION_NAME,
                "plan_cache_mode": "force_custom_plan",
                "jit": "off",
                "random_page_cost": RANDOM_PAGE_COST,
                "statement_timeout": str(statement_timeout_ms),
                "timezone": "UTC",
                **({"role": role} if role else {}),
            }
        },
    )
    event.listen(engine.sync_engine, "connect", _learn_array_types)
    event.listen(engine.sync_engine, "handle_error", _take_ended_connections_for_lost)
    return engine


# asyncpg's own error for an operation on a connection whose server has sent its last message
# (FATAL: an administrator or a shutdown ended the backend while the connection sat idle) but
# whose socket's end it has not read yet: the driver's protocol is still consuming that error
# (its state 2) and refuses every new operation. Its message is all that tells this apart.
_ENDED_WHILE_IDLE = "another operation (2) is in progress"


def _take_ended_connections_for_lost(context: ExceptionContext) -> None:
    """Have SQLAlchemy take asyncpg's error for a connection the server ended while it sat idle
    for what it is, a lost connection: the connection leaves the pool, and the error says
    `connection_invalidated`, which the consumers wait out as an outage. SQLAlchemy sees a lost
    connection there only once the driver has closed it, which it does on some of these paths
    and not on others (a new connection's first statement, `_learn_array_types`, among them)."""
    driver_error = context.original_exception.__cause__  # under the DBAPI adapter's own
    if isinstance(driver_error, InternalClientError) and _ENDED_WHILE_IDLE in str(driver_error):
        context.is_disconnect = True


def _learn_array_types(dbapi_connection: Any, _connection_record: Any) -> None:
    """Have a new connection learn the codecs of `ARRAY_ELEMENT_TYPES`' arrays in one query:
    preparing a statement that binds them all makes asyncpg introspect every one it lacks.

    Through the DBAPI adapter's cursor, as every other statement goes: a failure then comes out
    of the engine as SQLAlchemy's error (a lost connection as a disconnect, which the consumers
    wait out as an outage), not as the driver's own, which nothing above expects."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_ARRAY_TYPES_STATEMENT, (None,) * len(ARRAY_ELEMENT_TYPES))
    finally:
        cursor.close()
    dbapi_connection.rollback()  # the adapter opened a transaction for it


# Options in a URL's query that SQLAlchemy's asyncpg dialect and asyncpg's `connect` take (host:
# a Unix socket's directory, or several hosts with `target_session_attrs`), and libpq's names
# for them that managed services print (`?sslmode=require`). Any other option is refused by
# name (`database_url_problem`): asyncpg would end on it with a TypeError's traceback.
URL_OPTIONS: Final = frozenset(
    {
        "host",
        "port",
        "passfile",
        "service",
        "servicefile",
        "ssl",
        "direct_tls",
        "target_session_attrs",
        "timeout",
        "command_timeout",
        "statement_cache_size",
        "max_cached_statement_lifetime",
        "max_cacheable_statement_size",
        "prepared_statement_cache_size",
        "krbsrvname",
        "gsslib",
    }
)
LIBPQ_URL_OPTIONS: Final = {"sslmode": "ssl"}


def to_async_url(url: str) -> str:
    """Accept plain postgresql:// URLs too, as most tools print them, and libpq's `sslmode`
    as asyncpg's `ssl` (it takes the same values: disable ... verify-full)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+asyncpg://" + url[len(prefix) :]
            break
    if not any(f"{name}=" in url for name in LIBPQ_URL_OPTIONS):
        return url
    parsed = make_url(url)
    query = {LIBPQ_URL_OPTIONS.get(key, key): value for key, value in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=False)


def database_url_problem(url: str) -> str | None:
    """Why `url` is not a PostgreSQL URL `to_async_url` accepts, or None when it is one.

    The answer never repeats the URL, which may hold a password.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "not a URL: expected postgresql://user:password@host:port/database"
    except ValueError:
        return "the port is not a number"
    if parsed.drivername not in POSTGRESQL_SCHEMES:
        return (
            f"{parsed.drivername}:// is not PostgreSQL:"
            " expected postgresql:// or postgresql+asyncpg://"
        )
    if parsed.port is not None and not 1 <= parsed.port <= PORT_MAX:
        return f"port {parsed.port} is not between 1 and {PORT_MAX}"
    accepted = URL_OPTIONS | set(LIBPQ_URL_OPTIONS)
    unknown = sorted(set(parsed.query) - accepted)
    if unknown:
        return (
            f"the option {unknown[0]}= is not one asyncpg, giftledger's driver, takes (it takes"
            " ssl= and its own options, such as target_session_attrs=; sslmode= is read as ssl=)"
        )
    return None
