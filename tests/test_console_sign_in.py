"""Signing in to the console under a flood, over HTTP on the API app and the test database: one
caller's sign-ins, however many, end only their own oldest sessions; a process whose sessions
are all taken refuses a sign-in with 503 and Retry-After and ends no session.

Each test builds one app (one process's sessions) and a browser per person on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.app.bootstrap import build_api_app
from tests.console_http import FINANCE_TOKEN, OPERATOR_TOKEN, SESSION_S, console_settings, sign_in

Browsers = Callable[[], contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@contextlib.asynccontextmanager
async def _one_app(engine: AsyncEngine, **settings: Any) -> AsyncIterator[Browsers]:
    """One API app (one process's console sessions) and a factory of browsers on it, each with
    cookies of its own."""
    app = build_api_app(engine, console_settings(**settings))

    @contextlib.asynccontextmanager
    async def browser() -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app)
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
