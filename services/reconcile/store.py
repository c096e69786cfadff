"""Reconciliations as stored (migration 0018): written once, read as documents.

Documents give amounts as integers in minor units, days as `YYYY-MM-DD`, hashes as hex. The CLI's
`--json` and the finance API print the same documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reconcile.files import SettlementSet
from services.reconcile.matching import Item as MatchedItem
from services.reconcile.matching import ItemKind

ITEMS_PER_INSERT: Final = 5_000
LIST_LIMIT_MAX: Final = 1_000
ITEM_PAGE_SIZE_MAX: Final = 1_000
ID_MAX: Final = 2**63 - 1


async def find_reconciliation(conn: AsyncConnection, content_sha256: bytes) -> int | None:
    found = await conn.scalar(
        text("SELECT id FROM reconciliations WHERE content_sha256 = :digest"),
        {"digest": content_sha256},
    )
    return None if found is None else int(found)


async def store_reconciliation(
    conn: AsyncConnection, settlement: SettlementSet, items: Sequence[MatchedItem]
) -> int | None:
    """Store the reconciliation in the caller's transaction; its id, or None when another one
    with the same content was stored first."""
    reconciliation_id = await conn.scalar(
        text(
            """
            INSERT INTO reconciliations (content_sha256, first_day, last_day, missing_days,
                line_count, item_count, break_count)
            VALUES (:digest, :first_day, :last_day, CAST(:missing AS date[]), :lines, :items,
                :breaks)
            ON CONFLICT (content_sha256) DO NOTHING
            RETURNING id
            """
        ),
        {
            "digest": settlement.content_sha256,
            "first_day": settlement.first_day,
            "last_day": settlement.last_day,
            "missing": settlement.missing_days,
            "lines": len(settlement.lines),
            "items": len(items),
            "breaks": sum(1 for item in items if item.is_break),
        },
    )
    if reconciliation_id is None:
        return None
    await conn.execute(
        text(
            """
            INSERT INTO reconciliation_files (reconciliation_id, position, name,
                settlement_day, sha256, line_count)
            VALUES (:id, :position, :name, :day, :sha256, :lines)
            """
        ),
        [
            {
                "id": reconciliation_id,
                "position": position,
                "name": settlement_file.name,
                "day": settlement_file.day,
                "sha256": settlement_file.sha256,
                "lines": len(settlement_file.lines),
            }
            for position, settlement_file in enumerate(settlement.files)
        ],
    )
    for start in range(0, len(items), ITEMS_PER_INSERT):
        await _insert_items(conn, reconciliation_id, items[start : start + ITEMS_PER_INSERT], start)
    return int(reconciliation_id)


async def _insert_items(
    conn: AsyncConnection, reconciliation_id: int, items: Sequence[MatchedItem], offset: int
) -> None:
    if not items:
        return
    await conn.execute(
        text(
            """
            INSERT INTO reconciliation_items (reconciliation_id, item_no, cashout_id, kind,
                provider_reference, bank_statuses, bank_amount_minor, bank_currency,
                bank_value_date, ledger_status, ledger_statuses, ledger_amount_minor,
                ledger_currency, ledger_value_date, detail)
            VALUES (:id, :item_no, :cashout_id, :kind, :reference, CAST(:bank_statuses AS text[]),
                :bank_amount, :bank_currency, :bank_day, :ledger_status,
                CAST(:ledger_statuses AS text[]), :ledger_amount, :ledger_currency, :ledger_day,
                :detail)
            """
        ),
        [
            {
                "id": reconciliation_id,
                "item_no": offset + index + 1,
                "cashout_id": item.cashout_id,
                "kind": item.kind.value,
                "reference": item.provider_reference,
                "bank_statuses": list(item.bank_statuses),
                "bank_amount": item.bank_amount_minor,
                "bank_currency": item.bank_currency,
                "bank_day": item.bank_value_date,
                "ledger_status": item.ledger_status,
                "ledger_statuses": list(item.ledger_statuses),
                "ledger_amount": item.ledger_amount_minor,
                "ledger_currency": item.ledger_currency,
                "ledger_day": item.ledger_value_date,
                "detail": item.detail,
            }
            for index, item in enumerate(items)
        ],
    )


# Documents ----------------------------------------------------------------------------------

_SUMMARY = """
    SELECT r.id, r.content_sha256, r.first_day, r.last_day, r.missing_days, r.line_count,
           r.item_count, r.break_count, r.reconciled_at,
           (SELECT coalesce(jsonb_object_agg(kind, count), '{}') FROM (
                SELECT kind, count(*) AS count FROM reconciliation_items i
                WHERE i.reconciliation_id = r.id GROUP BY kind) k) AS kinds,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'name', f.name, 'settlement_day', f.settlement_day,
                'sha256', encode(f.sha256, 'hex'), 'line_count', f.line_count)
                ORDER BY f.position), '[]')
            FROM reconciliation_files f WHERE f.reconciliation_id = r.id) AS files
    FROM reconciliations r
