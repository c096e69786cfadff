"""The app's writers: its operator desk and its cash-out recovery, each made once per app, on
first use, from the app's engine (the primary: never the read engine of `API_DATABASE_URL`) and
settings. The API's operator routes and the console's actions share them, and with them one
ledger and its account cache, rather than building a ledger for every action."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from services.cashout.desk import CashoutDesk
from services.cashout.recovery import CashoutRecovery
from services.operator.desk import OperatorDesk
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import Settings


def operator_desk_of(state: Any) -> OperatorDesk:
    """The operator desk of the app whose `state` this is (`app.state`)."""
    return _made_once(state, "operator_desk", _operator_desk)


def cashout_recovery_of(state: Any) -> CashoutRecovery:
    """The cash-out recovery of the app whose `state` this is (`app.state`)."""
    return _made_once(state, "cashout_recovery", _cashout_recovery)


WriterT = TypeVar("WriterT")


def _made_once(state: Any, name: str, make: Callable[[Settings, AsyncEngine], WriterT]) -> WriterT:
    """`state.<name>`, made from the app's settings and engine the first time it is asked for."""
    made: WriterT | None = getattr(state, name, None)
    if made is None:
        made = make(state.settings, state.engine)
        setattr(state, name, made)
    return made


def _operator_desk(settings: Settings, engine: AsyncEngine) -> OperatorDesk:
    return OperatorDesk(
        build_ledger(settings, engine),
        topic_prefix=settings.kafka_topic_prefix,
        database_role=settings.database_writer_role,
    )


def _cashout_recovery(settings: Settings, engine: AsyncEngine) -> CashoutRecovery:
    return CashoutRecovery(
        build_ledger(settings, engine),
        CashoutDesk.from_settings(settings),
        answer_window_s=settings.cashout_answer_window_s,
        database_role=settings.database_writer_role,
    )
