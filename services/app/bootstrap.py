"""The composition root: every long-lived part built from `Settings`, in one place. `giftledger
run`, the demo, the load test, the benchmarks and the tests build their cash-out desk, ingestor,
consumers and simulated bank here, and their ledger with `services.runtime.ledger_setup` (as
the API's and the console's operator actions do), so all of them run what production runs."""

from __future__ import annotations

from typing import TypeVar

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.server import create_app
from services.app.consumer import ConsumerService
from services.cashout.desk import CashoutDesk
from services.console import install_console
from services.ingestion.ingestor import Ingestor
from services.payout_rail.rail import PayoutRailService, RailSettings, simulated_rail
from services.rates.rate_cards import RateCardBook, load_rate_cards
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import EligibilitySettings, Settings

IngestorT = TypeVar("IngestorT", bound=Ingestor)


def build_desk(settings: Settings, eligibility: EligibilitySettings | None = None) -> CashoutDesk:
    """The cash-out desk with the CASHOUT_* limits and the ELIGIBILITY_* rules (read from the
    environment unless given)."""
    return CashoutDesk.from_settings(settings, eligibility)


def build_ingestor(
    settings: Settings,
    engine: AsyncEngine,
    rate_cards: RateCardBook,
    *,
    eligibility: EligibilitySettings | None = None,
) -> Ingestor:
    return build_ingestor_as(Ingestor, settings, engine, rate_cards, eligibility=eligibility)


def build_ingestor_as(
    ingestor_class: type[IngestorT],
    settings: Settings,
    engine: AsyncEngine,
    rate_cards: RateCardBook,
    *,
    eligibility: EligibilitySettings | None = None,
) -> IngestorT:
    """`build_ingestor` as an `ingestor_class`: the product's `Ingestor` or a subclass of it that
    takes the same arguments (the load test's, which times it)."""
    return ingestor_class(
        build_ledger(settings, engine),
        rate_cards,
        build_desk(settings, eligibility),
        park_s=settings.reversal_park_s,
        payout_park_s=settings.payout_park_s,
        payout_park_count_max=settings.payout_park_count_max,
    )


async def load_ingestor(settings: Settings, engine: AsyncEngine) -> Ingestor:
    """`build_ingestor` with the rate cards stored in the database."""
    return await load_ingestor_as(Ingestor, settings, engine)


async def load_ingestor_as(
    ingestor_class: type[IngestorT], settings: Settings, engine: AsyncEngine
) -> IngestorT:
    """`build_ingestor_as` with the rate cards stored in the database."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    return build_ingestor_as(ingestor_class, settings, engine, rate_cards)


async def start_consumers(
    settings: Settings, engine: AsyncEngine, bootstrap_servers: str
) -> ConsumerService:
    """The consumers of every consumed topic, started (their groups joined)."""
    service = ConsumerService(settings, await load_ingestor(settings, engine), bootstrap_servers)
    await service.start()
    return service


def build_payout_rail(settings: Settings, bootstrap_servers: str) -> PayoutRailService:
    """The simulated bank, configured by the PAYOUT_RAIL_* settings (not started)."""
    rail_settings = RailSettings(
        seed=settings.payout_rail_seed,
        paid_delay_ms=settings.payout_rail_paid_delay_ms,
        failure_rate=settings.payout_rail_failure_rate,
        return_rate=settings.payout_rail_return_rate,
        return_delay_ms=settings.payout_rail_return_delay_ms,
        settlement_breaks=settings.payout_rail_settlement_breaks,
    )
    return simulated_rail(
        rail_settings,
        bootstrap_servers,
        topic_prefix=settings.kafka_topic_prefix,
        consumer_group=settings.kafka_consumer_group,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        fetch_wait_ms_max=settings.consumer_cashout_fetch_wait_ms_max,
        in_flight_max=settings.payout_rail_in_flight_max,
        settlement_dir=settings.payout_rail_settlement_dir,
    )


def build_api_app(
    engine: AsyncEngine, settings: Settings, *, read_engine: AsyncEngine | None = None
) -> FastAPI:
    """The API process's app: the finance API (`services.api`) and the console's pages under
    /console (`services.console`), which reads through the API's parts. Both read through
    `read_engine` when given (the replica of `API_DATABASE_URL`, opened by
    `services.runtime.database.open_read_database`) and write (operator actions, re-drives)
    through `engine`, the primary."""
    app = create_app(engine, settings, read_engine=read_engine)
    install_console(app)
    return app
