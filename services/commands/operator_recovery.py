"""`giftledger operator redrive|cancel|resubmit`: the operator's recovery actions.

    giftledger operator redrive [DEAD_LETTER_ID ...] [--topic T [--error E] [--from ISO]
                                [--to ISO] [--limit N]] --reason R [--ticket T]
    giftledger operator cancel CASHOUT_ID --reason R [--ticket T]
    giftledger operator resubmit CASHOUT_ID --reason R [--ticket T]

They take `--as`, `--key` and `--json` as every `giftledger operator` action does
(services/commands/operator.py registers them): the same command run again does nothing new.
`redrive` reads the dead letters' records back from `KAFKA_BOOTSTRAP_SERVERS` and publishes
their copies there, so it needs that variable set (an embedded broker started for one command
would hold none of them).

Exit codes: 0 done (or done already), 1 refused (a cash-out not in a state the action applies
to, a key used for another action, the broker not answering), 2 a usage error (an unknown
cash-out or dead letter, a bad argument, no Kafka cluster configured).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Final

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.assets import format_amount
from schemas.topics import CONSUMED_TOPICS
from services.api.recovery_models import cancel_document, redrive_document, resubmit_document
from services.app.bootstrap import build_desk
from services.cashout.recovery import (
    ActionRequest,
    CancelOutcome,
    CashoutActionRefusedError,
    CashoutNotFoundError,
    CashoutRecovery,
    ResubmitOutcome,
)
from services.cli_text import aware_timestamp
from services.commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    integer,
    print_error,
    print_json,
)
from services.ingestion.redrive import (
    REDRIVE_COUNT_MAX,
    DeadLetterNotFoundError,
    DeadLetterRedriver,
    DeadLetterSelection,
    RedriveOutcome,
    RedriveRequest,
)
from services.operator.actions_log import ActionKeyConflictError, InvalidActionError
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import get_settings

RECOVERY_ACTIONS: Final = frozenset({"redrive", "cancel", "resubmit"})

KeyOf = Callable[..., str]


def _count(value: str) -> int:
    count = integer(value)
    if not 1 <= count <= REDRIVE_COUNT_MAX:
        raise argparse.ArgumentTypeError(f"must be between 1 and {REDRIVE_COUNT_MAX}, not {count}")
    return count


def _dead_letter_id(value: str) -> int:
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"a dead letter id is 1 or more, not {number}")
    return number


def add_recovery_actions(
    actions: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_actor_arguments: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add `redrive`, `cancel` and `resubmit` to the `giftledger operator` actions."""
    redrive = actions.add_parser(
        "redrive",
        help="re-drive dead letters to their source topic (by id, or by topic and error)",
    )
    redrive.add_argument(
        "dead_letter_ids", metavar="DEAD_LETTER_ID", nargs="*", type=_dead_letter_id
    )
    redrive.add_argument("--topic", choices=CONSUMED_TOPICS, help="the source topic, no prefix")
    redrive.add_argument("--error", metavar="ERROR", help="only dead letters with this error")
    redrive.add_argument("--from", dest="recorded_from", type=aware_timestamp, metavar="ISO")
    redrive.add_argument("--to", dest="recorded_to", type=aware_timestamp, metavar="ISO")
    redrive.add_argument("--limit", type=_count, default=100, metavar="N")
    redrive.add_argument("--reason", required=True, help="why, for the audit log")
    add_actor_arguments(redrive)

    for name, what in (
        ("cancel", "cancel a stale hold: release the Diamonds, tell the bank to drop the payout"),
        ("resubmit", "resubmit a failed payout as a new cash-out to the current account"),
    ):
        action = actions.add_parser(name, help=what)
        action.add_argument("cashout_id", metavar="CASHOUT_ID")
        action.add_argument("--reason", required=True, help="why, for the audit log")
        add_actor_arguments(action)


async def recovery_command(
    engine: AsyncEngine, args: argparse.Namespace, actor: str, key_of: KeyOf
) -> int:
    """Run one recovery action as `actor`; `key_of` derives the idempotency key from the
    command when `--key` is not given."""
    try:
        if args.operator_action == "redrive":
            await _redrive(engine, args, actor, key_of)
        else:
            await _on_cashout(engine, args, actor, key_of)
    except (CashoutNotFoundError, DeadLetterNotFoundError, InvalidActionError) as error:
        raise UsageError(str(error)) from None
    except (CashoutActionRefusedError, ActionKeyConflictError) as error:
        print_error(f"refused: {error}")
        return EXIT_FAILURE
    except (KafkaError, TimeoutError) as error:
        print_error(
            f"the Kafka cluster does not answer ({type(error).__name__}): nothing was recorded;"
            " run the same command again"
        )
        return EXIT_FAILURE
    return EXIT_OK


