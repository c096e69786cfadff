"""Console sessions: a token exchanged at sign-in for a session kept in this process's memory.

The browser holds only the session's id, a random value in an HttpOnly, SameSite=Strict cookie
(Secure when the console is served over TLS). Each session has its own CSRF token, which every
form that acts carries in a hidden field and which is compared, in constant time, on POST. A
session ends when it is signed out or `CONSOLE_SESSION_S` after sign-in; a restart of the API
process ends them all (sign in again). At most `SESSION_COUNT_MAX` sessions are kept: the one
closest to expiring makes room for a new one.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from services.api.auth import OPERATOR, Caller

SESSION_COUNT_MAX: Final = 10_000
SESSION_ID_BYTES: Final = 32
CSRF_TOKEN_BYTES: Final = 32
SESSION_ID_LENGTH_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """Who signed in, the CSRF token of their forms, and when the session ends (monotonic)."""

    session_id: str
    caller: Caller
    csrf_token: str
    expires_at_monotonic_s: float

    @property
    def may_act(self) -> bool:
        """Only the `operator` role acts; `finance` reads."""
        return self.caller.role == OPERATOR

    def csrf_matches(self, given: str | None) -> bool:
        if not given:
            return False
        return hmac.compare_digest(given.encode(), self.csrf_token.encode())


class SessionBook:
    """The live sessions of one API process."""

    def __init__(
        self,
        session_s: int,
        count_max: int = SESSION_COUNT_MAX,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        assert session_s > 0, session_s
        assert count_max > 0, count_max
        self.session_s = session_s
        self._count_max = count_max
        self._clock_s = clock_s
        self._sessions: dict[str, ConsoleSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, caller: Caller) -> ConsoleSession:
        """A new session for `caller`, valid for `session_s` from now."""
        now = self._clock_s()
        self._drop_expired(now)
        while len(self._sessions) >= self._count_max:
            closest = min(self._sessions.values(), key=lambda s: s.expires_at_monotonic_s)
            del self._sessions[closest.session_id]
        session = ConsoleSession(
            session_id=secrets.token_urlsafe(SESSION_ID_BYTES),
            caller=caller,
            csrf_token=secrets.token_urlsafe(CSRF_TOKEN_BYTES),
            expires_at_monotonic_s=now + self.session_s,
        )
        self._sessions[session.session_id] = session
        return session

    def find(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of this id, or None (unknown, expired: then forgotten)."""
        if not session_id or len(session_id) > SESSION_ID_LENGTH_MAX:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at_monotonic_s <= self._clock_s():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _drop_expired(self, now: float) -> None:
        expired = [id_ for id_, s in self._sessions.items() if s.expires_at_monotonic_s <= now]
        for session_id in expired:
            del self._sessions[session_id]
