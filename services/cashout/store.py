"""Cash-outs as stored: the `Cashout` record, its rows, its transitions and the outbox rows each
change queues (`cashouts.updated`, `payouts.requested`)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import topics
from schemas.events import ID_LENGTH_MAX, CashoutUpdated
from services.rates.fx import decimal_text

CASHOUT_LIST_LIMIT_MAX = 1_000
OPEN_STATUSES = ("held", "submitted")
# A cursor of the cash-outs list names the last cash-out of a page by its key: the microseconds
# from 1970-01-01T00:00:00Z to its `occurred_at` (cash-outs occur from 2000 on), `:`, its id.
# Every text the pattern admits is a key (one that names no cash-out still has a place in the
# order), so a cursor is refused by the pattern or not at all.
CASHOUT_CURSOR_PATTERN: Final = r"^[0-9]{1,17}:[^\x00]+$"
CASHOUT_CURSOR_LENGTH_MAX: Final = 17 + 1 + ID_LENGTH_MAX
_CASHOUT_CURSOR = re.compile(CASHOUT_CURSOR_PATTERN)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def cashout_event_id(cashout_id: str, what: str) -> str:
    """The event_id of an event giftledger publishes about a cash-out (`what`: a status, or
    `payout`): the same every time, and never another cash-out's.

    `<cashout_id>:<what>` while that fits in an event_id, else `<what>#<sha256 of cashout_id>`,
    which holds no `:`, so the two forms never meet (cutting the long form at 128 characters, as
    before, gave two long ids that differ only at the end the same event ids)."""
    readable = f"{cashout_id}:{what}"
    if len(readable) <= ID_LENGTH_MAX:
        return readable
    return f"{what}#{hashlib.sha256(cashout_id.encode()).hexdigest()}"


@dataclass(slots=True, kw_only=True)
class Cashout:
    cashout_id: str
    creator_id: str
    asset: str
    amount: int
    payout_currency: str
    payout_amount: int | None
    usd_value_micros: int
    rate_card_version: int | None
    fx_numerator: int | None
    fx_denominator: int | None
    status: str
    rejected_rule: str | None
    failure_code: str | None
    payout_account_ref: str | None
    occurred_at: datetime
    # When the cash-out last changed state: its latest transition's time, the `occurred_at` of
    # the `cashouts.updated` record of its current state (None until it is first stored).
    transitioned_at: datetime | None = None

    def updated_event(self, moment: datetime) -> CashoutUpdated:
        fx = None
        if self.fx_numerator is not None and self.fx_denominator is not None:
            fx = decimal_text(Fraction(self.fx_numerator, self.fx_denominator))
        return CashoutUpdated(
            event_id=cashout_event_id(self.cashout_id, self.status),
            occurred_at=moment,
            cashout_id=self.cashout_id,
            creator_id=self.creator_id,
            status=self.status,  # type: ignore[arg-type]
            asset=self.asset,
            amount=self.amount,
            payout_currency=self.payout_currency,
            payout_amount=self.payout_amount,
            rate_card_version=self.rate_card_version,
            fx_rate=fx,
            failure_code=self.failure_code,
            rejected_rule=self.rejected_rule,
        )


@dataclass(slots=True)
class Transition:
    """A cash-out's change of state to store: the cash-out as it stands in that state (a copy,
    when it changes again in the same batch), the transition's detail, and a message to queue
    right after its `cashouts.updated` under the same key (a payout request: (topic, payload))."""

    cashout: Cashout
    detail: str = ""
    then_queue: tuple[str, str] | None = None


_INSERT_CASHOUTS = text(
    """
    INSERT INTO cashouts (cashout_id, creator_id, asset, amount, payout_currency, payout_amount,
        usd_value_micros, rate_card_version, fx_numerator, fx_denominator, status, rejected_rule,
        failure_code, payout_account_ref, requested_on, occurred_at)
    SELECT * FROM unnest(
        CAST(:ids AS text[]), CAST(:creators AS text[]), CAST(:assets AS text[]),
        CAST(:amounts AS bigint[]), CAST(:currencies AS text[]), CAST(:payouts AS bigint[]),
        CAST(:usd AS bigint[]), CAST(:cards AS integer[]), CAST(:fx_n AS bigint[]),
        CAST(:fx_d AS bigint[]), CAST(:statuses AS text[]), CAST(:rules AS text[]),
        CAST(:failures AS text[]), CAST(:refs AS text[]), CAST(:days AS date[]),
        CAST(:occurred_at AS timestamptz[]))
    """
)

_UPDATE_CASHOUTS = text(
    """
    UPDATE cashouts c SET payout_amount = u.payout, usd_value_micros = u.usd,
        rate_card_version = u.card, fx_numerator = u.fx_n, fx_denominator = u.fx_d,
        status = u.status, rejected_rule = u.rule, failure_code = u.failure,
        payout_account_ref = u.ref, updated_at = clock_timestamp()
    FROM unnest(
        CAST(:ids AS text[]), CAST(:payouts AS bigint[]), CAST(:usd AS bigint[]),
        CAST(:cards AS integer[]), CAST(:fx_n AS bigint[]), CAST(:fx_d AS bigint[]),
        CAST(:statuses AS text[]), CAST(:rules AS text[]), CAST(:failures AS text[]),
        CAST(:refs AS text[])) AS u(id, payout, usd, card, fx_n, fx_d, status, rule, failure, ref)
    WHERE c.cashout_id = u.id
    """
)

# In list order: the identity (`seq`) follows the order the rows are inserted in.
_INSERT_TRANSITIONS = text(
    """
    INSERT INTO cashout_transitions (cashout_id, status, detail)
    SELECT t.id, t.status, t.detail
    FROM unnest(CAST(:ids AS text[]), CAST(:statuses AS text[]), CAST(:details AS text[]))
         WITH ORDINALITY AS t(id, status, detail, position)
    ORDER BY t.position
    RETURNING seq, at
    """
)

# In list order, so each key's messages leave in the order they were queued.
_QUEUE = text(
    """
    INSERT INTO outbox (topic_prefix, topic, message_key, payload)
    SELECT CAST(:prefix AS text), q.topic, q.message_key, q.payload
    FROM unnest(CAST(:topics AS text[]), CAST(:keys AS text[]), CAST(:payloads AS bytea[]))
         WITH ORDINALITY AS q(topic, message_key, payload, position)
    ORDER BY q.position
    """
)


def _changing_columns(cashouts: Sequence[Cashout]) -> dict[str, list[Any]]:
    return {
        "ids": [c.cashout_id for c in cashouts],
        "payouts": [c.payout_amount for c in cashouts],
        "usd": [c.usd_value_micros for c in cashouts],
        "cards": [c.rate_card_version for c in cashouts],
        "fx_n": [c.fx_numerator for c in cashouts],
        "fx_d": [c.fx_denominator for c in cashouts],
        "statuses": [c.status for c in cashouts],
        "rules": [c.rejected_rule for c in cashouts],
        "failures": [c.failure_code for c in cashouts],
        "refs": [c.payout_account_ref for c in cashouts],
    }


async def insert_cashouts(conn: AsyncConnection, cashouts: Sequence[Cashout]) -> None:
    """New cash-outs' rows, in one statement."""
    if not cashouts:
        return
    await conn.execute(
        _INSERT_CASHOUTS,
        {
            **_changing_columns(cashouts),
            "creators": [c.creator_id for c in cashouts],
            "assets": [c.asset for c in cashouts],
            "amounts": [c.amount for c in cashouts],
            "currencies": [c.payout_currency for c in cashouts],
            "days": [c.occurred_at.astimezone(UTC).date() for c in cashouts],
            "occurred_at": [c.occurred_at for c in cashouts],
        },
    )


