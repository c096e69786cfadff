"""The composition root: every long-lived part built from `Settings`, in one place. `giftledger
run`, the demo, the benchmarks and the tests build their ledger, cash-out desk, ingestor and
consumers here, so all of them run what production runs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.service import Ledger
from services.cashout.desk import CashoutDesk, CashoutLimits
from services.cashout.eligibility import EligibilitySettings, get_eligibility_settings
from services.ingestion.ingestor import Ingestor
from services.rates.rate_cards import RateCardBook, load_rate_cards
from services.runtime.settings import Settings


def build_ledger(settings: Settings, engine: AsyncEngine) -> Ledger:
    return Ledger(
        engine,
        batch_size_max=settings.ledger_batch_size_max,
        conflict_retry_count_max=settings.ledger_conflict_retry_count_max,
    )


def build_desk(settings: Settings, eligibility: EligibilitySettings | None = None) -> CashoutDesk:
    """The cash-out desk with the CASHOUT_* limits and the ELIGIBILITY_* rules (read from the
    environment unless given)."""
    return CashoutDesk(
        CashoutLimits(settings.cashout_minimum_usd_cents, settings.cashout_daily_limit_usd_cents),
        eligibility or get_eligibility_settings(),
        settings.kafka_topic_prefix,
    )


def build_ingestor(
    settings: Settings,
    engine: AsyncEngine,
    rate_cards: RateCardBook,
    *,
    eligibility: EligibilitySettings | None = None,
) -> Ingestor:
    return Ingestor(
        build_ledger(settings, engine),
        rate_cards,
        build_desk(settings, eligibility),
        park_s=settings.reversal_park_s,
    )


async def load_ingestor(settings: Settings, engine: AsyncEngine) -> Ingestor:
    """`build_ingestor` with the rate cards stored in the database."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    return build_ingestor(settings, engine, rate_cards)
