"""Load shedding: at most `API_CONCURRENCY_MAX` requests are handled at once; one more is
answered at once with 503, a JSON `detail` and `Retry-After`, instead of queueing behind the
database pool. `/healthz` is shed like any other route: a server that sheds load is busy."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

RETRY_AFTER_S = 1
_BODY = json.dumps(
    {"detail": "the finance API is handling as many requests as it may: try again shortly"}
).encode()


class ConcurrencyLimit:
    """ASGI middleware counting the HTTP requests in hand."""

    def __init__(self, app: ASGIApp, concurrency_max: int) -> None:
        if concurrency_max < 1:
            raise ValueError("concurrency_max must be at least 1")
        self.app = app
        self.concurrency_max = concurrency_max
        self.in_hand = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_hand >= self.concurrency_max:
            await self._shed(send)
            return
        self.in_hand += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_hand -= 1

    async def _shed(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_BODY)).encode()),
                    (b"retry-after", str(RETRY_AFTER_S).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _BODY})
