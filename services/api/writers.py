"""The app's writers: its operator desk and its cash-out recovery, each made once per app, on
first use, from the app's engine (the primary: never the read engine of `API_DATABASE_URL`) and
settings. The API's operator routes and the console's actions share them, and with them one
ledger and its account cache, rather than building a ledger for every action."""

from __future__ import annotations

from typing import Any

from services.cashout.desk import CashoutDesk
from services.cashout.recovery import CashoutRecovery
from services.operator.desk import OperatorDesk
from services.runtime.ledger_setup import build_ledger


def operator_desk_of(state: Any) -> OperatorDesk:
    """The operator desk of the app whose `state` this is (`app.state`)."""
    desk: OperatorDesk | None = getattr(state, "operator_desk", None)
    if desk is None:
        settings = state.settings
        desk = OperatorDesk(
            build_ledger(settings, state.engine),
            topic_prefix=settings.kafka_topic_prefix,
            database_role=settings.database_writer_role,
        )
        state.operator_desk = desk
    return desk


def cashout_recovery_of(state: Any) -> CashoutRecovery:
    """The cash-out recovery of the app whose `state` this is (`app.state`)."""
    recovery: CashoutRecovery | None = getattr(state, "cashout_recovery", None)
    if recovery is None:
        settings = state.settings
        recovery = CashoutRecovery(
            build_ledger(settings, state.engine),
            CashoutDesk.from_settings(settings),
            answer_window_s=settings.cashout_answer_window_s,
            database_role=settings.database_writer_role,
        )
        state.cashout_recovery = recovery
    return recovery
