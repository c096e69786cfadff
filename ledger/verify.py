"""`verify`: recompute the ledger's invariants from its transfers and name anything that broke."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chain import check_chain

PROBLEM_COUNT_MAX = 100


@dataclass(frozen=True, slots=True)
class Problem:
    check: str
    detail: str


_CHECKS: dict[str, str] = {
    "asset_sums_to_zero": """
        SELECT asset || ': posted ' || sum(credits_posted - debits_posted)
               || ', pending ' || sum(credits_pending - debits_pending) AS detail
        FROM accounts GROUP BY asset
        HAVING sum(credits_posted - debits_posted) <> 0
            OR sum(credits_pending - debits_pending) <> 0
    """,
    "totals_match_transfers": """
        WITH open_pending AS (
            SELECT t.* FROM transfers t
            WHERE t.flags & 2 <> 0
              AND NOT EXISTS (SELECT 1 FROM pending_resolutions r WHERE r.pending_id = t.id)
        ), sums AS (
            SELECT a.id,
                coalesce((SELECT sum(amount) FROM transfers t
                          WHERE t.debit_account_id = a.id AND t.flags & 10 = 0), 0) AS dp,
                coalesce((SELECT sum(amount) FROM transfers t
                          WHERE t.credit_account_id = a.id AND t.flags & 10 = 0), 0) AS cp,
                coalesce((SELECT sum(amount) FROM open_pending t
                          WHERE t.debit_account_id = a.id), 0) AS dpend,
                coalesce((SELECT sum(amount) FROM open_pending t
                          WHERE t.credit_account_id = a.id), 0) AS cpend
            FROM accounts a
        )
        SELECT a.name || ': stored (' || a.debits_posted || ', ' || a.credits_posted || ', '
               || a.debits_pending || ', ' || a.credits_pending || ') but transfers give ('
               || s.dp || ', ' || s.cp || ', ' || s.dpend || ', ' || s.cpend || ')' AS detail
        FROM accounts a JOIN sums s ON s.id = a.id
        WHERE (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
           <> (s.dp, s.cp, s.dpend, s.cpend)
    """,
    "balances_after_match_running_totals": """
        WITH sides AS (
            SELECT debit_account_id AS account_id, seq, id, debit_balance_after AS stored,
                   CASE WHEN flags & 10 = 0 THEN -amount ELSE 0 END AS change
            FROM transfers
            UNION ALL
            SELECT credit_account_id, seq, id, credit_balance_after,
                   CASE WHEN flags & 10 = 0 THEN amount ELSE 0 END
            FROM transfers
        ), running AS (
            SELECT account_id, seq, id, stored,
                   sum(change) OVER (PARTITION BY account_id ORDER BY seq) AS expected
            FROM sides
        )
        SELECT 'transfer ' || r.id || ': ' || a.name || ' balance after is ' || r.stored
               || ' but its transfers up to it give ' || r.expected
        FROM running r JOIN accounts a ON a.id = r.account_id
        WHERE r.stored <> r.expected
        ORDER BY r.seq
    """,
    "balance_rules_hold": """
        SELECT name || ': flags ' || flags || ' broken by totals (' || debits_posted || ', '
               || credits_posted || ', ' || debits_pending || ', ' || credits_pending || ')'
        FROM accounts
        WHERE (flags & 1 <> 0 AND debits_posted + debits_pending > credits_posted)
           OR (flags & 2 <> 0 AND credits_posted + credits_pending > debits_posted)
    """,
    "no_expired_pending_left_open": """
        SELECT 'pending transfer ' || t.id || ' expired at ' || t.expires_at || ' and is open'
        FROM transfers t
        WHERE t.expires_at IS NOT NULL AND t.expires_at < now()
          AND NOT EXISTS (SELECT 1 FROM pending_resolutions r WHERE r.pending_id = t.id)
    """,
    "transfer_assets_match_accounts": """
        SELECT 'transfer ' || t.id || ' in ' || t.asset || ' touches ' || d.name || ' ('
               || d.asset || ') and ' || c.name || ' (' || c.asset || ')'
        FROM transfers t
        JOIN accounts d ON d.id = t.debit_account_id
        JOIN accounts c ON c.id = t.credit_account_id
        WHERE d.asset <> t.asset OR c.asset <> t.asset
    """,
    "every_transfer_has_one_key": """
        SELECT 'transfer ' || coalesce(t.id, k.id) || CASE WHEN t.id IS NULL
               THEN ' has a key but no row' ELSE ' has no key' END
        FROM transfers t FULL JOIN transfer_keys k ON k.id = t.id AND k.created_at = t.created_at
        WHERE t.id IS NULL OR k.id IS NULL
    """,
    "resolutions_match_transfers": """
        SELECT 'resolution of ' || r.pending_id || ' (' || r.outcome || ') has no matching '
               || CASE WHEN p.id IS NULL THEN 'pending transfer' ELSE 'resolving transfer' END
        FROM pending_resolutions r
        LEFT JOIN transfers p ON p.id = r.pending_id AND p.flags & 2 <> 0
        LEFT JOIN transfers x ON x.id = r.resolved_by AND x.pending_id = r.pending_id
        WHERE p.id IS NULL OR x.id IS NULL
    """,
    "gift_coins_reconcile_with_diamonds": """
        WITH coins AS (
            SELECT rate_card_version AS version,
                   sum(CASE code WHEN 2 THEN amount ELSE -amount END) AS coins
            FROM transfers WHERE code IN (2, 4) GROUP BY rate_card_version
        ), diamonds AS (
            SELECT rate_card_version AS version,
                   sum(CASE code WHEN 1 THEN amount ELSE -amount END) AS milli_diamonds
            FROM transfers WHERE code IN (1, 3) GROUP BY rate_card_version
        )
        SELECT 'rate card ' || coalesce(r.version::text, 'none') || ': ' || coalesce(c.coins, 0)
               || ' coins should give ' || coalesce(c.coins * r.milli_diamonds_per_coin, 0)
               || ' milli-diamonds, transfers give ' || coalesce(d.milli_diamonds, 0)
        FROM coins c FULL JOIN diamonds d USING (version)
        LEFT JOIN rate_cards r ON r.version = coalesce(c.version, d.version)
        WHERE r.version IS NULL
           OR coalesce(c.coins, 0) * r.milli_diamonds_per_coin <> coalesce(d.milli_diamonds, 0)
    """,
}


CHAIN_CHECK = "hash_chain_intact"


async def verify(conn: AsyncConnection) -> list[Problem]:
    """Every broken invariant, by check name; an empty list means the ledger is sound."""
    problems: list[Problem] = []
    for check, sql in _CHECKS.items():
        rows = await conn.execute(text(sql + f" LIMIT {PROBLEM_COUNT_MAX}"))
        problems.extend(Problem(check, str(row[0])) for row in rows)
    problems.extend(Problem(CHAIN_CHECK, detail) for detail in await check_chain(conn))
    return problems


def check_names() -> list[str]:
    return [*_CHECKS, CHAIN_CHECK]
