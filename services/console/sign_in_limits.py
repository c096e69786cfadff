"""How many failed console sign-ins one source may make: at most `CONSOLE_SIGN_IN_FAILURES_MAX`
in a window of `CONSOLE_SIGN_IN_WINDOW_S` that starts at its first failure; once they are spent,
every sign-in from the source (a known token too, so that the answer tells nothing about the
token) is refused with 429 and Retry-After until the window ends.

A source is the client's address as the API sees it (uvicorn's, from `X-Forwarded-For` only
behind a proxy of `API_FORWARDED_ALLOW_IPS`); an IPv6 address counts with its /64, the block one
host is usually given. A successful sign-in does not give failures back. The windows are kept in
this process's memory, at most `SOURCE_COUNT_MAX` of them: when that many sources have failed
within their windows, the oldest window is forgotten first.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

SOURCE_COUNT_MAX: Final = 10_000
IPV6_PREFIX_LENGTH: Final = 64


def source_of(host: str | None) -> str:
    """The source a client address counts under: an IPv4 address (or an IPv6-mapped one) as
    itself, an IPv6 address by its /64, anything else (no address, a Unix socket) as given."""
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX_LENGTH), strict=False))
    return str(address)


@dataclass(slots=True)
class _Window:
    started_at_s: float
    failure_count: int


class SignInLimits:
    """The failed sign-ins of each source within its window (monotonic seconds)."""

    def __init__(
        self,
        failures_max: int,
        window_s: int,
        clock_s: Callable[[], float] = time.monotonic,
        source_count_max: int = SOURCE_COUNT_MAX,
    ) -> None:
        assert failures_max > 0, failures_max
        assert window_s > 0, window_s
        assert source_count_max > 0, source_count_max
        self.failures_max = failures_max
        self.window_s = window_s
        self._clock_s = clock_s
        self._source_count_max = source_count_max
        # Oldest window first: every window lasts `window_s`, so the first ends first.
        self._windows: dict[str, _Window] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after_s(self, source: str) -> int | None:
        """None when `source` may try to sign in; else the whole seconds until its window
        ends (at least 1)."""
        now = self._clock_s()
        self._drop_ended(now)
        window = self._windows.get(source)
        if window is None or window.failure_count < self.failures_max:
            return None
        return max(1, math.ceil(window.started_at_s + self.window_s - now))

    def record_failure(self, source: str) -> None:
        """One more failed sign-in from `source`."""
        now = self._clock_s()
        self._drop_ended(now)
        window = self._windows.get(source)
        if window is not None:
            window.failure_count += 1
            return
        while len(self._windows) >= self._source_count_max:
            del self._windows[next(iter(self._windows))]
        self._windows[source] = _Window(started_at_s=now, failure_count=1)

    def _drop_ended(self, now: float) -> None:
        while self._windows:
            source, window = next(iter(self._windows.items()))
            if window.started_at_s + self.window_s > now:
                return
            del self._windows[source]
