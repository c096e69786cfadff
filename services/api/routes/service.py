"""The service's own routes: `/healthz` (no token) and `/metrics`."""

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
from services.api.responses import RETRY_AFTER_HEADER, token_responses, unavailable

logger = logging.getLogger(__name__)

HEALTH_CHECK_TIMEOUT_S: Final = 5.0
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
            async with reader_connection(state.engine, state.database_role) as conn:
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
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
