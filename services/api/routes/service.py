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
from services.api.deps import reader_connection, token_responses
from services.api.models import HealthDocument

logger = logging.getLogger(__name__)

HEALTH_CHECK_TIMEOUT_S: Final = 5.0

router = APIRouter()


@router.get(
    "/healthz",
    summary="Whether the API can read the database (no token needed)",
    response_model=HealthDocument,
    responses={503: {"model": HealthDocument, "description": "The database does not answer."}},
)
async def healthz(request: Request) -> JSONResponse:
    state = request.app.state
    try:
        async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
            async with reader_connection(state.engine, state.database_role) as conn:
                await conn.execute(text("SELECT 1"))
    except (OSError, TimeoutError, SQLAlchemyError) as error:
        logger.warning("health check failed: %s", type(error).__name__)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process",
    dependencies=[Depends(require_role(READ_ROLES))],
    response_class=Response,
    responses={
        **token_responses(READ_ROLES),
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
    },
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
