"""`giftledger migrate` as a login that is not a superuser, on a real PostgreSQL.

The project's roles are the server's: once a superuser's migrations made them, a database's
owner without CREATEROLE migrates its database when it is a member of giftledger_reader and
giftledger_writer, and is refused otherwise (exit 2, one paragraph saying what it lacks, before
anything changes). Each test makes its logins and their databases, and drops them after.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from alembic import command as alembic_command
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from ledger.database import create_engine
from ledger.migrate import alembic_config, current_revision, head_revision
from services.cli import main
from services.runtime import settings
from tests.test_writer_privileges import WRITER_WRITES, writes_on_each_table

pytestmark = pytest.mark.server

REVISION_BEFORE_HEAD = "0010"

MigrateAs = Callable[[str], int]


async def _as_admin(admin_url: str, statements: list[str]) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await admin.dispose()


@dataclass
class Logins:
    """Makes logins and databases on the test server; `drop` removes every one it made."""

    admin_url: str
    logins: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    def login(self, grants: str = "") -> str:
        """A LOGIN role without a password (the test server trusts it), not a superuser and
        without CREATEROLE, then `GRANT <grants> TO` it (`grants` may be empty)."""
        name = f"giftledger_migrate_test_{uuid.uuid4().hex[:10]}"
        self.logins.append(name)
        statements = [f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEROLE']
        if grants:
            statements.append(f'GRANT {grants} TO "{name}"')
        asyncio.run(_as_admin(self.admin_url, statements))
        return name

    def database(self, owner: str | None) -> str:
        """A new empty database owned by `owner` (None: the admin's login)."""
        name = f"giftledger_test_{uuid.uuid4().hex[:12]}"
        self.databases.append(name)
        owned_by = "" if owner is None else f' OWNER "{owner}"'
        asyncio.run(_as_admin(self.admin_url, [f'CREATE DATABASE "{name}"{owned_by}']))
        return name

    def url(self, database: str, login: str | None = None) -> str:
        """A URL on `database` as `login` (None: the admin's)."""
        url = make_url(self.admin_url).set(database=database)
        if login is not None:
            url = url.set(username=login, password=None)
        return url.render_as_string(hide_password=False)

    def drop(self) -> None:
        statements = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.databases]
        statements += [f'DROP ROLE IF EXISTS "{name}"' for name in self.logins]
        asyncio.run(_as_admin(self.admin_url, statements))


@pytest.fixture
def logins(postgres_admin_url: str, database_url: str) -> Iterator[Logins]:
    """The session's database is migrated by the admin's login, which made the roles."""
    del database_url
    made = Logins(postgres_admin_url)
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture
def migrate_as(monkeypatch: pytest.MonkeyPatch) -> Iterator[MigrateAs]:
    """`migrate_as(url)`: `giftledger migrate` with DATABASE_URL set to `url`, its exit code."""

    def run(url: str) -> int:
        monkeypatch.setenv("DATABASE_URL", url)
        settings.get_settings.cache_clear()
        return main(["migrate"])

    yield run
    settings.get_settings.cache_clear()


def _revision(url: str) -> str | None:
    async def read() -> str | None:
        engine = create_engine(url, pool_size=1)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _upgrade_to(url: str, revision: str) -> None:
    def upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        alembic_command.upgrade(config, revision)

    async def run() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(upgrade)
        finally:
            await engine.dispose()

    asyncio.run(run())


def _refusal(captured: pytest.CaptureFixture[str]) -> str:
    """The one paragraph `migrate` wrote on stderr (nothing on stdout, no traceback)."""
    out, err = captured.readouterr()
    assert out == ""
    assert "Traceback" not in err
    paragraph, end = err.split("\n")
    assert end == ""
    return paragraph


def test_an_owner_without_the_roles_is_told_what_it_lacks_and_nothing_is_migrated(
    logins: Logins, migrate_as: MigrateAs, capsys: pytest.CaptureFixture[str]
) -> None:
    login = logins.login()
    database = logins.database(owner=login)
    assert migrate_as(logins.url(database, login)) == 2
    said = _refusal(capsys)
    assert said.startswith(f"giftledger: migrate cannot run as {login}: {login} is not a member")
    for role in ("giftledger_reader", "giftledger_writer"):
        assert f"{login} is not a member of {role} and may not make itself one" in said
        assert f"ADMIN OPTION on {role}" in said
    assert f'GRANT giftledger_reader, giftledger_writer TO "{login}"' in said
    assert said.endswith("Nothing was migrated (README, Security: Roles)")
    assert _revision(logins.url(database)) is None


