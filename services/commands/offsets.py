"""`giftledger offsets rewind-to-database`: after a restore of the database, move the consumer
groups' committed offsets back to what the database holds (services/operator/offset_rewind.py).

    giftledger offsets rewind-to-database [--apply --reason R [--ticket T] [--as NAME]]
                                          [--unknown-to-beginning] [--wait-s S]

Without `--apply` it is a dry run: it reads the database and the groups' committed offsets,
prints what it would commit for every partition of every consumed topic, and changes nothing.
With `--apply` (every `giftledger run` of the deployment stopped) it joins each group, refuses
unless each gives it every partition, commits the rewound offsets, and records the rewind in the
operator actions log as `--as NAME` (or `OPERATOR_NAME`) with `--reason`. It needs
`KAFKA_BOOTSTRAP_SERVERS`: the groups live in that cluster.

Exit codes: 0 a dry run printed, or the rewind done (or nothing to rewind); 1 refused (consumers
still hold partitions, other deployments share the database, the broker refused or did not
answer); 2 a usage error (no Kafka cluster configured, no name or reason for `--apply`).
"""

from __future__ import annotations

import argparse
import uuid
from typing import Final

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from services.cli_text import table
from services.commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    acting_operator,
    add_actor_argument,
    print_error,
)
from services.operator.actions_log import InvalidActionError, act_as, check_action, record_action
from services.operator.offset_rewind import (
    ACTION,
    JOIN_WAIT_S_DEFAULT,
    JOIN_WAIT_S_MAX,
    Deployment,
    GroupsNotStoppedError,
    OtherDeploymentsError,
    RewindResult,
    TopicPlan,
    action_details,
    action_target,
    database_positions,
    plan_without_joining,
    rewind_as_members,
)
from services.runtime.settings import get_settings

ACTION_KEY_PREFIX: Final = "cli-offsets-rewind-"


def _wait_s(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < seconds <= JOIN_WAIT_S_MAX:
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {JOIN_WAIT_S_MAX:g}, not {value}"
        )
    return seconds


def add_offsets_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="offsets_action", metavar="ACTION", required=True)
    rewind = actions.add_parser(
        "rewind-to-database",
        help="after a database restore, rewind the consumer groups to what the database holds",
        description="For each consumed topic and partition, commit one past the last record of "
        "the log the database has a record of (applied events, dead letters, parked events), "
        "where the group's committed offset is ahead of it; never forward. Rows of an earlier "
        "life of the topic (its offsets started again) are ignored. A dry run unless --apply.",
    )
    rewind.add_argument(
        "--apply",
        action="store_true",
        help="commit the rewound offsets (every consumer of the deployment stopped); without "
        "it, print what would change and change nothing",
    )
    rewind.add_argument(
        "--unknown-to-beginning",
        action="store_true",
        help="rewind a partition the database has no record of to the beginning of its log "
        "(default: leave it as is and report it)",
    )
    rewind.add_argument(
        "--wait-s",
        type=_wait_s,
        default=JOIN_WAIT_S_DEFAULT,
        metavar="S",
        help="how long --apply waits for each group to give it every partition (default "
        f"{JOIN_WAIT_S_DEFAULT:g}; a consumer that stopped without leaving the group holds it "
        "for about its session timeout)",
    )
    rewind.add_argument("--reason", metavar="R", help="why (required with --apply)")
    rewind.add_argument("--ticket", metavar="TICKET", help="the ticket the rewind belongs to")
    add_actor_argument(rewind)


