"""Signing in to the console under a flood, over HTTP on the API app and the test database: one
caller's sign-ins, however many, end only their own oldest sessions; a process whose sessions
are all taken refuses a sign-in with 503 and Retry-After and ends no session; an address that
has spent its failed sign-ins under a name is answered 429 with Retry-After under that name, a
known token too, while others sign in from it under their names, from other addresses, and other
sessions stay; an address that has spent its failures under many names is answered 429 under
every name. The windows' arithmetic, on a clock of the test's.

Each HTTP test builds one app (one process's sessions) and a browser per person on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.app.bootstrap import build_api_app
from services.console.sign_in_limits import NO_NAME, Refusal, SignInLimits, name_of, source_of
from services.runtime.settings import Settings
from tests.console_http import (
    FINANCE_NAME,
    FINANCE_TOKEN,
    OPERATOR_NAME,
    OPERATOR_TOKEN,
    SESSION_S,
    console_settings,
    sign_in,
)

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


async def test_one_operator_mistyping_behind_a_shared_address_locks_out_only_their_name(
    engine: AsyncEngine,
) -> None:
    failures_max, window_s = 3, 600
    shared = "203.0.113.8"  # one office's NAT
    async with (
        _one_app(
            engine,
            console_sign_in_failures_max=failures_max,
            console_sign_in_address_failures_max=10,
            console_sign_in_window_s=window_s,
        ) as browser,
        browser(shared) as mistyping,
        browser(shared) as colleague,
        browser(shared) as unnamed,
    ):
        for attempt in range(failures_max):
            failed = await sign_in(mistyping, f"typo-{attempt}", OPERATOR_NAME)
            assert failed.status_code == 401
            assert "That name and token are not known together." in failed.text
        limited = await sign_in(mistyping, OPERATOR_TOKEN, OPERATOR_NAME)
        assert limited.status_code == 429
        assert 0 < int(limited.headers["retry-after"]) <= window_s
        assert "Too many failed sign-ins from your address under that name" in limited.text
        assert not await _signed_in(mistyping)
        # The others behind the same address sign in, under their names or by token alone.
        assert (await sign_in(colleague, FINANCE_TOKEN, FINANCE_NAME)).status_code == 303
        assert await _signed_in(colleague)
        assert (await sign_in(unnamed, OPERATOR_TOKEN)).status_code == 303
        assert await _signed_in(unnamed)


async def test_a_known_token_under_another_name_is_refused_and_counted(
    engine: AsyncEngine,
) -> None:
    async with (
        _one_app(
            engine, console_sign_in_failures_max=2, console_sign_in_address_failures_max=10
        ) as browser,
        browser("203.0.113.10") as client,
    ):
        for _ in range(2):
            wrong_name = await sign_in(client, OPERATOR_TOKEN, FINANCE_NAME)
            assert wrong_name.status_code == 401
            assert "That name and token are not known together." in wrong_name.text
        assert not await _signed_in(client)
        assert (await sign_in(client, FINANCE_TOKEN, FINANCE_NAME)).status_code == 429
        assert (await sign_in(client, OPERATOR_TOKEN, OPERATOR_NAME)).status_code == 303
        assert await _signed_in(client)


async def test_a_flood_of_failed_sign_ins_over_many_names_stops_the_whole_address(
    engine: AsyncEngine,
) -> None:
    failures_max, address_failures_max, window_s = 3, 6, 600
    async with (
        _one_app(
            engine,
            console_sign_in_failures_max=failures_max,
            console_sign_in_address_failures_max=address_failures_max,
            console_sign_in_window_s=window_s,
        ) as browser,
        browser("203.0.113.9") as guesser,
        browser("203.0.113.9") as behind_the_same_address,
        browser("198.51.100.21") as elsewhere,
    ):
        for attempt in range(address_failures_max):
            guess = await sign_in(guesser, f"guess-{attempt}", f"name-{attempt}")
            assert guess.status_code == 401
        for client, token, name in (
            (guesser, OPERATOR_TOKEN, OPERATOR_NAME),
            (guesser, "guess-again", "a-new-name"),
            (behind_the_same_address, FINANCE_TOKEN, FINANCE_NAME),
            (behind_the_same_address, FINANCE_TOKEN, None),
        ):
            limited = await sign_in(client, token, name)
            assert limited.status_code == 429
            assert 0 < int(limited.headers["retry-after"]) <= window_s
            assert "Too many failed sign-ins from your address: try again in" in limited.text
        assert not await _signed_in(guesser)
        assert not await _signed_in(behind_the_same_address)
        assert (await sign_in(elsewhere, OPERATOR_TOKEN, OPERATOR_NAME)).status_code == 303
        assert await _signed_in(elsewhere)


def test_a_sources_failures_under_a_name_count_until_its_window_ends() -> None:
    now = [100.0]
    limits = SignInLimits(2, 60, address_failures_max=10, clock_s=lambda: now[0])
    limits.record_failure("a", "alice")
    now[0] += 30
    assert limits.refusal("a", "alice") is None
    limits.record_failure("a", "alice")
    limits.record_failure("b", "alice")
    assert limits.refusal("a", "alice") == Refusal(30, whole_address=False)
    assert limits.refusal("a", "bob") is None  # another name from the same address
    assert limits.refusal("a", NO_NAME) is None
    assert limits.refusal("b", "alice") is None
    now[0] += 29.5
    assert limits.refusal("a", "alice") == Refusal(1, whole_address=False)
    now[0] += 0.5
    assert limits.refusal("a", "alice") is None
    assert len(limits) == 2  # a's windows ended and were forgotten; b's go on


def test_a_sources_failures_under_many_names_count_together() -> None:
    now = [0.0]
    limits = SignInLimits(2, 60, address_failures_max=5, clock_s=lambda: now[0])
    for index in range(5):
        now[0] += 1
        assert limits.refusal("a", f"name-{index}") is None
        limits.record_failure("a", f"name-{index}")
    # The first failure from the address was at 1, now 5: every name waits 56 s, one never
    # tried too; another address does not.
    assert limits.refusal("a", "name-9") == Refusal(56, whole_address=True)
    assert limits.refusal("a", NO_NAME) == Refusal(56, whole_address=True)
    assert limits.refusal("b", "name-0") is None
    now[0] += 56
    assert limits.refusal("a", "name-9") is None


def test_the_windows_kept_are_bounded_the_oldest_forgotten_first() -> None:
    now = [0.0]
    limits = SignInLimits(1, 60, address_failures_max=1, clock_s=lambda: now[0], window_count_max=2)
    for source in ("a", "b", "c"):
        now[0] += 1
        limits.record_failure(source, "alice")
    assert len(limits) == 4  # two sources, two (source, name)
    assert limits.refusal("a", "alice") is None
    assert limits.refusal("b", "alice") == Refusal(59, whole_address=True)  # failed at 2, now 3
    assert limits.refusal("c", "alice") == Refusal(60, whole_address=True)
    # Under many names from one address, the windows of names stay bounded too.
    names = SignInLimits(
        1, 60, address_failures_max=1_000, clock_s=lambda: now[0], window_count_max=3
    )
    for index in range(100):
        names.record_failure("a", f"name-{index}")
    assert len(names) == 1 + 3


def test_a_name_no_token_can_have_counts_as_no_name() -> None:
    assert name_of("alice") == "alice"
    assert name_of("ops.bob@example") == "ops.bob@example"
    assert name_of(None) == name_of("") == NO_NAME
    assert name_of("x" * 65) == NO_NAME
    assert name_of("two words") == NO_NAME
    assert name_of("-leading") == NO_NAME


def test_the_address_bound_is_at_least_the_names() -> None:
    settings = Settings()
    assert settings.console_sign_in_failures_max == 10
    assert settings.console_sign_in_address_failures_max == 100
    with pytest.raises(ValidationError, match="CONSOLE_SIGN_IN_ADDRESS_FAILURES_MAX"):
        Settings(console_sign_in_failures_max=20, console_sign_in_address_failures_max=19)
    with pytest.raises(ValidationError):
        Settings(console_sign_in_address_failures_max=0)


def test_an_unset_address_bound_follows_a_larger_name_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A configuration that set only CONSOLE_SIGN_IN_FAILURES_MAX, up to its 1,000, stays
    valid: the address bound left unset is never below it."""
    monkeypatch.setenv("CONSOLE_SIGN_IN_FAILURES_MAX", "200")
    monkeypatch.delenv("CONSOLE_SIGN_IN_ADDRESS_FAILURES_MAX", raising=False)
    settings = Settings()
    assert settings.console_sign_in_failures_max == 200
    assert settings.console_sign_in_address_failures_max == 200
    monkeypatch.setenv("CONSOLE_SIGN_IN_ADDRESS_FAILURES_MAX", "150")
    with pytest.raises(ValidationError, match="CONSOLE_SIGN_IN_ADDRESS_FAILURES_MAX"):
        Settings()


def test_an_ipv6_address_counts_with_its_64_and_an_ipv4_mapped_one_as_ipv4() -> None:
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::2")
    assert source_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of("192.0.2.1") == "192.0.2.1"
    assert source_of(None) == ""
    assert source_of("not-an-address") == "not-an-address"
