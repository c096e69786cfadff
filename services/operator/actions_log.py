"""The operator actions log: every action a person takes by hand, appended to `operator_actions`
in the caller's transaction and queued in the outbox for `operator.actions`.

Each action has a client-supplied idempotency key: the same key with the same content is the
same action (`record_action` returns the recorded one and appends nothing); the same key with
other content is refused (`ActionKeyConflictError`). Content is everything the caller gives:
actor, action, target, reason, ticket and details.

The log is a hash chain. An action's canonical content is its fields as one JSON object with
sorted keys, no spaces and non-ASCII kept as UTF-8: `id`, `idempotency_key`, `actor`, `role`,
`action`, `target`, `reason`, `ticket` (null when none), `details`, and `recorded_at` as ISO 8601
UTC with microseconds. `hash = sha256(previous_hash || canonical content)`, the first action's
previous hash being 32 zero bytes. Appends take the one-row `operator_actions_head` lock first and
only then draw their id, so ids ascend in chain order however many transactions append at once;
the head keeps the last action's hash, so a removed last action shows too.
`verify_action_chain` recomputes the chain.

An action that checks the state it acts on starts with `hold_log`: its transaction acts as the
writer role and holds the log's lock, looks its key up (a key recorded with the same content
returns that action) and only then checks, appends and makes its change.

The `operator.actions` message is keyed by `details["message_key"]` when the action names one (a
re-driven dead letter names its source record's key; an action on a cash-out names its creator),
else by `target` (a creator id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import topics
from schemas.events import (
    ACTION_NAME_PATTERN,
    ACTION_REASON_LENGTH_MAX,
    ACTION_TARGET_LENGTH_MAX,
    ID_LENGTH_MAX,
    ONE_LINE_PATTERN,
    OPERATOR_NAME_LENGTH_MAX,
    OPERATOR_NAME_PATTERN,
    VISIBLE_ASCII_PATTERN,
    OperatorActionRecorded,
)
from services.runtime.outbox_rows import queue

OPERATOR_ROLE: Final = "operator"
# The name of the log's check in `giftledger verify`.
OPERATOR_ACTIONS_CHECK: Final = "operator_actions_chain_intact"
GENESIS_HASH: Final = bytes(32)
MESSAGE_KEY_DETAIL: Final = "message_key"
DETAILS_JSON_LENGTH_MAX: Final = 16_384
DETAILS_DEPTH_MAX: Final = 8
ACTION_NAME_LENGTH_MAX: Final = 64
CHAIN_CHECK_ROWS_PER_QUERY: Final = 1_000
PROBLEM_COUNT_MAX: Final = 100
ACTION_LIST_LIMIT_MAX: Final = 1_000

_VISIBLE_ASCII = re.compile(VISIBLE_ASCII_PATTERN)
_OPERATOR_NAME = re.compile(OPERATOR_NAME_PATTERN)
_ACTION_NAME = re.compile(ACTION_NAME_PATTERN)
_ONE_LINE = re.compile(ONE_LINE_PATTERN)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ActionEntry:
    """An action as its caller asks for it: its idempotency key and the content it stands for."""

    idempotency_key: str
    actor: str
    action: str
    target: str
    reason: str
    ticket: str | None
    details: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class OperatorAction(ActionEntry):
    """An action as the log recorded it: its entry (details as stored), its id and its time."""

    id: int
    details: dict[str, Any]
    recorded_at: datetime


class ActionKeyConflictError(Exception):
    """The idempotency key was already used for an action with other content."""

    def __init__(self, recorded: OperatorAction) -> None:
        self.recorded = recorded
        super().__init__(
            f"idempotency key {recorded.idempotency_key!r} is already action {recorded.id}"
            f" ({recorded.action} on {recorded.target} by {recorded.actor}) with other content:"
            " use a new key for a new action"
        )


class InvalidActionError(ValueError):
    """A field of an action breaks the log's rules (the message says which)."""


# Checks ------------------------------------------------------------------------------------


# What each pattern allows, for the message that refuses a value.
_PATTERN_RULES: Final = {
    _VISIBLE_ASCII: "visible ASCII, no space",
    _OPERATOR_NAME: "letters, digits and ._@-, starting with a letter or digit",
    _ACTION_NAME: "lower-case letters and _",
    _ONE_LINE: "one line, no control characters (tab, newline, ...), line separators or"
    " bidirectional overrides",
}
REFUSED_VALUE_SHOWN_MAX: Final = 60


