"""The hash chain over posted batches (tamper evidence).

Each batch that stores transfers appends a link: the ids of its transfers, a SHA-256 digest of
their canonical form, and `hash = sha256(previous hash || digest)`. The link is appended at the
end of the batch's transaction, holding the one-row chain head only until the commit, so
concurrent writers wait on it for a moment, not for their whole batch.

The canonical form of a transfer is one line of its stored fields, in a fixed order, joined by
`|`; timestamps in ISO 8601 UTC with microseconds; metadata as JSON with sorted keys. Lines are
ordered by transfer id, so the digest does not depend on the order rows come back in. A line is
its head (every field up to the running balances, `line_head`) and its tail (the two running
balances and the commit timestamp, `line_tail`).

A link's digest has one of two forms, stored with it (`ledger_links.form`); both cover every
field of every transfer the link names:

- `LINK_FORM_LINES`: the SHA-256 of the whole lines. `append_link_entries` makes these links;
  every link stored before migration 0027 is of this form.
- `LINK_FORM_HEADS_AND_BALANCES`: `sha256(sha256(heads) || sha256(balances))`, where `heads` is
  the lines' heads in id order and `balances` the text `{{d,c},{d,c},...}|<timestamp>`: each
  transfer's debit and credit running balance in id order, as PostgreSQL writes a
  two-dimensional `bigint` array, then the commit timestamp the link's transfers share. A unit
  of work's last write appends such a link inside its own statement (`ledger.store`): the heads
  are made (`line_head_sql`) and hashed before the accounts are locked, so only the balances
  are hashed while the locks are held (`tests/test_ledger_linked_write.py` holds the SQL and
  this module to one digest).
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.model import StoredTransfer

CHAIN_CHECK_LINKS_PER_QUERY = 500
PROBLEM_COUNT_MAX = 100
TIMESTAMP_TEXT_CACHE_SIZE = 1024

# The forms of a link's digest (`ledger_links.form`; the module's docstring).
LINK_FORM_LINES = 1
LINK_FORM_HEADS_AND_BALANCES = 2


# One encoder for every transfer: json.dumps with options builds a new one on each call.
_METADATA_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def metadata_json(metadata: dict[str, Any] | None) -> str | None:
    """Metadata as the chain hashes it: JSON with sorted keys, no spaces. The posting path sends
    the same text to the database, so each transfer's metadata is serialized once."""
    if metadata is None:
        return None
    return _METADATA_ENCODER.encode(metadata)


@functools.lru_cache(maxsize=TIMESTAMP_TEXT_CACHE_SIZE)
def _timestamp_text(value: datetime) -> str:
    # A batch's transfers share one commit timestamp: it is formatted once, not once a row.
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def line_head(
    *,
    transfer_id: uuid.UUID,
    debit_account_id: int,
    credit_account_id: int,
    amount: int,
    asset: str,
    code: int,
    flags: int,
    pending_id: uuid.UUID | None,
    timeout_s: int | None,
    expires_at: datetime | None,
    rate_card_version: int | None,
    event_id: str | None,
    metadata_text: str | None,
) -> str:
    """The canonical line up to the fields that are known only once the batch is written."""
    return (
        f"{transfer_id}|{debit_account_id}|{credit_account_id}|{amount}|{asset}|{code}|{flags}|"
        f"{'' if pending_id is None else pending_id}|{'' if timeout_s is None else timeout_s}|"
        f"{'' if expires_at is None else _timestamp_text(expires_at)}|"
        f"{'' if rate_card_version is None else rate_card_version}|"
        f"{'' if event_id is None else event_id}|"
        f"{'' if metadata_text is None else metadata_text}|"
    )


# `line_head`'s fields in its order, as `line_head_sql` names them.
LINE_HEAD_FIELDS = (
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "asset",
    "code",
    "flags",
    "pending_id",
    "timeout_s",
    "expires_at",
    "rate_card_version",
    "event_id",
    "metadata",
)


def line_head_sql(fields: Mapping[str, str]) -> str:
    """`line_head` as a SQL expression: `fields` gives each of `LINE_HEAD_FIELDS` as SQL, NULL
    for None, `metadata` as the text `metadata_json` makes and `expires_at` as text in the form
    `TIMESTAMP_TEXT_SQL` gives. PostgreSQL writes integers and uuids as Python does, so the
    text of each field is `line_head`'s."""
    values = ", ".join(f"coalesce(CAST({fields[name]} AS text), '')" for name in LINE_HEAD_FIELDS)
    return f"concat_ws('|', {values}, '')"


def line_tail(debit_balance_after: int, credit_balance_after: int, created_at: datetime) -> str:
    """The rest of the canonical line: the running balances and the commit timestamp."""
    return f"{debit_balance_after}|{credit_balance_after}|{_timestamp_text(created_at)}\n"


def canonical_line(fields: StoredTransfer) -> bytes:
    """Every stored field but `seq`, which the database assigns after the batch is hashed."""
    tail = line_tail(fields.debit_balance_after, fields.credit_balance_after, fields.created_at)
    return (stored_line_head(fields) + tail).encode("utf-8")


