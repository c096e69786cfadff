"""Console sessions: a token exchanged at sign-in for a session kept in this process's memory.

The browser holds only the session's id, a random value in an HttpOnly, SameSite=Strict cookie
(Secure when the console is served over TLS). Each session has its own CSRF token, which every
form that acts carries in a hidden field and which is compared, in constant time, on POST. A
session ends when it is signed out or `CONSOLE_SESSION_S` after sign-in; a restart of the API
process ends them all (sign in again).

Sessions are bounded twice, and a sign-in never ends another caller's session:
- one caller (a token's role and name) keeps at most `CONSOLE_SESSIONS_PER_CALLER_MAX`: their
  next sign-in ends their own oldest session;
- the process keeps at most `CONSOLE_SESSION_COUNT_MAX` in all: a sign-in that would pass it is
  refused (`SessionBookFullError`, with the seconds until the first session ends).
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from services.api.auth import OPERATOR, Caller

SESSION_COUNT_MAX: Final = 10_000
SESSIONS_PER_CALLER_MAX: Final = 10
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


class SessionBookFullError(Exception):
    """Every one of the `count_max` sessions is live and another caller's: no session is opened
    until the first of them ends, `retry_after_s` from now."""

    def __init__(self, count_max: int, retry_after_s: int) -> None:
        super().__init__(f"{count_max} console sessions are open, the most this process keeps")
        self.retry_after_s = retry_after_s


class SessionBook:
    """The live sessions of one API process.

    Every session lasts `session_s`, so the order sessions were opened in is the order they
    expire in: both dicts keep it (a dict keeps its insertion order), and the oldest session,
    overall or of a caller, is the first."""

    def __init__(
        self,
        session_s: int,
        count_max: int = SESSION_COUNT_MAX,
        clock_s: Callable[[], float] = time.monotonic,
        *,
        per_caller_max: int = SESSIONS_PER_CALLER_MAX,
    ) -> None:
        assert session_s > 0, session_s
        assert count_max > 0, count_max
        assert per_caller_max > 0, per_caller_max
        self.session_s = session_s
        self._count_max = count_max
        self._per_caller_max = per_caller_max
        self._clock_s = clock_s
        self._sessions: dict[str, ConsoleSession] = {}
        # Each caller's session ids, oldest first (the values are unused).
        self._ids_by_caller: dict[Caller, dict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def count_of(self, caller: Caller) -> int:
        """How many sessions `caller` has (expired ones not yet forgotten included)."""
        return len(self._ids_by_caller.get(caller, {}))

    def open(self, caller: Caller) -> ConsoleSession:
        """A new session for `caller`, valid for `session_s` from now; the caller's own oldest
        ends when they have `per_caller_max`. Raises `SessionBookFullError` when `count_max`
        sessions of other callers are live."""
        now = self._clock_s()
        self._drop_expired(now)
        own = self._ids_by_caller.get(caller, {})
        while len(own) >= self._per_caller_max:
            self.close(next(iter(own)))
        if len(self._sessions) >= self._count_max:
            first = next(iter(self._sessions.values()))
            retry_after_s = max(1, math.ceil(first.expires_at_monotonic_s - now))
            raise SessionBookFullError(self._count_max, retry_after_s)
        session = ConsoleSession(
            session_id=secrets.token_urlsafe(SESSION_ID_BYTES),
            caller=caller,
            csrf_token=secrets.token_urlsafe(CSRF_TOKEN_BYTES),
            expires_at_monotonic_s=now + self.session_s,
        )
        self._sessions[session.session_id] = session
        self._ids_by_caller.setdefault(caller, {})[session.session_id] = None
        return session

    def find(self, session_id: str | None) -> ConsoleSession | None:
        """The live session of this id, or None (unknown, expired: then forgotten)."""
        if not session_id or len(session_id) > SESSION_ID_LENGTH_MAX:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at_monotonic_s <= self._clock_s():
            self.close(session_id)
            return None
        return session

    def close(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        own = self._ids_by_caller[session.caller]
        del own[session_id]
        if not own:
            del self._ids_by_caller[session.caller]

    def _drop_expired(self, now: float) -> None:
        """Forget the sessions that have ended: the first ones, in the order they expire."""
        while self._sessions:
            first = next(iter(self._sessions.values()))
            if first.expires_at_monotonic_s > now:
                return
            self.close(first.session_id)
