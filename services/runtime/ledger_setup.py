"""The ledger as every service builds it: its batch size, conflict retries and account cache
from the settings, and every race a unit of work lost and ran again after counted in
`giftledger_ledger_conflicts_retried_total` (`services.runtime.metrics`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.service import CONFLICT_KINDS, Ledger
from services.runtime import metrics
from services.runtime.settings import Settings

for _kind in CONFLICT_KINDS:  # every kind shown from the start, at 0
    metrics.LEDGER_CONFLICTS_RETRIED.labels(kind=_kind)


def build_ledger(settings: Settings, engine: AsyncEngine) -> Ledger:
    return Ledger(
        engine,
        batch_size_max=settings.ledger_batch_size_max,
        conflict_retry_count_max=settings.ledger_conflict_retry_count_max,
        account_cache_size_max=settings.ledger_account_cache_size_max,
        on_conflict=count_ledger_conflict,
    )


def count_ledger_conflict(kind: str) -> None:
    metrics.LEDGER_CONFLICTS_RETRIED.labels(kind=kind).inc()