async def update_cashouts(conn: AsyncConnection, cashouts: Sequence[Cashout]) -> None:
    """Stored cash-outs' rows set to their current state, in one statement; each cash-out at
    most once."""
    if not cashouts:
        return
    columns = _changing_columns(cashouts)
    assert len(set(columns["ids"])) == len(cashouts), "a cash-out updated twice in one statement"
    await conn.execute(_UPDATE_CASHOUTS, columns)


async def store_transitions(conn: AsyncConnection, transitions: Sequence[Transition]) -> None:
    """Store the state changes, in order, in one statement; each cash-out's `transitioned_at`
    becomes its transition's time."""
    if not transitions:
        return
    stored = (
        await conn.execute(
            _INSERT_TRANSITIONS,
            {
                "ids": [t.cashout.cashout_id for t in transitions],
                "statuses": [t.cashout.status for t in transitions],
                "details": [t.detail for t in transitions],
            },
        )
    ).all()
    moments = [row.at for row in sorted(stored, key=lambda row: row.seq)]
    for transition, moment in zip(transitions, moments, strict=True):
        transition.cashout.transitioned_at = moment


async def queue_transitions(
    conn: AsyncConnection, transitions: Sequence[Transition], topic_prefix: str
) -> None:
    """Queue stored state changes for `cashouts.updated`, in order, each followed by its
    `then_queue` message, on the topics of the deployment with `topic_prefix`: one statement."""
    queued: list[tuple[str, str, bytes]] = []
    for transition in transitions:
        cashout = transition.cashout
        if cashout.transitioned_at is None:
            raise ValueError(f"the transition of {cashout.cashout_id} has not been stored")
        event = cashout.updated_event(cashout.transitioned_at)
        queued.append(
            (topics.CASHOUTS_UPDATED, cashout.creator_id, event.model_dump_json().encode())
        )
        if transition.then_queue is not None:
            topic, payload = transition.then_queue
            queued.append((topic, cashout.creator_id, payload.encode()))
    if not queued:
        return
    await conn.execute(
        _QUEUE,
        {
            "prefix": topic_prefix,
            "topics": [topic for topic, _, _ in queued],
            "keys": [key for _, key, _ in queued],
            "payloads": [payload for _, _, payload in queued],
        },
    )