def stored_line_head(fields: StoredTransfer) -> str:
    """`line_head` of a stored transfer: written out field by field because the chain's lines
    are started before the batch takes its account locks."""
    return line_head(
        transfer_id=fields.id,
        debit_account_id=fields.debit_account_id,
        credit_account_id=fields.credit_account_id,
        amount=fields.amount,
        asset=fields.asset,
        code=fields.code,
        flags=fields.flags,
        pending_id=fields.pending_id,
        timeout_s=fields.timeout_s,
        expires_at=fields.expires_at,
        rate_card_version=fields.rate_card_version,
        event_id=fields.event_id,
        metadata_text=metadata_json(fields.metadata),
    )


# A transfer as the chain sees it: its id as an integer (the sort key), its id, its line.
ChainEntry = tuple[int, uuid.UUID, bytes]


def chain_entry(fields: StoredTransfer) -> ChainEntry:
    return (fields.id.int, fields.id, canonical_line(fields))


def digest(transfers: Iterable[StoredTransfer]) -> bytes:
    """The digest of a `LINK_FORM_LINES` link of `transfers`."""
    return _digest_of_entries([chain_entry(fields) for fields in transfers])


def heads_and_balances_digest(transfers: Iterable[StoredTransfer]) -> bytes | None:
    """The digest of a `LINK_FORM_HEADS_AND_BALANCES` link of `transfers`; None when they do
    not share one commit timestamp, as the transfers of such a link always do."""
    ordered = sorted(transfers, key=lambda fields: fields.id.int)
    created_at = {fields.created_at for fields in ordered}
    if len(created_at) != 1:
        return None
    heads = "".join(stored_line_head(fields) for fields in ordered)
    balances = ",".join(
        f"{{{fields.debit_balance_after},{fields.credit_balance_after}}}" for fields in ordered
    )
    tail = f"{{{balances}}}|{_timestamp_text(created_at.pop())}"
    return hashlib.sha256(
        hashlib.sha256(heads.encode("utf-8")).digest()
        + hashlib.sha256(tail.encode("utf-8")).digest()
    ).digest()


def link_digest(form: int, transfers: Iterable[StoredTransfer]) -> bytes | None:
    """The digest a link of `form` holds for `transfers` (None: no link of that form can)."""
    if form == LINK_FORM_LINES:
        return digest(transfers)
    if form == LINK_FORM_HEADS_AND_BALANCES:
        return heads_and_balances_digest(transfers)
    return None


def _digest_of_entries(entries: Sequence[ChainEntry]) -> bytes:
    """SHA-256 of the entries' lines, ordered by transfer id (ids are unique, so lines are
    never compared)."""
    hasher = hashlib.sha256()
    for entry in sorted(entries):
        hasher.update(entry[2])
    return hasher.digest()


# The text of a line's timestamp (`_timestamp_text`) in SQL, for `timestamptz` `value`.
TIMESTAMP_TEXT_SQL = """to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


def link_ctes(digest: str, form: int) -> str:
    """CTEs that append a link to the chain for the transfers of the parameter `ids` (uuid[]),
    whose digest of `form` is the SQL expression `digest` (bytea): the one-row head is locked,
    the link inserted, the head moved onto it. The write (`ledger.store`) appends them to its
    own statement when it is the unit of work's last; `append_link_entries` runs them alone.

    A link of `LINK_FORM_LINES` leaves `form` to the column's default, that form, so that its
    statement is the same on a schema before migration 0027, which had no such column (the
    tests book a ledger of such a revision with it)."""
    form_column, form_value = ("", "") if form == LINK_FORM_LINES else (", form", f", {int(form)}")
    return f"""
    chain_head AS (
        SELECT hash FROM ledger_chain_head FOR UPDATE
    ), new_link AS (
        INSERT INTO ledger_links (transfer_ids, transfers_sha256, previous_hash, hash{form_column})
        SELECT CAST(:ids AS uuid[]), {digest}, chain_head.hash,
               sha256(chain_head.hash || {digest}){form_value}
        FROM chain_head
        RETURNING id, hash
    ), moved_head AS (
        UPDATE ledger_chain_head SET link_id = new_link.id, hash = new_link.hash FROM new_link
        RETURNING 1
    )"""  # noqa: S608 (constant fragments)


_APPEND_LINK = text(
    f"""
    WITH {link_ctes("CAST(:digest AS bytea)", LINK_FORM_LINES)}
    SELECT count(*) FROM moved_head
    """  # noqa: S608 (constant fragments)
)


async def append_link(conn: AsyncConnection, transfers: Sequence[StoredTransfer]) -> None:
    """Link a batch's stored transfers into the chain, in the caller's transaction."""
    await append_link_entries(conn, [chain_entry(fields) for fields in transfers])


async def append_link_entries(conn: AsyncConnection, entries: Sequence[ChainEntry]) -> None:
    """Link transfers, given as chain entries, into the chain, in the caller's transaction."""
    if not entries:
        return
    await conn.execute(
        _APPEND_LINK,
        {"ids": [entry[1] for entry in entries], "digest": _digest_of_entries(entries)},
    )


