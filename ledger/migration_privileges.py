"""What `giftledger migrate` needs of its login, checked before any migration runs.

Migrations run as the login that owns the schema (`DATABASE_URL`), which need not be a superuser.
The pending migrations may create tables in the schema `public`, alter the tables there (only
their owner may), and create the project's roles and make members of them (0005
`giftledger_reader` and 0007 `giftledger_writer`, each granted to the login itself unless it is a
superuser; 0019 `giftledger_analyst`, made a member of `giftledger_reader`). Roles are the
server's, not a database's: once a superuser's run made them, another database's migrations by a
login without CREATEROLE only need that login to be a member of the reader and the writer.

`privilege_problems` reads the catalog and says what the login lacks for the revisions still to
apply, each with what gives it, so that `migrate` refuses before it changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

READER_ROLE: Final = "giftledger_reader"
WRITER_ROLE: Final = "giftledger_writer"
ANALYST_ROLE: Final = "giftledger_analyst"
# From PostgreSQL 16 on, CREATEROLE alone no longer lets a login grant a role it did not create:
# that takes the role's ADMIN OPTION.
CREATEROLE_GRANTS_BEFORE_SERVER_VERSION_NUM: Final = 160000


@dataclass(frozen=True)
class RoleMembership:
    """Migration `revision` makes `member` (None: the login running it, unless a superuser) a
    member of `role` when it is not one; `ROLES_CREATED` says which migration creates each role
    when it is missing."""

    revision: str
    role: str
    member: str | None


ROLE_MEMBERSHIPS: Final = (
    RoleMembership("0005", READER_ROLE, None),
    RoleMembership("0007", WRITER_ROLE, None),
    RoleMembership("0019", READER_ROLE, ANALYST_ROLE),
)
ROLES_CREATED: Final = {"0005": READER_ROLE, "0007": WRITER_ROLE, "0019": ANALYST_ROLE}

# The login, what it may do, and who owns the schema's tables once there are some (the owner of
# `alembic_version`, made by the first migration run).
_LOGIN_FACTS: Final = text(
    """
    SELECT r.rolname AS name,
           r.rolsuper AS superuser,
           r.rolcreaterole AS creates_roles,
           current_setting('server_version_num')::integer AS server_version_num,
           has_schema_privilege('public', 'CREATE') AS creates_in_public,
           pg_get_userbyid(v.relowner) AS schema_owner,
           v.relowner IS NULL OR pg_has_role(v.relowner, 'MEMBER') AS acts_as_schema_owner
    FROM pg_roles r
    LEFT JOIN pg_class v ON v.oid = to_regclass('public.alembic_version')
    WHERE r.rolname = current_user
    """
)
_ROLE_EXISTS: Final = text("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :role)")
_IS_MEMBER: Final = text("SELECT pg_has_role(:member, :role, 'MEMBER')")  # directly or not
_HOLDS_ADMIN_OPTION: Final = text("SELECT pg_has_role(:role, 'MEMBER WITH ADMIN OPTION')")


@dataclass(frozen=True)
class Login:
    """The login running the migrations, as the catalog describes it."""

    name: str
    superuser: bool
    creates_roles: bool
    server_version_num: int
    creates_in_public: bool
    schema_owner: str | None
    acts_as_schema_owner: bool

    def grants_any_role(self) -> bool:
        """May grant a role without holding its ADMIN OPTION."""
        return self.superuser or (
            self.creates_roles
            and self.server_version_num < CREATEROLE_GRANTS_BEFORE_SERVER_VERSION_NUM
        )


@dataclass(frozen=True)
class PrivilegeProblem:
    """What the login lacks (`missing`, a clause) and what gives it: a role a superuser grants to
    a member, or something else to do (`remedy`)."""

    missing: str
    remedy: str | None = None
    grant: tuple[str, str] | None = None  # (role, member)


async def migrating_login(connection: AsyncConnection) -> Login:
    row = (await connection.execute(_LOGIN_FACTS)).mappings().one()
    return Login(**row)


def not_the_owner(login: Login) -> PrivilegeProblem:
    return PrivilegeProblem(
        f"the schema's tables belong to {login.schema_owner}, as whom {login.name} may"
        " not act, and only a table's owner may alter it",
        remedy=f"run giftledger migrate as {login.schema_owner}",
    )


async def privilege_problems(
    connection: AsyncConnection, login: Login, pending: list[str]
) -> list[PrivilegeProblem]:
    """What `login` lacks to apply the `pending` revisions; none when nothing is pending or the
    login is a superuser."""
    if not pending or login.superuser:
        return []
    problems: list[PrivilegeProblem] = []
    if not login.acts_as_schema_owner:
        problems.append(not_the_owner(login))
    if not login.creates_in_public:
        problems.append(
            PrivilegeProblem(
                f"{login.name} may not create tables in the schema public (it lacks CREATE on"
                " it, which the database's owner has)",
                remedy="run giftledger migrate as the database's owner",
            )
        )
    created: set[str] = set()
    for revision, role in ROLES_CREATED.items():
        if revision not in pending or await connection.scalar(_ROLE_EXISTS, {"role": role}):
            continue
        if login.creates_roles:
            created.add(role)  # its creator may then grant it
            continue
        problems.append(
            PrivilegeProblem(
                f"the role {role} does not exist and {login.name} may not create it (it lacks"
                " CREATEROLE)",
                remedy="run giftledger migrate once on this server as a superuser (the roles are"
                " the server's: every database's migrations find them then)",
            )
        )
    for membership in ROLE_MEMBERSHIPS:
        if membership.revision in pending:
            problem = await _membership_problem(connection, login, membership, created)
            if problem is not None:
                problems.append(problem)
    return problems


async def _membership_problem(
    connection: AsyncConnection, login: Login, membership: RoleMembership, created: set[str]
) -> PrivilegeProblem | None:
    """None when `membership` is there or the login may make it, and when one of its roles is
    missing and not made by the login (`privilege_problems` says so already)."""
    role, member = membership.role, membership.member or login.name
    if role in created or login.grants_any_role():
        return None  # a role's creator holds its ADMIN OPTION
    if not await connection.scalar(_ROLE_EXISTS, {"role": role}):
        return None
    if await connection.scalar(_HOLDS_ADMIN_OPTION, {"role": role}):
        return None
    if member not in created:
        if not await connection.scalar(_ROLE_EXISTS, {"role": member}):
            return None
        if await connection.scalar(_IS_MEMBER, {"role": role, "member": member}):
            return None
    lacks = f"the ADMIN OPTION on {role}"
    if login.server_version_num < CREATEROLE_GRANTS_BEFORE_SERVER_VERSION_NUM:
        lacks += " and CREATEROLE"
    if member == login.name:
        missing = f"{member} is not a member of {role} and may not make itself one"
    else:
        missing = f"{member} is not a member of {role} and {login.name} may not make it one"
    return PrivilegeProblem(f"{missing} (it lacks {lacks})", grant=(role, member))


def refusal_message(login: str, problems: list[PrivilegeProblem]) -> str:
    """One paragraph: what the login lacks, then what gives it."""
    roles_by_member: dict[str, list[str]] = {}
    for problem in problems:
        if problem.grant is not None:
            role, member = problem.grant
            roles_by_member.setdefault(member, []).append(role)
    remedies = [
        f'as a superuser, run once GRANT {", ".join(roles)} TO "{member}", then migrate again'
        for member, roles in roles_by_member.items()
    ]
    remedies += list(dict.fromkeys(p.remedy for p in problems if p.remedy is not None))
    return (
        f"migrate cannot run as {login}: {'; '.join(p.missing for p in problems)}. To go on,"
        f" {'; '.join(remedies)}. Nothing was migrated (README, Security: Roles)"
    )
