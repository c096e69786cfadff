"""Signing in to the console under a flood, over HTTP on the API app and the test database: one
caller's sign-ins, however many, end only their own oldest sessions; a process whose sessions
are all taken refuses a sign-in with 503 and Retry-After and ends no session; an address that
has spent its failed sign-ins is answered 429 with Retry-After, a known token too, while other
addresses sign in and other sessions stay. The windows' arithmetic, on a clock of the test's.

Each HTTP test builds one app (one process's sessions) and a browser per person on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.app.bootstrap import build_api_app
from services.console.sign_in_limits import SignInLimits, source_of
from tests.console_http import FINANCE_TOKEN, OPERATOR_TOKEN, SESSION_S, console_settings, sign_in

Browsers = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]
LOOPBACK = "127.0.0.1"


@contextlib.asynccontextmanager
async def _one_app(engine: AsyncEngine, **settings: Any) -> AsyncIterator[Browsers]:
    """One API app (one process's console sessions) and a factory of browsers on it, each with
    cookies of its own."""
    app = build_api_app(engine, console_settings(**settings))

    @contextlib.asynccontextmanager
    async def browser(address: str = LOOPBACK) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app, client=(address, 50_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as client:
            yield client

    yield browser


async def _signed_in(client: httpx.AsyncClient) -> bool:
    answer = await client.get("/console/operator")
    assert answer.status_code in (200, 401), answer.status_code
    return answer.status_code == 200


async def test_a_flood_of_one_operators_sign_ins_leaves_another_operators_session_valid(
    engine: AsyncEngine,
) -> None:
    per_caller = 3
    async with (
        _one_app(engine, console_sessions_per_caller_max=per_caller) as browser,
        browser() as finance,
        browser() as first_operator,
        browser() as flood,
    ):
        assert (await sign_in(finance, FINANCE_TOKEN)).status_code == 303
        assert (await sign_in(first_operator, OPERATOR_TOKEN)).status_code == 303
        for _ in range(per_caller * 5):
            flood.cookies.clear()
            assert (await sign_in(flood, OPERATOR_TOKEN)).status_code == 303
        assert await _signed_in(finance)
        assert await _signed_in(flood)
        assert not await _signed_in(first_operator)  # the operator's own oldest session ended


async def test_when_every_session_is_taken_a_sign_in_is_refused_and_ends_none(
    engine: AsyncEngine,
) -> None:
    async with (
        _one_app(engine, console_session_count_max=2) as browser,
        browser() as operator,
        browser() as operator_again,
        browser() as finance,
    ):
        assert (await sign_in(operator, OPERATOR_TOKEN)).status_code == 303
        assert (await sign_in(operator_again, OPERATOR_TOKEN)).status_code == 303
        refused = await sign_in(finance, FINANCE_TOKEN)
        assert refused.status_code == 503
        assert 0 < int(refused.headers["retry-after"]) <= SESSION_S
        assert "Every console session this process keeps is taken" in refused.text
        assert "giftledger_console=" not in "".join(refused.headers.get_list("set-cookie"))
        assert await _signed_in(operator)
        assert await _signed_in(operator_again)
        assert not await _signed_in(finance)


async def test_an_address_past_its_failed_sign_ins_is_answered_429_and_others_sign_in(
    engine: AsyncEngine,
) -> None:
    failures_max, window_s = 3, 600
    async with (
        _one_app(
            engine, console_sign_in_failures_max=failures_max, console_sign_in_window_s=window_s
        ) as browser,
        browser() as finance,
        browser("203.0.113.7") as guesser,
        browser("198.51.100.20") as operator,
    ):
        assert (await sign_in(finance, FINANCE_TOKEN)).status_code == 303
        for attempt in range(failures_max):
            assert (await sign_in(guesser, f"guess-{attempt}")).status_code == 401
        for token in ("guess-again", OPERATOR_TOKEN):
            limited = await sign_in(guesser, token)
            assert limited.status_code == 429
            assert 0 < int(limited.headers["retry-after"]) <= window_s
            assert "Too many failed sign-ins from your address" in limited.text
            assert "giftledger_console=" not in "".join(limited.headers.get_list("set-cookie"))
        assert not await _signed_in(guesser)
        assert await _signed_in(finance)
        assert (await sign_in(operator, OPERATOR_TOKEN)).status_code == 303
        assert await _signed_in(operator)


def test_a_sources_failures_count_until_its_window_ends() -> None:
    now = [100.0]
    limits = SignInLimits(2, 60, clock_s=lambda: now[0])
    limits.record_failure("a")
    now[0] += 30
    assert limits.retry_after_s("a") is None
    limits.record_failure("a")
    limits.record_failure("b")
    assert limits.retry_after_s("a") == 30
    assert limits.retry_after_s("b") is None
    now[0] += 29.5
    assert limits.retry_after_s("a") == 1
    now[0] += 0.5
    assert limits.retry_after_s("a") is None
    assert len(limits) == 1  # a's window ended and was forgotten; b's goes on


def test_the_windows_kept_are_bounded_the_oldest_forgotten_first() -> None:
    now = [0.0]
    limits = SignInLimits(1, 60, clock_s=lambda: now[0], source_count_max=2)
    for source in ("a", "b", "c"):
        now[0] += 1
        limits.record_failure(source)
    assert len(limits) == 2
    assert limits.retry_after_s("a") is None
    assert limits.retry_after_s("b") == 59  # failed at 2, now 3
    assert limits.retry_after_s("c") == 60


def test_an_ipv6_address_counts_with_its_64_and_an_ipv4_mapped_one_as_ipv4() -> None:
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::2")
    assert source_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of("192.0.2.1") == "192.0.2.1"
    assert source_of(None) == ""
    assert source_of("not-an-address") == "not-an-address"