_LINKS_WITH_TRANSFERS = text(
    """
    WITH links AS (
        SELECT id, transfer_ids, transfers_sha256, previous_hash, hash, form FROM ledger_links
        WHERE id > :after ORDER BY id LIMIT :limit
    )
    SELECT l.id AS link_id, cardinality(l.transfer_ids) AS expected, l.transfers_sha256,
           l.previous_hash, l.hash, l.form,
           t.id, t.seq, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code, t.flags,
           t.pending_id, t.timeout_s, t.expires_at, t.rate_card_version, t.event_id,
           t.metadata::text AS metadata, t.debit_balance_after, t.credit_balance_after,
           t.created_at
    FROM links l
    LEFT JOIN LATERAL unnest(l.transfer_ids) AS wanted(id) ON true
    LEFT JOIN transfers t ON t.id = wanted.id
    ORDER BY l.id
    """
)
_TRANSFER_COLUMNS = tuple(name for name in StoredTransfer.__dataclass_fields__ if name != "seq")


@dataclass(slots=True)
class _Link:
    id: int
    expected: int
    transfers_sha256: bytes
    previous_hash: bytes
    hash: bytes
    form: int
    transfers: list[StoredTransfer]


def _fields(values: dict[str, Any]) -> StoredTransfer:
    stored = {name: values[name] for name in _TRANSFER_COLUMNS}
    if stored["metadata"] is not None:
        stored["metadata"] = json.loads(stored["metadata"])
    return StoredTransfer(seq=values["seq"], **stored)


async def _links_after(conn: AsyncConnection, after: int) -> list[_Link]:
    """The next links after `after`, each with its stored transfers, in one query."""
    rows = await conn.execute(
        _LINKS_WITH_TRANSFERS, {"after": after, "limit": CHAIN_CHECK_LINKS_PER_QUERY}
    )
    links: dict[int, _Link] = {}
    for row in rows:
        values = dict(row._mapping)
        link = links.get(values["link_id"])
        if link is None:
            link = _Link(
                values["link_id"],
                values["expected"],
                bytes(values["transfers_sha256"]),
                bytes(values["previous_hash"]),
                bytes(values["hash"]),
                values["form"],
                [],
            )
            links[link.id] = link
        if values["id"] is not None:
            link.transfers.append(_fields(values))
    return list(links.values())


@dataclass(frozen=True, slots=True)
class ChainWalk:
    """What a walk over links found: the breaks, the transfers the links name, and the last link
    walked (the starting point when there was none)."""

    problems: list[str]
    linked_count: int
    last_link_id: int
    last_hash: bytes


async def walk_links(
    conn: AsyncConnection, *, after_link_id: int = 0, previous_hash: bytes = bytes(32)
) -> ChainWalk:
    """Recompute the links after `after_link_id` from their stored transfers, the first one
    following `previous_hash`, and hold the chain head to the last; describe every break."""
    problems: list[str] = []
    previous = previous_hash
    after = after_link_id
    linked_count = 0
    while len(problems) < PROBLEM_COUNT_MAX:
        links = await _links_after(conn, after)
        if not links:
            break
        for link in links:
            after = link.id
            linked_count += link.expected
            if link.previous_hash != previous:
                problems.append(f"link {link.id} does not follow the link before it")
            missing = link.expected - len(link.transfers)
            if missing:
                problems.append(f"link {link.id}: {missing} transfers are missing")
            elif link_digest(link.form, link.transfers) != link.transfers_sha256:
                problems.append(
                    f"link {link.id}: its transfers were changed after they were stored"
                )
            previous = link.hash
    head = (await conn.execute(text("SELECT hash FROM ledger_chain_head"))).scalar_one()
    if bytes(head) != previous and len(problems) < PROBLEM_COUNT_MAX:
        problems.append("the chain head does not match the last link")
    return ChainWalk(problems, linked_count, after, previous)


async def check_chain(conn: AsyncConnection) -> list[str]:
    """Recompute the chain from the stored transfers; describe every break found."""
    walk = await walk_links(conn)
    problems = list(walk.problems)
    total = (await conn.execute(text("SELECT count(*) FROM transfers"))).scalar_one()
    if total != walk.linked_count:
        problems.append(f"{total - walk.linked_count} transfers are in no link of the chain")
    # Each transfer in exactly one link: with the counts equal and every named transfer found,
    # a transfer named twice means another is in none (linked_count counts names, not ids).
    named_twice = await conn.execute(_NAMED_TWICE, {"limit": PROBLEM_COUNT_MAX})
    problems += [f"transfer {row.id} is named by {row.links} links" for row in named_twice]
    return problems[:PROBLEM_COUNT_MAX]


_NAMED_TWICE = text(
    """
    SELECT id, count(*) AS links FROM (SELECT unnest(transfer_ids) AS id FROM ledger_links) named
    GROUP BY id HAVING count(*) > 1
    ORDER BY id
    LIMIT :limit
    """
)
