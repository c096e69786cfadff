"""How many failed console sign-ins one source may make, under one name and in all.

A sign-in gives a name (the one `API_TOKENS` gives the token) and a token; it fails when the
token is unknown or is not that name's. A source may fail at most `CONSOLE_SIGN_IN_FAILURES_MAX`
times under one name in a window of `CONSOLE_SIGN_IN_WINDOW_S` that starts at that name's first
failure from it; once they are spent, every sign-in from the source under that name (with a
known token too, so that the answer tells nothing about the token) is refused with 429 and
Retry-After until the window ends, while the others behind the same address (a shared NAT, an
office proxy) still sign in under their own names. A source may fail at most
`CONSOLE_SIGN_IN_ADDRESS_FAILURES_MAX` times in all, whatever names it gives, in a window from
its first failure: past them every sign-in from it is refused the same way, so that guessing
under many names is stopped too. Sign-ins that give no name (a client that posts the token
alone) count under one name, the empty one.

A source is the client's address as the API sees it (uvicorn's, from `X-Forwarded-For` only
behind a proxy of `API_FORWARDED_ALLOW_IPS`); an IPv6 address counts with its /64, the block one
host is usually given. A successful sign-in does not give failures back. The windows are kept in
this process's memory, at most `WINDOW_COUNT_MAX` of sources and as many of (source, name): when
that many have failed within their windows, the oldest window is forgotten first. A name longer
than `NAME_LENGTH_MAX` or not of the characters a name may hold (no token has it) counts as the
empty name, so a window's key stays small.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

from schemas.events import OPERATOR_NAME_LENGTH_MAX, OPERATOR_NAME_PATTERN

WINDOW_COUNT_MAX: Final = 10_000
IPV6_PREFIX_LENGTH: Final = 64
NAME_LENGTH_MAX: Final = OPERATOR_NAME_LENGTH_MAX
_NAME: Final = re.compile(OPERATOR_NAME_PATTERN)
NO_NAME: Final = ""


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


def name_of(given: str | None) -> str:
    """The name a sign-in counts under: the name given, or `NO_NAME` for none, or for one no
    token can have (too long, or characters a name does not hold)."""
    if not given or len(given) > NAME_LENGTH_MAX or _NAME.fullmatch(given) is None:
        return NO_NAME
    return given


@dataclass(slots=True)
class _Window:
    started_at_s: float
    failure_count: int


class _Windows:
    """The failures of each key within its window (monotonic seconds), at most `count_max`
    windows, the oldest forgotten first."""

    def __init__(self, failures_max: int, window_s: int, count_max: int) -> None:
        assert failures_max > 0, failures_max
        assert window_s > 0, window_s
        assert count_max > 0, count_max
        self.failures_max = failures_max
        self.window_s = window_s
        self._count_max = count_max
        # Oldest window first: every window lasts `window_s`, so the first ends first.
        self._windows: dict[Hashable, _Window] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after_s(self, key: Hashable, now: float) -> int | None:
        self._drop_ended(now)
        window = self._windows.get(key)
        if window is None or window.failure_count < self.failures_max:
            return None
        return max(1, math.ceil(window.started_at_s + self.window_s - now))

    def record_failure(self, key: Hashable, now: float) -> None:
        self._drop_ended(now)
        window = self._windows.get(key)
        if window is not None:
            window.failure_count += 1
            return
        while len(self._windows) >= self._count_max:
            del self._windows[next(iter(self._windows))]
        self._windows[key] = _Window(started_at_s=now, failure_count=1)

    def _drop_ended(self, now: float) -> None:
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if window.started_at_s + self.window_s > now:
                return
            del self._windows[key]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a sign-in is refused for now: `whole_address` when the address has spent its
    failures under every name, else only under the name given; and the whole seconds until the
    window ends (at least 1)."""

    retry_after_s: int
    whole_address: bool


class SignInLimits:
    """The failed sign-ins of each source under each name, and of each source in all."""

    def __init__(
        self,
        failures_max: int,
        window_s: int,
        *,
        address_failures_max: int,
        clock_s: Callable[[], float] = time.monotonic,
        window_count_max: int = WINDOW_COUNT_MAX,
    ) -> None:
        assert address_failures_max >= failures_max, (address_failures_max, failures_max)
        self._clock_s = clock_s
        self._by_name = _Windows(failures_max, window_s, window_count_max)
        self._by_source = _Windows(address_failures_max, window_s, window_count_max)

    @property
    def failures_max(self) -> int:
        return self._by_name.failures_max

    @property
    def address_failures_max(self) -> int:
        return self._by_source.failures_max

    @property
    def window_s(self) -> int:
        return self._by_name.window_s

    def __len__(self) -> int:
        """The windows kept, of sources and of (source, name) together."""
        return len(self._by_source) + len(self._by_name)

    def refusal(self, source: str, name: str) -> Refusal | None:
        """None when `source` may try to sign in as `name` (`name_of`); else why not, and until
        when."""
        now = self._clock_s()
        address_s = self._by_source.retry_after_s(source, now)
        if address_s is not None:
            return Refusal(address_s, whole_address=True)
        name_s = self._by_name.retry_after_s((source, name), now)
        if name_s is not None:
            return Refusal(name_s, whole_address=False)
        return None

    def record_failure(self, source: str, name: str) -> None:
        """One more failed sign-in from `source` as `name` (`name_of`)."""
        now = self._clock_s()
        self._by_source.record_failure(source, now)
        self._by_name.record_failure((source, name), now)