async def offsets_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.kafka_bootstrap_servers:
        raise UsageError(
            "offsets needs KAFKA_BOOTSTRAP_SERVERS: the consumer groups are in that cluster"
        )
    deployment = Deployment(
        settings.kafka_bootstrap_servers,
        settings.kafka_topic_prefix,
        settings.kafka_consumer_group,
        settings.kafka_session_timeout_ms,
    )
    actor = None
    key = f"{ACTION_KEY_PREFIX}{uuid.uuid4().hex}"
    if args.apply:
        actor = acting_operator(args)
        if not args.reason:
            raise UsageError("--apply needs --reason R: the operator actions log records why")
        try:
            check_action(
                idempotency_key=key,
                actor=actor,
                action=ACTION,
                target=action_target(deployment),
                reason=args.reason,
                ticket=args.ticket,
            )
        except InvalidActionError as error:
            raise UsageError(str(error)) from None
    try:
        async with engine.connect() as conn:
            positions = await database_positions(conn, deployment)
        if not args.apply:
            plans = await plan_without_joining(
                deployment, positions, unknown_to_beginning=args.unknown_to_beginning
            )
            _print_plans(deployment, plans)
            _print_dry_run_summary(plans)
            return EXIT_OK
        result = await rewind_as_members(
            deployment,
            positions,
            unknown_to_beginning=args.unknown_to_beginning,
            wait_s=args.wait_s,
        )
    except (OtherDeploymentsError, GroupsNotStoppedError) as error:
        print_error(str(error))
        return EXIT_FAILURE
    except (KafkaError, TimeoutError, LookupError) as error:
        print_error(
            f"the broker at {deployment.bootstrap_servers}: {type(error).__name__}: {error}"
        )
        return EXIT_FAILURE
    _print_plans(deployment, result.plans)
    assert actor is not None
    return await _record(engine, deployment, result, args, actor, key)


async def _record(
    engine: AsyncEngine,
    deployment: Deployment,
    result: RewindResult,
    args: argparse.Namespace,
    actor: str,
    key: str,
) -> int:
    done = [plan for plan in result.plans if plan.changes and plan.topic not in result.failed]
    partition_count = sum(len(plan.changes) for plan in done)
    records = sum(change.records_again for plan in done for change in plan.changes)
    if done:
        details = action_details(deployment, result, unknown_to_beginning=args.unknown_to_beginning)
        async with engine.begin() as conn:
            await act_as(conn, get_settings().database_writer_role)
            action, _ = await record_action(
                conn,
                idempotency_key=key,
                actor=actor,
                action=ACTION,
                target=action_target(deployment),
                reason=args.reason,
                ticket=args.ticket,
                details=details,
                topic_prefix=deployment.topic_prefix,
            )
        print(
            f"rewound {partition_count} partitions: {records} records come again;"
            f" recorded as operator action {action.id} ({ACTION})"
        )
    else:
        print("nothing to rewind: no group is ahead of the database")
    for topic, error in sorted(result.failed.items()):
        print_error(f"{topic}: the broker refused the rewind, left as it was: {error}")
    return EXIT_FAILURE if result.failed else EXIT_OK


def _offset(value: int | None) -> str:
    return "-" if value is None else str(value)


def _print_plans(deployment: Deployment, plans: list[TopicPlan]) -> None:
    prefix = deployment.topic_prefix or "(none)"
    print(
        f"consumer groups {deployment.consumer_group}.<topic>, topic prefix {prefix};"
        " database: one past the last record of the log it holds (applied_events, dead_letters,"
        " parked_events); ignored: its rows at or past the log's end, of an earlier life of the"
        " topic (recreated, or the embedded broker restarted)"
    )
    for plan in plans:
        members = "" if plan.members_listed is None else f", {plan.members_listed} members listed"
        print(f"\n{plan.kafka_topic} (group {plan.group}{members})")
        rows = [["partition", "committed", "database", "ignored", "beginning", "commit", ""]]
        rows += [
            [
                str(partition.partition),
                _offset(partition.committed),
                _offset(partition.database_next),
                str(partition.past_end),
                str(partition.beginning),
                _offset(partition.target),
                partition.note,
            ]
            for partition in plan.partitions
        ]
        for line in table(rows, right_aligned={0, 1, 2, 3, 4, 5}):
            print(f"  {line}")
        if plan.missing_partitions:
            missing = ", ".join(str(partition) for partition in plan.missing_partitions)
            print(f"  the database names partitions the topic does not have: {missing}")


def _print_dry_run_summary(plans: list[TopicPlan]) -> None:
    partition_count = sum(len(plan.changes) for plan in plans)
    records = sum(change.records_again for plan in plans for change in plan.changes)
    listed = sum(plan.members_listed or 0 for plan in plans)
    print(
        f"\ndry run, nothing changed: --apply would rewind {partition_count} partitions"
        f" ({records} records come again)."
    )
    if listed:
        print(
            f"The groups list {listed} members: stop every consumer first; --apply joins each"
            " group and refuses unless it is given every partition."
        )
