"""The hash chain over posted batches (tamper evidence).

Each batch that stores transfers appends a link: the ids of its transfers, the SHA-256 of their
canonical form, and `hash = sha256(previous hash || digest)`. The link is appended at the end of
the batch's transaction, holding the one-row chain head only until the commit, so concurrent
writers wait on it for a moment, not for their whole batch.

The canonical form of a transfer is one line of its stored fields, in a fixed order, joined by
`|`; timestamps in ISO 8601 UTC with microseconds; metadata as JSON with sorted keys. Lines are
ordered by transfer id, so the digest does not depend on the order rows come back in.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

CHAIN_CHECK_LINKS_PER_QUERY = 500
PROBLEM_COUNT_MAX = 100


@dataclass(frozen=True, slots=True)
class ChainedFields:
    """The stored fields of a transfer that the chain covers."""

    id: uuid.UUID
    debit_account_id: int
    credit_account_id: int
    amount: int
    asset: str
    code: int
    flags: int
    pending_id: uuid.UUID | None
    timeout_s: int | None
    expires_at: datetime | None
    rate_card_version: int | None
    event_id: str | None
    metadata: dict[str, Any] | None
    debit_balance_after: int
    credit_balance_after: int
    created_at: datetime


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def canonical_line(fields: ChainedFields) -> bytes:
    parts = (
        fields.id,
        fields.debit_account_id,
        fields.credit_account_id,
        fields.amount,
        fields.asset,
        fields.code,
        fields.flags,
        fields.pending_id,
        fields.timeout_s,
        fields.expires_at,
        fields.rate_card_version,
        fields.event_id,
        fields.metadata,
        fields.debit_balance_after,
        fields.credit_balance_after,
        fields.created_at,
    )
    return ("|".join(_text(part) for part in parts) + "\n").encode("utf-8")


def digest(transfers: Iterable[ChainedFields]) -> bytes:
    hasher = hashlib.sha256()
    for fields in sorted(transfers, key=lambda item: item.id):
        hasher.update(canonical_line(fields))
    return hasher.digest()


_APPEND_LINK = text(
    """
    WITH head AS (
        SELECT hash FROM ledger_chain_head FOR UPDATE
    ), link AS (
        INSERT INTO ledger_links (transfer_ids, transfers_sha256, previous_hash, hash)
        SELECT CAST(:ids AS uuid[]), :digest, head.hash, sha256(head.hash || :digest) FROM head
        RETURNING id, hash
    )
    UPDATE ledger_chain_head SET link_id = link.id, hash = link.hash FROM link
    """
)


async def append_link(conn: AsyncConnection, transfers: Sequence[ChainedFields]) -> None:
    """Link a batch's stored transfers into the chain, in the caller's transaction."""
    if not transfers:
        return
    await conn.execute(
        _APPEND_LINK,
        {"ids": [fields.id for fields in transfers], "digest": digest(transfers)},
    )


_LINKS = text(
    """
    SELECT id, transfer_ids, transfers_sha256, previous_hash, hash FROM ledger_links
    WHERE id > :after ORDER BY id LIMIT :limit
    """
)
_LINKED_TRANSFERS = text(
    """
    SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code, t.flags,
           t.pending_id, t.timeout_s, t.expires_at, t.rate_card_version, t.event_id,
           t.metadata::text AS metadata, t.debit_balance_after, t.credit_balance_after,
           t.created_at
    FROM unnest(CAST(:ids AS uuid[])) AS wanted(id)
    JOIN transfers t ON t.id = wanted.id
    """
)


def _fields(row: Any) -> ChainedFields:
    values = dict(row._mapping)
    if values["metadata"] is not None:
        values["metadata"] = json.loads(values["metadata"])
    return ChainedFields(**values)


async def check_chain(conn: AsyncConnection) -> list[str]:
    """Recompute the chain from the stored transfers; describe every break found."""
    problems: list[str] = []
    previous = bytes(32)
    after = 0
    linked_count = 0
    while len(problems) < PROBLEM_COUNT_MAX:
        links = (
            await conn.execute(_LINKS, {"after": after, "limit": CHAIN_CHECK_LINKS_PER_QUERY})
        ).all()
        if not links:
            break
        for link in links:
            after = link.id
            ids = list(link.transfer_ids)
            linked_count += len(ids)
            stored = [_fields(row) for row in await conn.execute(_LINKED_TRANSFERS, {"ids": ids})]
            if bytes(link.previous_hash) != previous:
                problems.append(f"link {link.id} does not follow the link before it")
            if len(stored) != len(ids):
                problems.append(f"link {link.id}: {len(ids) - len(stored)} transfers are missing")
            elif digest(stored) != bytes(link.transfers_sha256):
                problems.append(
                    f"link {link.id}: its transfers were changed after they were stored"
                )
            previous = bytes(link.hash)
    head = (await conn.execute(text("SELECT hash FROM ledger_chain_head"))).scalar_one()
    if bytes(head) != previous and len(problems) < PROBLEM_COUNT_MAX:
        problems.append("the chain head does not match the last link")
    total = (await conn.execute(text("SELECT count(*) FROM transfers"))).scalar_one()
    if total != linked_count:
        problems.append(f"{total - linked_count} transfers are in no link of the chain")
    return problems