def test_an_owner_that_is_a_member_of_the_roles_migrates_its_database(
    logins: Logins, migrate_as: MigrateAs, capsys: pytest.CaptureFixture[str]
) -> None:
    login = logins.login(grants="giftledger_reader, giftledger_writer")
    database = logins.database(owner=login)
    url = logins.url(database, login)
    assert migrate_as(url) == 0
    assert migrate_as(url) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"database at revision {head_revision()}\n" * 2, "")
    assert _revision(logins.url(database)) == head_revision()

    async def owner_and_writes() -> tuple[str, dict[str, tuple[str, ...]]]:
        engine = create_engine(logins.url(database), pool_size=1)
        try:
            async with engine.connect() as conn:
                owner = await conn.scalar(
                    text("SELECT tableowner FROM pg_tables WHERE tablename = 'transfers'")
                )
                return str(owner), await writes_on_each_table(conn, "giftledger_writer")
        finally:
            await engine.dispose()

    owner, writes = asyncio.run(owner_and_writes())
    assert owner == login
    assert writes == WRITER_WRITES


def test_a_login_that_may_not_act_as_the_schemas_owner_is_refused_before_any_change(
    logins: Logins, migrate_as: MigrateAs, capsys: pytest.CaptureFixture[str]
) -> None:
    """The earlier migrations ran as a superuser, whose tables the database's owner may not
    alter: `migrate` says so rather than failing at the first ALTER TABLE."""
    login = logins.login(grants="giftledger_reader, giftledger_writer")
    database = logins.database(owner=login)
    _upgrade_to(logins.url(database), REVISION_BEFORE_HEAD)
    admin = make_url(logins.admin_url).username
    assert migrate_as(logins.url(database, login)) == 2
    said = _refusal(capsys)
    assert said == (
        f"giftledger: migrate cannot run as {login}: the schema's tables belong to {admin}, as"
        f" whom {login} may not act, and only a table's owner may alter it. To go on, run"
        f" giftledger migrate as {admin}. Nothing was migrated (README, Security: Roles)"
    )
    assert _revision(logins.url(database)) == REVISION_BEFORE_HEAD


def test_a_login_that_may_not_even_read_the_revision_is_told_whose_tables_they_are(
    logins: Logins, migrate_as: MigrateAs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A login granted nothing cannot read `alembic_version`: it is refused as one that may not
    act as the tables' owner, not with the server's bare permission error."""
    login = logins.login()
    database = logins.database(owner=None)
    _upgrade_to(logins.url(database), REVISION_BEFORE_HEAD)
    admin = make_url(logins.admin_url).username
    assert migrate_as(logins.url(database, login)) == 2
    assert _refusal(capsys) == (
        f"giftledger: migrate cannot run as {login}: the schema's tables belong to {admin}, as"
        f" whom {login} may not act, and only a table's owner may alter it. To go on, run"
        f" giftledger migrate as {admin}. Nothing was migrated (README, Security: Roles)"
    )
    assert _revision(logins.url(database)) == REVISION_BEFORE_HEAD


def test_a_login_without_create_on_the_schema_is_refused_before_any_change(
    logins: Logins, migrate_as: MigrateAs, capsys: pytest.CaptureFixture[str]
) -> None:
    login = logins.login(grants="giftledger_reader, giftledger_writer")
    database = logins.database(owner=None)
    assert migrate_as(logins.url(database, login)) == 2
    said = _refusal(capsys)
    assert f"{login} may not create tables in the schema public (it lacks CREATE on it" in said
    assert _revision(logins.url(database)) is None


def test_a_privilege_the_server_refuses_midway_ends_in_one_paragraph_with_exit_2(
    logins: Logins, migrate_as: MigrateAs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refusal the check before does not foresee (here a login that owns `alembic_version`
    and none of the other tables) is the server's own words, not a traceback."""
    login = logins.login(grants="giftledger_reader, giftledger_writer")
    database = logins.database(owner=login)
    _upgrade_to(logins.url(database), REVISION_BEFORE_HEAD)
    asyncio.run(
        _as_admin(logins.url(database), [f'ALTER TABLE alembic_version OWNER TO "{login}"'])
    )
    assert migrate_as(logins.url(database, login)) == 2
    said = _refusal(capsys)
    assert said.startswith(f"giftledger: migrate as {login} was refused: must be owner of table")
    assert said.endswith(
        f"The database stays at revision {REVISION_BEFORE_HEAD}; migrations run as the login that"
        " owns the schema's tables (README, Security: Roles)"
    )


def test_migrate_on_a_database_newer_than_this_giftledger_says_so(
    logins: Logins, migrate_as: MigrateAs, capsys: pytest.CaptureFixture[str]
) -> None:
    database = logins.database(owner=None)
    asyncio.run(
        _as_admin(
            logins.url(database),
            [
                "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
                "INSERT INTO alembic_version VALUES ('9999')",
            ],
        )
    )
    assert migrate_as(logins.url(database)) == 2
    assert _refusal(capsys) == (
        "giftledger: the database schema is at revision 9999, newer than this giftledger knows"
        f" (its latest is {head_revision()}): run a newer giftledger"
    )
