"""`giftledger run`: the consumers (and optionally more) until SIGTERM or SIGINT, then a clean stop.

Stopping finishes the batch in hand (its database commit and offset commit) before leaving the
consumer group, so nothing is applied twice or left half-done by a normal shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.migrate import require_current_schema, upgrade_to_head
from services.api.server import API_ADDRESS_VARIABLES, serve_api
from services.app.bootstrap import build_api_app, build_payout_rail, start_consumers
from services.app.day_rollup import DayRollup
from services.app.partition_upkeep import PartitionUpkeep
from services.runtime.collector import settle_collector
from services.runtime.database import engine_as_role, open_read_database, open_services_database
from services.runtime.kafka import open_kafka
from services.runtime.listening import ListenError, cannot_listen, listening_socket
from services.runtime.memory import fix_mmap_threshold
from services.runtime.settings import Settings

logger = logging.getLogger(__name__)

METRICS_ADDRESS_VARIABLES = "METRICS_HOST and METRICS_PORT"


async def ensure_schema(engine: AsyncEngine, settings: Settings) -> None:
    """The embedded database is migrated on start; a configured one must already be current
    (else `SchemaNotCurrentError`)."""
    if settings.database_url is None:
        await upgrade_to_head(engine)
        return
    await require_current_schema(engine)


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)


async def run(
    settings: Settings, *, with_payout_rail: bool = False, with_api: bool = False
) -> None:
    # Large freed blocks go back to the system, not into holes in the heap
    # (services.runtime.memory).
    fix_mmap_threshold()
    stop = asyncio.Event()
    stop_on_signals(stop)
    # The addresses first: a port taken stops the process before it opens anything else.
    listener = (
        listening_socket(settings.api_host, settings.api_port, API_ADDRESS_VARIABLES)
        if with_api
        else None
    )
    try:
        _serve_metrics(settings)
        async with open_services_database(settings) as engine:
            await ensure_schema(engine, settings)
            # The API's reads: API_DATABASE_URL's replica, opened only when the API is served.
            reads = (
                open_read_database(settings, engine) if with_api else contextlib.nullcontext(engine)
            )
            async with reads as read_engine, open_kafka(settings) as bootstrap_servers:
                await _serve(
                    settings,
                    engine,
                    read_engine,
                    bootstrap_servers,
                    stop,
                    with_payout_rail=with_payout_rail,
                    listener=listener,
                )
    finally:
        if listener is not None:
            listener.close()  # serving closed it already, unless it never began


async def _serve(
    settings: Settings,
    engine: AsyncEngine,
    read_engine: AsyncEngine,
    bootstrap_servers: str,
    stop: asyncio.Event,
    *,
    with_payout_rail: bool,
    listener: socket.socket | None,
) -> None:
    """The consumers (with the bank, the API on `listener`) until `stop`, then their stop."""
    rail = build_payout_rail(settings, bootstrap_servers) if with_payout_rail else None
    if rail is not None:
        await rail.start()
    writer = engine_as_role(engine, settings, settings.database_writer_role)
    settle_collector()
    service = await start_consumers(settings, writer, bootstrap_servers)
    api = None
    if listener is not None:
        app = build_api_app(engine, settings, read_engine=read_engine)
        app.state.kafka_bootstrap_servers = bootstrap_servers  # operator re-drives
        api = asyncio.create_task(
            serve_api(app, settings.api_host, settings.api_port, stop, listener=listener)
        )
        # The API ending on its own (it failed) stops the process, as SIGTERM would, so that
        # its supervisor starts it again: it never goes on consuming without its API.
        api.add_done_callback(lambda _: stop.set())
    logger.info("consumers running on %s; SIGTERM stops them", bootstrap_servers)
    upkeep = PartitionUpkeep(writer, settings.transfer_partition_months_ahead)
    upkeep_task = asyncio.create_task(upkeep.run_until(stop))
    rollup_task = asyncio.create_task(DayRollup(writer).run_until(stop))
    try:
        await stop.wait()
    finally:
        stop.set()
        upkeep_task.cancel()
        rollup_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep_task
        with contextlib.suppress(asyncio.CancelledError):
            await rollup_task
        logger.info("stopping: finishing the batch in hand")
        try:
            if api is not None:
                await api
        finally:
            await service.stop()
            if rail is not None:
                await rail.stop()
            await writer.dispose()


def _serve_metrics(settings: Settings) -> None:
    """Prometheus's endpoint on METRICS_HOST:METRICS_PORT (none when the port is 0)."""
    if not settings.metrics_port:
        return
    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    except OSError as error:
        raise ListenError(
            cannot_listen(
                settings.metrics_host, settings.metrics_port, METRICS_ADDRESS_VARIABLES, error
            )
        ) from error
    logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
