"""`giftledger operator`: the operator actions from the command line, and their audit log.

    giftledger operator propose CREATOR_ID ASSET AMOUNT_MINOR --reason R [--ticket T]
    giftledger operator approve ADJUSTMENT_ID [--reason R] [--ticket T]
    giftledger operator withdraw ADJUSTMENT_ID --reason R [--ticket T]
    giftledger operator adjustments [--status proposed|approved|withdrawn] [--creator C] [--limit N]
    giftledger operator freeze|unfreeze CREATOR_ID --reason R [--ticket T]
    giftledger operator log [--target T] [--after ID] [--limit N]

An action is taken as the person named by `--as NAME`, else by `OPERATOR_NAME`; the command line
has no token, so the name is the word of whoever can reach the database. Each action's
idempotency key is `--key`, else one derived from the command, the name, its arguments and, for
a freeze or an unfreeze, the creator's current freeze state: running the same command again does
nothing new (to propose the same adjustment twice on purpose, give each its own `--key`).
Actions act through `OperatorDesk` as `DATABASE_WRITER_ROLE`; their `operator.actions` messages
leave through the outbox when `giftledger run` relays it. `log` prints the log and recomputes its
hash chain: exit 1 when the chain is broken.

Exit codes: 0 done (or done already), 1 refused (four eyes, an overdraft, approving a withdrawn
adjustment or withdrawing an approved one, a key used for another action) or a broken chain, 2 a
usage error (no name, an unknown creator or adjustment, a bad argument).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.assets import format_amount
from services.api.operator_models import (
    action_document,
    adjustment_document,
    adjustment_outcome_document,
    freeze_outcome_document,
)
from services.cli_text import table
from services.commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    acting_operator,
    add_actor_argument,
    integer,
    print_error,
    print_json,
)
from services.commands.operator_recovery import (
    RECOVERY_ACTIONS,
    add_recovery_actions,
    recovery_command,
)
from services.operator.actions_log import (
    ACTION_LIST_LIMIT_MAX,
    ActionKeyConflictError,
    InvalidActionError,
    OperatorAction,
    list_actions,
    verify_action_chain,
)
from services.operator.adjustments import ADJUSTMENT_STATUSES, list_adjustments
from services.operator.desk import (
    APPROVAL_REASON_DEFAULT,
    AdjustmentNotFoundError,
    AdjustmentOutcome,
    FreezeOutcome,
    InvalidAdjustmentError,
    OperatorDesk,
    OperatorError,
    UnknownCreatorError,
)
from services.operator.freezes import freeze_state
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import get_settings

DERIVED_KEY_PREFIX: Final = "cli-"
DERIVED_KEY_HEX_DIGITS: Final = 40
LIST_LIMIT_DEFAULT: Final = 100

# Arguments ----------------------------------------------------------------------------------


def _list_limit(value: str) -> int:
    limit = integer(value)
    if not 1 <= limit <= ACTION_LIST_LIMIT_MAX:
        raise argparse.ArgumentTypeError(
            f"limit must be between 1 and {ACTION_LIST_LIMIT_MAX}, not {limit}"
        )
    return limit


def _positive(value: str) -> int:
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _add_actor_arguments(parser: argparse.ArgumentParser) -> None:
    add_actor_argument(parser)
    parser.add_argument(
        "--key", metavar="KEY", help="the idempotency key (default: derived from the command)"
    )
    parser.add_argument("--ticket", metavar="TICKET", help="the ticket the action belongs to")
    parser.add_argument("--json", action="store_true", help="print the finance API's document")


def add_operator_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="operator_action", metavar="ACTION", required=True)

    propose = actions.add_parser("propose", help="propose a balance adjustment")
    propose.add_argument("creator_id", metavar="CREATOR_ID")
    propose.add_argument("asset", metavar="ASSET", help="DIAMOND or a currency such as USD")
    propose.add_argument(
        "amount_minor",
        metavar="AMOUNT_MINOR",
        type=integer,
        help="signed, in the asset's minor unit (milli-diamonds): > 0 credits, < 0 debits",
    )
    propose.add_argument("--reason", required=True, help="why, for the audit log")
    _add_actor_arguments(propose)

    approve = actions.add_parser(
        "approve", help="approve an adjustment another operator proposed, and post it"
    )
    approve.add_argument("adjustment_id", metavar="ADJUSTMENT_ID", type=_positive)
    approve.add_argument("--reason", default=APPROVAL_REASON_DEFAULT, help="why, for the audit log")
    _add_actor_arguments(approve)

    withdraw = actions.add_parser(
        "withdraw", help="withdraw a proposed adjustment: it is never approved nor posted"
    )
    withdraw.add_argument("adjustment_id", metavar="ADJUSTMENT_ID", type=_positive)
    withdraw.add_argument("--reason", required=True, help="why it is withdrawn, for the audit log")
    _add_actor_arguments(withdraw)

    adjustments = actions.add_parser("adjustments", help="list balance adjustments")
    adjustments.add_argument("--status", choices=ADJUSTMENT_STATUSES)
    adjustments.add_argument("--creator", metavar="CREATOR_ID")
    adjustments.add_argument("--limit", type=_list_limit, default=LIST_LIMIT_DEFAULT)
    adjustments.add_argument("--json", action="store_true", help="print the API's document")

    for name, what in (("freeze", "reject a creator's cash-outs"), ("unfreeze", "undo a freeze")):
        freeze = actions.add_parser(name, help=what)
        freeze.add_argument("creator_id", metavar="CREATOR_ID")
        freeze.add_argument("--reason", required=True, help="why, for the audit log")
        _add_actor_arguments(freeze)

    add_recovery_actions(actions, _add_actor_arguments)  # redrive, cancel, resubmit

    log = actions.add_parser("log", help="the operator actions log, with its chain checked")
    log.add_argument("--target", metavar="TARGET", help="only the actions on this target")
    log.add_argument("--after", metavar="ID", type=integer, default=0, help="after this action")
    log.add_argument("--limit", type=_list_limit, default=LIST_LIMIT_DEFAULT)
    log.add_argument("--json", action="store_true", help="the actions as JSON")


def derived_key(*parts: object) -> str:
    """An idempotency key that is the same for the same command, name and arguments."""
    text = json.dumps([str(part) for part in parts], ensure_ascii=False)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return DERIVED_KEY_PREFIX + digest[:DERIVED_KEY_HEX_DIGITS]


def _desk(engine: AsyncEngine) -> OperatorDesk:
    settings = get_settings()
    return OperatorDesk(
        build_ledger(settings, engine),
        topic_prefix=settings.kafka_topic_prefix,
        database_role=settings.database_writer_role,
    )


# Output -------------------------------------------------------------------------------------


def _already(recorded: bool, action: OperatorAction | None) -> str:
    if recorded or action is None:
        return ""
    return f" (already: action {action.id} by {action.actor}; nothing new recorded)"


def _print_adjustment(outcome: AdjustmentOutcome, as_json: bool) -> None:
    if as_json:
        print_json(adjustment_outcome_document(outcome))
        return
    adjustment = outcome.adjustment
    amount = format_amount(adjustment.amount_minor, adjustment.asset)
    if adjustment.status == "proposed":
        done = f"proposed by {adjustment.proposed_by}, waiting for another operator's approval"
    elif adjustment.status == "approved":
        done = f"approved by {adjustment.approved_by}, posted as transfer {adjustment.transfer_id}"
    else:
        done = f"withdrawn by {adjustment.withdrawn_by}: it will never be posted"
    print(
        f"adjustment {adjustment.id}: {amount} for creator {adjustment.creator_id}: {done}"
        + _already(outcome.recorded, outcome.action)
    )


def _print_freeze(outcome: FreezeOutcome, as_json: bool) -> None:
    if as_json:
        print_json(freeze_outcome_document(outcome))
        return
    state = outcome.state
    print(
        f"creator {state.creator_id}: {'frozen' if state.frozen else 'not frozen'}"
        + _already(outcome.recorded, outcome.action)
    )


# Handlers -----------------------------------------------------------------------------------


async def _propose(engine: AsyncEngine, args: argparse.Namespace) -> None:
    actor = acting_operator(args)
    key = args.key or derived_key(
        "propose", actor, args.creator_id, args.asset, args.amount_minor, args.reason, args.ticket
    )
    outcome = await _desk(engine).propose_adjustment(
        idempotency_key=key,
        actor=actor,
        creator_id=args.creator_id,
        asset=args.asset,
        amount_minor=args.amount_minor,
        reason=args.reason,
        ticket=args.ticket,
    )
    _print_adjustment(outcome, args.json)


async def _approve(engine: AsyncEngine, args: argparse.Namespace) -> None:
    actor = acting_operator(args)
    key = args.key or derived_key("approve", actor, args.adjustment_id, args.reason, args.ticket)
    outcome = await _desk(engine).approve_adjustment(
        args.adjustment_id, idempotency_key=key, actor=actor, reason=args.reason, ticket=args.ticket
    )
    _print_adjustment(outcome, args.json)


async def _withdraw(engine: AsyncEngine, args: argparse.Namespace) -> None:
    actor = acting_operator(args)
    key = args.key or derived_key("withdraw", actor, args.adjustment_id, args.reason, args.ticket)
    outcome = await _desk(engine).withdraw_adjustment(
        args.adjustment_id, idempotency_key=key, actor=actor, reason=args.reason, ticket=args.ticket
    )
    _print_adjustment(outcome, args.json)


async def _set_frozen(engine: AsyncEngine, args: argparse.Namespace) -> None:
    actor = acting_operator(args)
    frozen = args.operator_action == "freeze"
    key = args.key
    if key is None:
        async with engine.connect() as conn:
            state = await freeze_state(conn, args.creator_id)
        key = derived_key(
            args.operator_action, actor, args.creator_id, args.reason, args.ticket, state.action_id
        )
    outcome = await _desk(engine).set_frozen(
        args.creator_id,
        frozen=frozen,
        idempotency_key=key,
        actor=actor,
        reason=args.reason,
        ticket=args.ticket,
    )
    _print_freeze(outcome, args.json)


async def _adjustments(engine: AsyncEngine, args: argparse.Namespace) -> None:
    async with engine.connect() as conn:
        found = await list_adjustments(
            conn, status=args.status, creator_id=args.creator, limit=args.limit
        )
    if args.json:
        print_json({"adjustments": [adjustment_document(adjustment) for adjustment in found]})
        return
    if not found:
        print("no adjustments")
        return
    rows: list[list[str]] = [
        ["id", "creator", "amount", "status", "proposed by", "approved or withdrawn by"]
    ]
    rows += [
        [
            str(adjustment.id),
            adjustment.creator_id,
            format_amount(adjustment.amount_minor, adjustment.asset),
            adjustment.status,
            adjustment.proposed_by,
            adjustment.approved_by or adjustment.withdrawn_by or "",
        ]
        for adjustment in found
    ]
    print("\n".join(table(rows, right_aligned={0, 2})))


async def _log(engine: AsyncEngine, args: argparse.Namespace) -> int:
    async with engine.connect() as conn:
        actions = await list_actions(
            conn, target=args.target, after_id=args.after, limit=args.limit
        )
        problems = await verify_action_chain(conn)
    if args.json:
        print_json({"actions": [action_document(action) for action in actions]})
    elif actions:
        rows = [["id", "recorded at", "actor", "action", "target", "reason", "ticket"]]
        rows += [
            [
                str(action.id),
                action.recorded_at.isoformat(timespec="seconds"),
                action.actor,
                action.action,
                action.target,
                action.reason,
                action.ticket or "",
            ]
            for action in actions
        ]
        print("\n".join(table(rows, right_aligned={0})))
    else:
        print("no operator actions")
    if problems:
        for problem in problems:
            print_error(f"operator actions chain: {problem}")
        return EXIT_FAILURE
    if not args.json:
        print("chain: intact")
    return EXIT_OK


_ACTIONS: Final[dict[str, Callable[[AsyncEngine, argparse.Namespace], Awaitable[None]]]] = {
    "propose": _propose,
    "approve": _approve,
    "withdraw": _withdraw,
    "freeze": _set_frozen,
    "unfreeze": _set_frozen,
    "adjustments": _adjustments,
}


async def operator_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    if args.operator_action == "log":
        return await _log(engine, args)
    if args.operator_action in RECOVERY_ACTIONS:
        return await recovery_command(engine, args, acting_operator(args), derived_key)
    try:
        await _ACTIONS[args.operator_action](engine, args)
    except (
        UnknownCreatorError,
        AdjustmentNotFoundError,
        InvalidAdjustmentError,
        InvalidActionError,
    ) as error:
        raise UsageError(str(error)) from None
    except (OperatorError, ActionKeyConflictError) as error:
        print_error(f"refused: {error}")
        return EXIT_FAILURE
    return EXIT_OK