def _check_text(name: str, value: str, pattern: re.Pattern[str], length_max: int) -> None:
    if not 1 <= len(value) <= length_max or pattern.fullmatch(value) is None:
        shown = repr(value[:REFUSED_VALUE_SHOWN_MAX]) + (
            f" (cut, {len(value):,} characters)" if len(value) > REFUSED_VALUE_SHOWN_MAX else ""
        )
        raise InvalidActionError(
            f"{name} {shown} is not valid: 1 to {length_max:,} characters,"
            f" {_PATTERN_RULES[pattern]}"
        )


def _check_json_value(value: object, depth: int) -> None:
    """JSON without floats (amounts are integers in minor units) or NUL characters (PostgreSQL
    text cannot hold them), nested at most DETAILS_DEPTH_MAX deep."""
    if depth > DETAILS_DEPTH_MAX:
        raise InvalidActionError(f"details are nested deeper than {DETAILS_DEPTH_MAX}")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidActionError("details must not hold NUL characters")
        return
    if isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or "\x00" in key:
                raise InvalidActionError("details keys must be strings without NUL characters")
            _check_json_value(item, depth + 1)
        return
    raise InvalidActionError(
        f"details hold a {type(value).__name__}: only strings, integers, booleans, null, lists"
        " and objects (amounts are integers in minor units)"
    )


def normalized_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """`details` as the log stores and reads them back (a plain JSON object), checked."""
    _check_json_value(dict(details), 1)
    encoded = _CANONICAL.encode(dict(details))
    if len(encoded) > DETAILS_JSON_LENGTH_MAX:
        raise InvalidActionError(f"details are longer than {DETAILS_JSON_LENGTH_MAX} characters")
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded


def check_action(
    *,
    idempotency_key: str,
    actor: str,
    action: str,
    target: str,
    reason: str,
    ticket: str | None,
) -> None:
    """Raise `InvalidActionError` unless every field fits the log (and `operator.actions`)."""
    _check_text("idempotency key", idempotency_key, _VISIBLE_ASCII, ID_LENGTH_MAX)
    _check_text("operator name", actor, _OPERATOR_NAME, OPERATOR_NAME_LENGTH_MAX)
    _check_text("action", action, _ACTION_NAME, ACTION_NAME_LENGTH_MAX)
    _check_text("target", target, _VISIBLE_ASCII, ACTION_TARGET_LENGTH_MAX)
    _check_text("reason", reason, _ONE_LINE, ACTION_REASON_LENGTH_MAX)
    if ticket is not None:
        _check_text("ticket", ticket, _VISIBLE_ASCII, ID_LENGTH_MAX)


# The chain ---------------------------------------------------------------------------------


def canonical_content(action: OperatorAction, role: str) -> bytes:
    """The bytes the chain hashes for `action` (see the module's docstring)."""
    content = {
        "id": action.id,
        "idempotency_key": action.idempotency_key,
        "actor": action.actor,
        "role": role,
        "action": action.action,
        "target": action.target,
        "reason": action.reason,
        "ticket": action.ticket,
        "details": action.details,
        "recorded_at": action.recorded_at.astimezone(UTC).isoformat(timespec="microseconds"),
    }
    return _CANONICAL.encode(content).encode("utf-8")


def chain_hash(previous_hash: bytes, action: OperatorAction, role: str) -> bytes:
    return hashlib.sha256(previous_hash + canonical_content(action, role)).digest()


# Reading -----------------------------------------------------------------------------------

_COLUMNS = (
    "id, idempotency_key, actor, role, action, target, reason, ticket, details::text AS details,"
    " recorded_at, previous_hash, hash"
)


@dataclass(frozen=True, slots=True)
class _StoredAction:
    action: OperatorAction
    role: str
    previous_hash: bytes
    hash: bytes


def _stored(row: Any) -> _StoredAction:
    action = OperatorAction(
        id=row.id,
        idempotency_key=row.idempotency_key,
        actor=row.actor,
        action=row.action,
        target=row.target,
        reason=row.reason,
        ticket=row.ticket,
        details=json.loads(row.details),
        recorded_at=row.recorded_at,
    )
    return _StoredAction(action, row.role, bytes(row.previous_hash), bytes(row.hash))


async def find_action(conn: AsyncConnection, idempotency_key: str) -> OperatorAction | None:
    """The action recorded under `idempotency_key`, if any."""
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM operator_actions WHERE idempotency_key = :key"),  # noqa: S608
            {"key": idempotency_key},
        )
    ).first()
    return None if row is None else _stored(row).action


async def load_action(conn: AsyncConnection, action_id: int) -> OperatorAction | None:
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM operator_actions WHERE id = :id"),  # noqa: S608
            {"id": action_id},
        )
    ).first()
    return None if row is None else _stored(row).action