async def record_transitions(
    conn: AsyncConnection, transitions: Sequence[Transition], topic_prefix: str
) -> None:
    """Store the state changes with their times and queue them for `cashouts.updated` (on the
    topics of the deployment with `topic_prefix`): two statements, whatever their number."""
    await store_transitions(conn, transitions)
    await queue_transitions(conn, transitions, topic_prefix)


async def record_transition(
    conn: AsyncConnection, cashout: Cashout, topic_prefix: str, detail: str = ""
) -> None:
    """Store the state change with its time and queue it for `cashouts.updated` (on the topics
    of the deployment with `topic_prefix`)."""
    await record_transitions(conn, [Transition(cashout, detail)], topic_prefix)


_CASHOUT_ROWS = """
    SELECT cashout_id, creator_id, asset, amount, payout_currency, payout_amount,
           usd_value_micros, rate_card_version, fx_numerator, fx_denominator, status,
           rejected_rule, failure_code, payout_account_ref, occurred_at,
           (SELECT t.at FROM cashout_transitions t WHERE t.cashout_id = cashouts.cashout_id
            ORDER BY t.seq DESC LIMIT 1) AS transitioned_at
    FROM cashouts
"""
_SELECT_CASHOUT = _CASHOUT_ROWS + " WHERE cashout_id = :id"
_SELECT_LOCKED_CASHOUT = _SELECT_CASHOUT + " FOR UPDATE"


async def load_cashout(
    conn: AsyncConnection, cashout_id: str, *, lock: bool = False
) -> Cashout | None:
    row = (
        await conn.execute(
            text(_SELECT_LOCKED_CASHOUT if lock else _SELECT_CASHOUT),
            {"id": cashout_id},
        )
    ).first()
    return None if row is None else Cashout(**row._mapping)


async def load_cashouts(
    conn: AsyncConnection, cashout_ids: list[str], *, lock: bool = False
) -> dict[str, Cashout]:
    """The stored cash-outs among `cashout_ids`, by id, read `CASHOUT_LIST_LIMIT_MAX` ids per
    statement; unknown ids are left out. With `lock`, their rows are locked in id order: a
    transaction that locks all its cash-outs so, before any account, never waits on another in
    a cycle (the ledger locks accounts in id order too)."""
    found: dict[str, Cashout] = {}
    ordered = sorted(set(cashout_ids))
    suffix = " ORDER BY cashout_id FOR UPDATE" if lock else ""
    for start in range(0, len(ordered), CASHOUT_LIST_LIMIT_MAX):
        rows = await conn.execute(
            text(_CASHOUT_ROWS + " WHERE cashout_id = ANY(CAST(:ids AS text[]))" + suffix),
            {"ids": ordered[start : start + CASHOUT_LIST_LIMIT_MAX]},
        )
        found.update((row.cashout_id, Cashout(**row._mapping)) for row in rows)
    return found


async def lock_cashout_rows(conn: AsyncConnection, cashout_ids: Sequence[str]) -> None:
    """Lock the rows of these cash-outs (those that exist) until the transaction ends, in id
    order, as `load_cashouts` with `lock` does, without reading them."""
    ordered = sorted(set(cashout_ids))
    for start in range(0, len(ordered), CASHOUT_LIST_LIMIT_MAX):
        await conn.execute(
            text(
                "SELECT 1 FROM cashouts WHERE cashout_id = ANY(CAST(:ids AS text[]))"
                " ORDER BY cashout_id FOR UPDATE"
            ),
            {"ids": ordered[start : start + CASHOUT_LIST_LIMIT_MAX]},
        )