"""


def _summary(row: Any) -> dict[str, Any]:
    counted = dict(row.kinds)
    return {
        "id": row.id,
        "reconciled_at": row.reconciled_at.isoformat(),
        "first_day": row.first_day.isoformat(),
        "last_day": row.last_day.isoformat(),
        "missing_days": [day.isoformat() for day in row.missing_days],
        "line_count": row.line_count,
        "item_count": row.item_count,
        "break_count": row.break_count,
        "kinds": {kind.value: int(counted.get(kind.value, 0)) for kind in ItemKind},
        "content_sha256": bytes(row.content_sha256).hex(),
        "files": list(row.files),
    }


async def reconciliation_summary(
    conn: AsyncConnection, reconciliation_id: int
) -> dict[str, Any] | None:
    row = (
        await conn.execute(text(_SUMMARY + " WHERE r.id = :id"), {"id": reconciliation_id})
    ).first()
    return None if row is None else _summary(row)


async def list_reconciliations(
    conn: AsyncConnection, *, before_id: int | None = None, limit: int = 100
) -> tuple[list[dict[str, Any]], int | None]:
    """Reconciliations newest first, before `before_id` (the cursor); the page and the next
    cursor (None on the last page)."""
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {LIST_LIMIT_MAX}")
    rows = (
        await conn.execute(
            text(
                _SUMMARY + " WHERE r.id < coalesce(CAST(:before AS bigint), :id_max)"
                " ORDER BY r.id DESC LIMIT :limit"
            ),
            {"before": before_id, "id_max": ID_MAX, "limit": limit + 1},
        )
    ).all()
    page = [_summary(row) for row in rows[:limit]]
    return page, (page[-1]["id"] if len(rows) > limit else None)


def _item_document(row: Any) -> dict[str, Any]:
    def day(value: Any) -> str | None:
        return None if value is None else str(value.isoformat())

    return {
        "item_no": row.item_no,
        "cashout_id": row.cashout_id,
        "kind": row.kind,
        "detail": row.detail,
        "provider_reference": row.provider_reference,
        "bank_statuses": list(row.bank_statuses),
        "bank_amount": row.bank_amount_minor,
        "bank_currency": row.bank_currency,
        "bank_value_date": day(row.bank_value_date),
        "ledger_status": row.ledger_status,
        "ledger_statuses": list(row.ledger_statuses),
        "ledger_amount": row.ledger_amount_minor,
        "ledger_currency": row.ledger_currency,
        "ledger_value_date": day(row.ledger_value_date),
    }


async def reconciliation_items(
    conn: AsyncConnection,
    reconciliation_id: int,
    *,
    kind: ItemKind | None = None,
    after_item: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int | None]:
    """Items in order (breaks first), of one kind or all, after item `after_item` (the
    cursor); the page and the next cursor (None on the last page)."""
    if not 1 <= limit <= ITEM_PAGE_SIZE_MAX:
        raise ValueError(f"limit must be between 1 and {ITEM_PAGE_SIZE_MAX}")
    rows = (
        await conn.execute(
            text(
                """
                SELECT item_no, cashout_id, kind, detail, provider_reference, bank_statuses,
                       bank_amount_minor, bank_currency, bank_value_date, ledger_status,
                       ledger_statuses, ledger_amount_minor, ledger_currency, ledger_value_date
                FROM reconciliation_items
                WHERE reconciliation_id = :id AND item_no > CAST(:after AS bigint)
                  AND (CAST(:kind AS text) IS NULL OR kind = :kind)
                ORDER BY item_no
                LIMIT :limit
                """
            ),
            {
                "id": reconciliation_id,
                "after": after_item,
                "kind": None if kind is None else kind.value,
                "limit": limit + 1,
            },
        )
    ).all()
    page = [_item_document(row) for row in rows[:limit]]
    return page, (page[-1]["item_no"] if len(rows) > limit else None)
