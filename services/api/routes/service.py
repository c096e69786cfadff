"""The service's own routes: `/healthz` (no token) and `/metrics`.

Both read the database the API reads (the replica of `API_DATABASE_URL` when set): `/healthz`
whether it answers, `/metrics` how far behind the primary it is (services/api/replica_lag.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from services.api.auth import READ_ROLES, require_role
from services.api.deps import reader_connection
from services.api.errors import DATABASE_RETRY_AFTER_S
from services.api.models import ErrorDocument, HealthDocument
from services.api.replica_lag import ReplicaLag, read_replica_lag, record_replica_lag
from services.api.responses import RETRY_AFTER_HEADER, token_responses, unavailable

logger = logging.getLogger(__name__)

HEALTH_CHECK_TIMEOUT_S: Final = 5.0
LAG_READ_TIMEOUT_S: Final = 2.0
METRICS_MEDIA_TYPE: Final = "text/plain"

router = APIRouter()


@router.get(
    "/healthz",
    summary="Whether the API can read the database (no token needed)",
    response_model=HealthDocument,
    responses=unavailable(
        model=HealthDocument | ErrorDocument,
        description='The database does not answer (`{"status": "unavailable"}`), or the API is '
        "handling as many requests as it may (`API_CONCURRENCY_MAX`, a `detail`): try again "
        "after `Retry-After` seconds.",
    ),
)
async def healthz(request: Request) -> JSONResponse:
    state = request.app.state
    try:
        async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
            async with reader_connection(state.read_engine, state.database_role) as conn:
                await conn.execute(text("SELECT 1"))
    except (OSError, TimeoutError, SQLAlchemyError) as error:
        logger.warning("health check failed: %s", type(error).__name__)
        return JSONResponse(
            {"status": "unavailable"},
            status_code=503,
            headers={RETRY_AFTER_HEADER: str(DATABASE_RETRY_AFTER_S)},
        )
    return JSONResponse({"status": "ok"})


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    dependencies=[Depends(require_role(READ_ROLES))],
    response_class=Response,
    response_description=f"The Prometheus text format (`{CONTENT_TYPE_LATEST}`).",
    responses={
        **token_responses(READ_ROLES),
        200: {"content": {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}}},
    },
)
async def metrics(request: Request) -> Response:
    record_replica_lag(await _replica_lag(request))
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def _replica_lag(request: Request) -> ReplicaLag | None:
    """The read database's lag, or None when it does not answer within LAG_READ_TIMEOUT_S (the
    metrics are served all the same)."""
    state = request.app.state
    try:
        async with asyncio.timeout(LAG_READ_TIMEOUT_S):
            async with reader_connection(state.read_engine, state.database_role) as conn:
                return await read_replica_lag(conn)
    except (OSError, TimeoutError, SQLAlchemyError) as error:
        logger.warning("replica lag not read: %s", type(error).__name__)
        return None