def cashout_document(cashout: Cashout) -> dict[str, Any]:
    """The cash-out as the `cashouts.updated` record of its current state: the same fields, its
    `occurred_at` the time of that state change, so every read gives the same document."""
    if cashout.transitioned_at is None:
        raise ValueError(f"cash-out {cashout.cashout_id} has not been stored")
    event = cashout.updated_event(cashout.transitioned_at)
    return json.loads(event.model_dump_json())  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class CashoutKey:
    """Where a cash-out sits in the list: newest first (`occurred_at` descending), then by id
    (ascending), the order of the indexes `cashouts_newest` and `cashouts_status_newest`."""

    occurred_at: datetime
    cashout_id: str


@dataclass(frozen=True, slots=True)
class CashoutPage:
    """Up to a page of cash-outs, in list order, and the last one's key to continue after (None:
    none left)."""

    cashouts: list[Cashout]
    next_after: CashoutKey | None


# After the cursor: later in the list's order than the cash-out it names, that is older, or as
# old with a greater id. `occurred_at <= :after_at` is the index condition; the rest drops the
# cursor's own instant's ids up to it.
_LIST_CASHOUTS = text(
    _CASHOUT_ROWS
    + """
    WHERE (CAST(:status AS text) IS NULL OR status = :status)
      AND (CAST(:creator AS text) IS NULL OR creator_id = :creator)
      AND (CAST(:stale_s AS double precision) IS NULL
           OR (status IN ('held', 'submitted')
               AND updated_at < clock_timestamp() - make_interval(secs => :stale_s)))
      AND (CAST(:after_at AS timestamptz) IS NULL
           OR (occurred_at <= :after_at
               AND (occurred_at < :after_at OR cashout_id > CAST(:after_id AS text))))
    ORDER BY occurred_at DESC, cashout_id
    LIMIT :limit
    """
)


async def list_cashouts(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    creator_id: str | None = None,
    stale_after_s: float | None = None,
    after: CashoutKey | None = None,
    limit: int = 100,
) -> CashoutPage:
    """Cash-outs, newest first (then by id), filtered by status and creator, after the cash-out
    `after` (None: from the newest); with `stale_after_s`, only the holds that have waited longer
    than that for the bank's answer. Paging from the cursor visits every cash-out of the filter
    once, however many share an `occurred_at`."""
    if not 1 <= limit <= CASHOUT_LIST_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {CASHOUT_LIST_LIMIT_MAX}")
    rows = await conn.execute(
        _LIST_CASHOUTS,
        {
            "status": status,
            "creator": creator_id,
            "stale_s": stale_after_s,
            "after_at": None if after is None else after.occurred_at,
            "after_id": None if after is None else after.cashout_id,
            "limit": limit + 1,  # one more: whether a next page exists
        },
    )
    found = [Cashout(**row._mapping) for row in rows]
    if len(found) > limit:
        last = found[limit - 1]
        return CashoutPage(found[:limit], CashoutKey(last.occurred_at, last.cashout_id))
    return CashoutPage(found, None)


def cashout_cursor(key: CashoutKey) -> str:
    """The text of a cursor of the cash-outs list (`CASHOUT_CURSOR_PATTERN`)."""
    return f"{(key.occurred_at - _EPOCH) // _MICROSECOND}:{key.cashout_id}"


def cashout_key(cursor: str) -> CashoutKey:
    """The key a cursor of the cash-outs list names; ValueError for a text the pattern refuses."""
    if len(cursor) > CASHOUT_CURSOR_LENGTH_MAX or _CASHOUT_CURSOR.fullmatch(cursor) is None:
        raise ValueError(
            f"not a cursor of the cash-outs list (MICROSECONDS:CASHOUT_ID, as `next_cursor` "
            f"gives it): {cursor[:40]!r}"
        )
    micros, cashout_id = cursor.split(":", 1)
    return CashoutKey(_EPOCH + int(micros) * _MICROSECOND, cashout_id)


def cashout_list_document(page: CashoutPage) -> dict[str, Any]:
    """`GET /v1/cashouts`' answer (`CashoutListDocument`), as `giftledger cashouts --json` prints
    it."""
    return {
        "cashouts": [cashout_document(cashout) for cashout in page.cashouts],
        "next_cursor": None if page.next_after is None else cashout_cursor(page.next_after),
    }
