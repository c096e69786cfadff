"""Bearer tokens of the finance API: only their SHA-256 digests are configured, never the tokens.

A request's token is hashed and compared, in constant time (`hmac.compare_digest`), with every
configured digest: the comparison never stops at the first match, so the time taken says nothing
about which digest, if any, matched. No token or an unknown one is 401 (with
`WWW-Authenticate: Bearer`); a known token whose role may not use the route is 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

FINANCE: Final = "finance"
OPERATOR: Final = "operator"
ROLES: Final = (FINANCE, OPERATOR)
# Who may read: every route of the API today. Operator-only routes (actions) will use OPERATOR.
READ_ROLES: Final = frozenset(ROLES)
OPERATOR_ROLES: Final = frozenset({OPERATOR})
TOKEN_LENGTH_MAX: Final = 4_096

BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token whose SHA-256 hex digest is a key of `API_TOKENS`; its value is the "
    "token's role (`finance` or `operator`).",
)

_UNAUTHENTICATED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="a valid bearer token is required",
    headers={"WWW-Authenticate": "Bearer"},
)


def token_digest(token: str) -> str:
    """The lowercase hex SHA-256 of a token: what `API_TOKENS` holds for it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenBook:
    """The configured digests and their roles."""

    def __init__(self, roles_by_digest: Mapping[str, str]) -> None:
        for digest, role in roles_by_digest.items():
            assert len(digest) == 64, digest
            assert role in ROLES, role
        self._entries = [
            (bytes.fromhex(digest), role) for digest, role in sorted(roles_by_digest.items())
        ]

    def role_of(self, token: str) -> str | None:
        """The token's role, or None for an unknown token, comparing against every digest."""
        if not token or len(token) > TOKEN_LENGTH_MAX:
            return None
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found: str | None = None
        for known, role in self._entries:
            if hmac.compare_digest(digest, known):
                found = role
        return found


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def require_role(allowed: Iterable[str]) -> Callable[[Request, Credentials], Awaitable[str]]:
    """A dependency that lets through only a known token whose role is in `allowed`."""
    allowed_roles = frozenset(allowed)
    assert allowed_roles, "a route must allow some role"
    assert allowed_roles <= frozenset(ROLES), allowed_roles

    async def check(request: Request, credentials: Credentials) -> str:
        book: TokenBook = request.app.state.token_book
        if credentials is None:
            raise _UNAUTHENTICATED
        role = book.role_of(credentials.credentials)
        if role is None:
            raise _UNAUTHENTICATED
        if role not in allowed_roles:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"the {role} role may not use this route",
            )
        return role

    return check