async def list_actions(
    conn: AsyncConnection, *, target: str | None = None, after_id: int = 0, limit: int = 100
) -> list[OperatorAction]:
    """Actions in log order after `after_id`, all or those on `target`, at most `limit`."""
    if not 1 <= limit <= ACTION_LIST_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {ACTION_LIST_LIMIT_MAX}")
    rows = await conn.execute(
        text(
            f"SELECT {_COLUMNS} FROM operator_actions"  # noqa: S608
            " WHERE id > :after AND (CAST(:target AS text) IS NULL OR target = :target)"
            " ORDER BY id LIMIT :limit"
        ),
        {"after": after_id, "target": target, "limit": limit},
    )
    return [_stored(row).action for row in rows]


# Appending ---------------------------------------------------------------------------------


def _content(action: ActionEntry) -> tuple[object, ...]:
    """What an idempotency key stands for: everything but the id and the time."""
    return (
        action.actor,
        action.action,
        action.target,
        action.reason,
        action.ticket,
        action.details,
    )


async def lock_log(conn: AsyncConnection) -> bytes:
    """Take the log's lock (its head row) until the caller's transaction ends; returns the last
    action's hash. An action that checks state before recording takes it first, so no other
    action can change that state between its checks and its append."""
    head = await conn.execute(text("SELECT hash FROM operator_actions_head FOR UPDATE"))
    return bytes(head.scalar_one())


async def check_key(conn: AsyncConnection, entry: ActionEntry) -> OperatorAction | None:
    """The action recorded under the entry's key with its content, or None when the key is
    unused; raises `ActionKeyConflictError` when it was used for other content. Appends nothing."""
    recorded = await find_action(conn, entry.idempotency_key)
    if recorded is None:
        return None
    asked = dataclasses.replace(entry, details=normalized_details(entry.details))
    if _content(recorded) != _content(asked):
        raise ActionKeyConflictError(recorded)
    return recorded


async def act_as(conn: AsyncConnection, database_role: str | None) -> None:
    """Run the rest of the caller's transaction as `database_role` (the services' writer role),
    when given."""
    if database_role is not None:
        await conn.execute(text("SELECT set_config('role', :role, true)"), {"role": database_role})


class HeldLog:
    """The log as an operator action's transaction holds it (`hold_log`): acting as the writer
    role, with the log's lock until the transaction ends, so that the action's checks and its
    append see no other action in between."""

    def __init__(self, conn: AsyncConnection, topic_prefix: str) -> None:
        self._conn = conn
        self._topic_prefix = topic_prefix

    async def recorded(self, entry: ActionEntry) -> OperatorAction | None:
        """The action recorded under the entry's key with its content, or None when the key is
        unused; raises `ActionKeyConflictError` when it was used for other content."""
        return await check_key(self._conn, entry)

    async def record(self, entry: ActionEntry) -> OperatorAction:
        """Append the entry (see `record_action`): call it after `recorded` found nothing, before
        the action's other writes."""
        action, _ = await record_action(
            self._conn,
            idempotency_key=entry.idempotency_key,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            reason=entry.reason,
            ticket=entry.ticket,
            details=entry.details,
            topic_prefix=self._topic_prefix,
        )
        return action


async def hold_log(
    conn: AsyncConnection, *, database_role: str | None, topic_prefix: str
) -> HeldLog:
    """Start an operator action in the caller's transaction: act as `database_role` when given
    (`act_as`), take the log's lock (`lock_log`); then look its key up (`HeldLog.recorded`) and,
    when it is new, check the state it acts on and append it (`HeldLog.record`), whose message
    goes to the outbox of `topic_prefix`."""
    await act_as(conn, database_role)
    await lock_log(conn)
    return HeldLog(conn, topic_prefix)


def message_key(action: OperatorAction) -> str:
    """The Kafka key of the action's `operator.actions` message."""
    key = action.details.get(MESSAGE_KEY_DETAIL)
    return key if isinstance(key, str) and key else action.target


def recorded_event(
    action: OperatorAction, role: str, previous_hash: bytes, hash_: bytes
) -> OperatorActionRecorded:
    return OperatorActionRecorded(
        event_id=f"operator-action:{action.id}",
        occurred_at=action.recorded_at,
        action_id=action.id,
        idempotency_key=action.idempotency_key,
        actor=action.actor,
        role=role,  # type: ignore[arg-type]
        action=action.action,
        target=action.target,
        reason=action.reason,
        ticket=action.ticket,
        details=action.details,
        previous_hash=previous_hash.hex(),
        hash=hash_.hex(),
    )


