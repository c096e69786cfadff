"""Bearer tokens of the finance API: only their SHA-256 digests are configured, never the tokens.
Each digest has a role and a name (`services.runtime.settings.NamedToken`): the name is who the
operator actions log records as acting.

A request's token is hashed and compared, in constant time (`hmac.compare_digest`), with every
configured digest: the comparison never stops at the first match, so the time taken says nothing
about which digest, if any, matched. No token or an unknown one is 401 (with
`WWW-Authenticate: Bearer`); a known token whose role may not use the route is 403.
`require_role` hands the route the caller (`Caller`: role and name).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.runtime.settings import NamedToken, named_tokens

FINANCE: Final = "finance"
OPERATOR: Final = "operator"
ROLES: Final = (FINANCE, OPERATOR)
# Who may read: every route that only reads. Routes that act (operator actions) use OPERATOR_ROLES.
READ_ROLES: Final = frozenset(ROLES)
OPERATOR_ROLES: Final = frozenset({OPERATOR})
TOKEN_LENGTH_MAX: Final = 4_096

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token whose SHA-256 hex digest is a key of `API_TOKENS`; its value is the "
    "token's role (`finance` or `operator`) and name.",
)

_UNAUTHENTICATED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="a valid bearer token is required",
    headers={"WWW-Authenticate": "Bearer"},
)


def token_digest(token: str) -> str:
    """The lowercase hex SHA-256 of a token: what `API_TOKENS` holds for it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the role and the name of its token."""

    role: str
    name: str


class TokenBook:
    """The configured digests with their roles and names (`API_TOKENS`, either form)."""

    def __init__(self, tokens: Mapping[str, str | NamedToken]) -> None:
        named = named_tokens(tokens)
        for digest, token in named.items():
            assert len(digest) == 64, digest
            assert token.role in ROLES, token.role
        self._entries = [
            (bytes.fromhex(digest), Caller(token.role, token.name))
            for digest, token in sorted(named.items())
        ]

    def caller_of(self, token: str) -> Caller | None:
        """The token's caller, or None for an unknown token, comparing against every digest."""
        if not token or len(token) > TOKEN_LENGTH_MAX:
            return None
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found: Caller | None = None
        for known, caller in self._entries:
            if hmac.compare_digest(digest, known):
                found = caller
        return found


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def require_role(allowed: Iterable[str]) -> Callable[[Request, Credentials], Awaitable[Caller]]:
    """A dependency that lets through only a known token whose role is in `allowed`, and gives
    the route its `Caller`."""
    allowed_roles = frozenset(allowed)
    assert allowed_roles, "a route must allow some role"
    assert allowed_roles <= frozenset(ROLES), allowed_roles

    async def check(request: Request, credentials: Credentials) -> Caller:
        book: TokenBook = request.app.state.token_book
        if credentials is None:
            raise _UNAUTHENTICATED
        caller = book.caller_of(credentials.credentials)
        if caller is None:
            raise _UNAUTHENTICATED
        if caller.role not in allowed_roles:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"the {caller.role} role may not use this route",
            )
        return caller

    return check
