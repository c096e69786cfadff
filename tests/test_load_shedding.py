"""The finance API sheds load: past API_CONCURRENCY_MAX requests in hand, one more is answered
503 at once with Retry-After, as the OpenAPI document says of every route, and the requests in
hand finish normally."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from services.api.load_shedding import RETRY_AFTER_S, ConcurrencyLimit
from services.api.server import create_app
from services.runtime.settings import Settings
from tests.api_contract import breaches
from tests.api_server import FINANCE_TOKEN, api_settings

WAIT_S = 5.0


class HeldApp:
    """An ASGI app whose requests wait until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started.set()
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


async def test_a_request_past_the_limit_is_answered_503_with_retry_after_at_once() -> None:
    held = HeldApp()
    limited = ConcurrencyLimit(held, concurrency_max=1)
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        first = asyncio.create_task(client.get("/v1/anything"))
        await asyncio.wait_for(held.started.wait(), WAIT_S)
        shed = await asyncio.wait_for(client.get("/v1/anything"), WAIT_S)
        held.release.set()
        served = await asyncio.wait_for(first, WAIT_S)
        again = await asyncio.wait_for(client.get("/v1/anything"), WAIT_S)
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == str(RETRY_AFTER_S)
    assert "try again" in shed.json()["detail"]
    assert served.status_code == 200
    assert again.status_code == 200
    assert limited.in_hand == 0


async def test_the_api_takes_its_limit_from_api_concurrency_max(engine: AsyncEngine) -> None:
    app = create_app(engine, Settings(api_concurrency_max=3))
    limits = [
        m.kwargs
        for m in app.user_middleware
        if getattr(m.cls, "__name__", "") == "ConcurrencyLimit"
    ]
    assert limits == [{"concurrency_max": 3}]


async def test_a_shed_request_is_the_503_every_route_documents(engine: AsyncEngine) -> None:
    app = create_app(engine, api_settings().model_copy(update={"api_concurrency_max": 1}))
    started, release = asyncio.Event(), asyncio.Event()

    @app.get("/held")
    async def held() -> None:
        started.set()
        await release.wait()

    document = app.openapi()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        first = asyncio.create_task(client.get("/held"))
        await asyncio.wait_for(started.wait(), WAIT_S)
        headers = {"Authorization": f"Bearer {FINANCE_TOKEN}"}
        shed = {
            label: await asyncio.wait_for(client.get(path, headers=headers), WAIT_S)
            for label, path in (
                ("GET /healthz", "/healthz"),
                ("GET /metrics", "/metrics"),
                ("GET /v1/cashouts", "/v1/cashouts"),
                ("GET /v1/events/{event_id}", "/v1/events/e1"),
            )
        }
        release.set()
        assert (await asyncio.wait_for(first, WAIT_S)).status_code == 200
    for label, answer in shed.items():
        assert answer.status_code == 503, label
        assert breaches(document, label, 503, answer.headers, answer.content) == [], label