# redrive ------------------------------------------------------------------------------------


async def _redrive(
    engine: AsyncEngine, args: argparse.Namespace, actor: str, key_of: KeyOf
) -> None:
    settings = get_settings()
    if not settings.kafka_bootstrap_servers:
        raise UsageError(
            "redrive needs KAFKA_BOOTSTRAP_SERVERS: the dead letters' records are in that cluster"
        )
    try:
        selection = DeadLetterSelection(
            dead_letter_ids=tuple(args.dead_letter_ids),
            topic=args.topic,
            error=args.error,
            recorded_from=args.recorded_from,
            recorded_to=args.recorded_to,
            limit=args.limit,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    key = args.key or key_of("redrive", actor, selection.document(), args.reason, args.ticket)
    redriver = DeadLetterRedriver(
        engine,
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix,
        database_role=settings.database_writer_role,
    )
    outcomes = await redriver.redrive(
        RedriveRequest(key, actor, args.reason, args.ticket, selection)
    )
    if args.json:
        print_json(redrive_document(outcomes))
        return
    for outcome in outcomes:
        print(_redrive_line(outcome))
    redriven = sum(outcome.outcome == "redriven" for outcome in outcomes)
    print(f"re-driven now: {redriven} of {len(outcomes)} dead letters")


def _redrive_line(outcome: RedriveOutcome) -> str:
    about = f"dead letter {outcome.dead_letter_id} ({outcome.topic}, {outcome.error})"
    if outcome.outcome == "source_unavailable":
        return f"{about}: its record is no longer in the source topic; not re-driven"
    where = f"partition {outcome.copy_partition} offset {outcome.copy_offset}"
    done = "re-driven to" if outcome.outcome == "redriven" else "already re-driven to"
    return f"{about}: {done} {where} (action {outcome.operator_action_id})"


# cancel, resubmit ---------------------------------------------------------------------------


async def _on_cashout(
    engine: AsyncEngine, args: argparse.Namespace, actor: str, key_of: KeyOf
) -> None:
    settings = get_settings()
    recovery = CashoutRecovery(
        build_ledger(settings, engine),
        build_desk(settings),
        answer_window_s=settings.cashout_answer_window_s,
        database_role=settings.database_writer_role,
    )
    key = args.key or key_of(args.operator_action, actor, args.cashout_id, args.reason, args.ticket)
    said = ActionRequest(key, actor, args.reason, args.ticket)
    if args.operator_action == "cancel":
        cancelled = await recovery.cancel_stale_hold(args.cashout_id, said)
        _print_cancel(cancelled, args.json)
    else:
        resubmitted = await recovery.resubmit_failed_payout(args.cashout_id, said)
        _print_resubmit(resubmitted, args.json)


def _already(recorded: bool, action_id: int, actor: str) -> str:
    return "" if recorded else f" (already: action {action_id} by {actor}; nothing new recorded)"


def _print_cancel(outcome: CancelOutcome, as_json: bool) -> None:
    if as_json:
        print_json(cancel_document(outcome))
        return
    cashout = outcome.cashout
    print(
        f"cash-out {cashout.cashout_id}: {cashout.status} ({cashout.failure_code}),"
        f" {format_amount(cashout.amount, cashout.asset)} back to creator {cashout.creator_id};"
        " the bank is told to drop the payout"
        + _already(outcome.recorded, outcome.action.id, outcome.action.actor)
    )


def _print_resubmit(outcome: ResubmitOutcome, as_json: bool) -> None:
    if as_json:
        print_json(resubmit_document(outcome))
        return
    new = outcome.resubmitted
    payout = (
        "-" if new.payout_amount is None else format_amount(new.payout_amount, new.payout_currency)
    )
    print(
        f"cash-out {outcome.original.cashout_id} resubmitted as {new.cashout_id}: {new.status},"
        f" {payout} to account {new.payout_account_ref}"
        + _already(outcome.recorded, outcome.action.id, outcome.action.actor)
    )