async def record_action(
    conn: AsyncConnection,
    *,
    idempotency_key: str,
    actor: str,
    action: str,
    target: str,
    reason: str,
    ticket: str | None,
    details: Mapping[str, Any],
    topic_prefix: str,
) -> tuple[OperatorAction, bool]:
    """Append (in the caller's transaction) and queue the `operator.actions` message in the
    outbox table; returns (action, True) or, for a key already recorded with the same content,
    (the recorded action, False). Raises `ActionKeyConflictError` for a key recorded with other
    content, `InvalidActionError` for a field the log cannot take.

    Holds the log's head locked until the caller's transaction ends: call it before the action's
    other writes, and skip them when it returns False."""
    check_action(
        idempotency_key=idempotency_key,
        actor=actor,
        action=action,
        target=target,
        reason=reason,
        ticket=ticket,
    )
    stored_details = normalized_details(details)
    previous_hash = await lock_log(conn)
    recorded = await check_key(
        conn, ActionEntry(idempotency_key, actor, action, target, reason, ticket, stored_details)
    )
    if recorded is not None:
        return recorded, False
    # The next id after the head's, which this transaction holds locked: an action rolled
    # back (an approval the ledger refused) uses none up, so the log's ids have no gaps that
    # a reader could take for a removed row. (The table's sequence is not used.)
    drawn = (
        await conn.execute(
            text(
                "SELECT COALESCE(action_id, 0) + 1 AS id, clock_timestamp() AS at"
                " FROM operator_actions_head"
            )
        )
    ).one()
    candidate = OperatorAction(
        id=drawn.id,
        idempotency_key=idempotency_key,
        actor=actor,
        action=action,
        target=target,
        reason=reason,
        ticket=ticket,
        details=stored_details,
        recorded_at=drawn.at,
    )
    hash_ = chain_hash(previous_hash, candidate, OPERATOR_ROLE)
    await conn.execute(
        text(
            """
            INSERT INTO operator_actions (id, idempotency_key, actor, role, action, target,
                reason, ticket, details, recorded_at, previous_hash, hash)
            VALUES (:id, :key, :actor, :role, :action, :target, :reason, :ticket,
                CAST(:details AS jsonb), :at, :previous_hash, :hash)
            """
        ),
        {
            "id": candidate.id,
            "key": idempotency_key,
            "actor": actor,
            "role": OPERATOR_ROLE,
            "action": action,
            "target": target,
            "reason": reason,
            "ticket": ticket,
            "details": _CANONICAL.encode(stored_details),
            "at": candidate.recorded_at,
            "previous_hash": previous_hash,
            "hash": hash_,
        },
    )
    await conn.execute(
        text("UPDATE operator_actions_head SET action_id = :id, hash = :hash"),
        {"id": candidate.id, "hash": hash_},
    )
    event = recorded_event(candidate, OPERATOR_ROLE, previous_hash, hash_)
    await queue(
        conn,
        topic_prefix,
        topics.OPERATOR_ACTIONS,
        message_key(candidate),
        event.model_dump_json(),
    )
    return candidate, True


# Verifying ---------------------------------------------------------------------------------


async def verify_action_chain(conn: AsyncConnection) -> list[str]:
    """Recompute the log's chain from the stored rows; describe every break found (at most
    PROBLEM_COUNT_MAX). An empty list means the log is as it was recorded."""
    problems: list[str] = []
    previous = GENESIS_HASH
    last_id: int | None = None
    while len(problems) < PROBLEM_COUNT_MAX:
        rows = (
            await conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM operator_actions WHERE id > :after"  # noqa: S608
                    " ORDER BY id LIMIT :limit"
                ),
                {"after": last_id or 0, "limit": CHAIN_CHECK_ROWS_PER_QUERY},
            )
        ).all()
        if not rows:
            break
        for row in rows:
            stored = _stored(row)
            last_id = stored.action.id
            if stored.previous_hash != previous:
                problems.append(f"operator action {last_id} does not follow the action before it")
            if chain_hash(stored.previous_hash, stored.action, stored.role) != stored.hash:
                problems.append(
                    f"operator action {last_id}: its content was changed after it was recorded"
                )
            previous = stored.hash
    head = (await conn.execute(text("SELECT action_id, hash FROM operator_actions_head"))).one()
    if (head.action_id, bytes(head.hash)) != (last_id, previous) and len(
        problems
    ) < PROBLEM_COUNT_MAX:
        problems.append("the operator actions head does not match the last action")
    return problems[:PROBLEM_COUNT_MAX]
