"""`verify`: recompute the ledger's invariants from its transfers and name anything that broke.

`verify` checks the whole ledger. `verify_ledger` is what `giftledger verify` runs: the whole
ledger with `full` or when no checkpoint was recorded yet, else only what was added since the
latest checkpoint (ledger/verify_incremental.py); `record_checkpoint` then records where a clean
run ended (ledger/verify_checkpoints.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chain import check_chain
from ledger.closes import CHECKS as CLOSE_CHECKS
from ledger.closes import check_closed_periods
from ledger.verify_checkpoints import (
    Checkpoint,
    Reached,
    checkpoints_kept,
    latest_checkpoint,
    write_checkpoint,
)
from ledger.verify_incremental import (
    ROLLED_DAY_CHECKS,
    WINDOW_CHECK_NAMES,
    check_since,
    rolled_day_problems,
)
from ledger.verify_sql import (
    clearing_legs_ctes,
    diamonds_moved_ctes,
    gift_coins_reconcile_with_diamonds,
    resolutions_keep_their_pending,
    transfer_assets_match_accounts,
    transfer_sides_cte,
)

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
    # One pass over the transfers, grouped by account: a subquery per account would let the
    # planner scan every transfer for each account debited by nearly all of them (the funding
    # and platform accounts skew the statistics), minutes where this takes seconds.
    "totals_match_transfers": """
        WITH posted AS (
            SELECT account_id, sum(debited) AS dp, sum(credited) AS cp
            FROM (
                SELECT debit_account_id AS account_id, amount AS debited, 0 AS credited
                FROM transfers WHERE flags & 10 = 0
                UNION ALL
                SELECT credit_account_id, 0, amount FROM transfers WHERE flags & 10 = 0
            ) AS sides
            GROUP BY account_id
        ), open_pending AS (
            SELECT t.debit_account_id, t.credit_account_id, t.amount FROM transfers t
            WHERE t.flags & 2 <> 0
              AND NOT EXISTS (SELECT 1 FROM pending_resolutions r WHERE r.pending_id = t.id)
        ), pending AS (
            SELECT account_id, sum(debited) AS dpend, sum(credited) AS cpend
            FROM (
                SELECT debit_account_id AS account_id, amount AS debited, 0 AS credited
                FROM open_pending
                UNION ALL
                SELECT credit_account_id, 0, amount FROM open_pending
            ) AS sides
            GROUP BY account_id
        ), sums AS (
            SELECT a.id, coalesce(p.dp, 0) AS dp, coalesce(p.cp, 0) AS cp,
                   coalesce(q.dpend, 0) AS dpend, coalesce(q.cpend, 0) AS cpend
            FROM accounts a
            LEFT JOIN posted p ON p.account_id = a.id
            LEFT JOIN pending q ON q.account_id = a.id
        )
        SELECT a.name || ': stored (' || a.debits_posted || ', ' || a.credits_posted || ', '
               || a.debits_pending || ', ' || a.credits_pending || ') but transfers give ('
               || s.dp || ', ' || s.cp || ', ' || s.dpend || ', ' || s.cpend || ')' AS detail
        FROM accounts a JOIN sums s ON s.id = a.id
        WHERE (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
           <> (s.dp, s.cp, s.dpend, s.cpend)
    """,
    # With the running balance, each account's commit times in `seq` order: a transfer stamped
    # before the one before it on its account (inserted with an old time) would make every
    # `as of` answer before it wrong (ledger.queries.posted_balance_as_of).
    "balances_after_match_running_totals": f"""
        WITH {transfer_sides_cte("transfers")}, running AS (
            SELECT account_id, seq, id, stored, created_at,
                   sum(change) OVER (PARTITION BY account_id ORDER BY seq) AS expected,
                   lag(created_at) OVER (PARTITION BY account_id ORDER BY seq) AS previous_at
            FROM sides
        )
        SELECT detail FROM (
            SELECT r.seq, 'transfer ' || r.id || ': ' || a.name || ' balance after is '
                   || r.stored || ' but its transfers up to it give ' || r.expected AS detail
            FROM running r JOIN accounts a ON a.id = r.account_id
            WHERE r.stored <> r.expected
            UNION ALL
            SELECT r.seq, 'transfer ' || r.id || ': committed at ' || r.created_at || ', before '
                   || 'the transfer before it on ' || a.name || ' (' || r.previous_at || ')'
            FROM running r JOIN accounts a ON a.id = r.account_id
            WHERE r.created_at < r.previous_at
        ) found
        ORDER BY seq
    """,  # noqa: S608
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
    "transfer_assets_match_accounts": transfer_assets_match_accounts("transfers"),
    "every_transfer_has_one_key": """
        SELECT 'transfer ' || coalesce(t.id, k.id) || CASE WHEN t.id IS NULL
               THEN ' has a key but no row' ELSE ' has no key' END
        FROM transfers t FULL JOIN transfer_keys k ON k.id = t.id AND k.created_at = t.created_at
        WHERE t.id IS NULL OR k.id IS NULL
    """,
    # Each resolution with its pending and resolving transfers, each post or void with its
    # resolution (a pending transfer posted twice has one resolution and two posts), and each
    # post or void within what its pending transfer reserved.
    "resolutions_match_transfers": f"""
        SELECT 'resolution of ' || r.pending_id || ' (' || r.outcome || ') has no matching '
               || CASE WHEN p.id IS NULL THEN 'pending transfer' ELSE 'resolving transfer' END
        FROM pending_resolutions r
        LEFT JOIN transfers p ON p.id = r.pending_id AND p.flags & 2 <> 0
        LEFT JOIN transfers x ON x.id = r.resolved_by AND x.pending_id = r.pending_id
        WHERE p.id IS NULL OR x.id IS NULL
        UNION ALL
        SELECT 'transfer ' || x.id || ' resolves ' || x.pending_id || ' but no resolution names it'
        FROM transfers x
        LEFT JOIN pending_resolutions r ON r.pending_id = x.pending_id AND r.resolved_by = x.id
        WHERE x.flags & 12 <> 0 AND r.pending_id IS NULL
        UNION ALL
        {resolutions_keep_their_pending("transfers")}
    """,  # noqa: S608
    "gift_coins_reconcile_with_diamonds": gift_coins_reconcile_with_diamonds("transfers"),
    # The books (docs/accounting.md): what each liability and clearing account holds is explained
    # by the items behind it.
    "payouts_payable_matches_submitted_cashouts": """
        WITH payable AS (
            SELECT asset AS currency, credits_posted - debits_posted AS posted,
                   credits_pending - debits_pending AS pending
            FROM accounts WHERE kind = 'payouts_payable'
        ), owed AS (
            SELECT payout_currency AS currency,
                   coalesce(sum(payout_amount) FILTER (WHERE status = 'submitted'), 0)
                       AS submitted,
                   coalesce(sum(amount) FILTER (WHERE status = 'held' AND asset <> 'DIAMOND'), 0)
                       AS held
            FROM cashouts WHERE status IN ('held', 'submitted')
            GROUP BY payout_currency
        )
        SELECT 'platform:' || currency || ':payouts_payable: posted ' || coalesce(p.posted, 0)
               || ', pending ' || coalesce(p.pending, 0) || ' but submitted cash-outs owe '
               || coalesce(o.submitted, 0) || ' and held currency cash-outs reserve '
               || coalesce(o.held, 0)
        FROM payable p FULL JOIN owed o USING (currency)
        WHERE coalesce(p.posted, 0) <> coalesce(o.submitted, 0)
           OR coalesce(p.pending, 0) <> coalesce(o.held, 0)
    """,
    "clearing_accounts_explained": f"""
        WITH {clearing_legs_ctes("transfers")}, items AS (
            -- an item in flight: one event's legs through the clearing, the item's own leg
            -- among them and nothing but its legs
            SELECT l.id, sum(l.change) AS change
            FROM legs l JOIN clearing c ON c.id = l.id
            GROUP BY l.id, l.event_id, c.item_code, c.codes
            HAVING bool_or(l.code = c.item_code) AND bool_and(l.code = ANY(c.codes))
        )
        SELECT c.name || ': balance ' || c.balance || ' but its items in flight explain '
               || coalesce(sum(i.change), 0)
        FROM clearing c LEFT JOIN items i ON i.id = c.id
        GROUP BY c.id, c.name, c.balance
        HAVING c.balance <> coalesce(sum(i.change), 0)
    """,  # noqa: S608
    "conversion_explained_by_cashouts": """
        WITH converted AS (
            -- Diamond cash-outs submitted or paid: converted and not undone. What a payout
            -- redeems: ceil(payout * 1000 * diamonds_per_usd / (fx * 10^scale)), at most all.
            SELECT c.payout_currency AS currency, c.payout_amount, c.amount,
                   least(c.amount, div(
                       c.payout_amount::numeric * 1000 * r.diamonds_per_usd * c.fx_denominator
                           + c.fx_numerator * power(10::numeric, s.scale) - 1,
                       c.fx_numerator * power(10::numeric, s.scale))) AS redeemed
            FROM cashouts c
            JOIN rate_cards r ON r.version = c.rate_card_version
            JOIN assets s ON s.code = c.payout_currency
            WHERE c.asset = 'DIAMOND' AND c.status IN ('submitted', 'paid')
        ), explained (kind, asset, balance) AS (
            SELECT 'cashout_conversion', currency, -sum(payout_amount)
            FROM converted GROUP BY currency
            UNION ALL
            SELECT 'diamonds_redeemed', 'DIAMOND', sum(redeemed) FROM converted
            UNION ALL
            SELECT 'rounding', 'DIAMOND', sum(amount - redeemed) FROM converted
        )
        SELECT a.name || ': balance ' || (a.credits_posted - a.debits_posted)
               || ' but the converted cash-outs explain ' || coalesce(e.balance, 0)
        FROM accounts a LEFT JOIN explained e ON e.kind = a.kind AND e.asset = a.asset
        WHERE a.kind IN ('cashout_conversion', 'diamonds_redeemed', 'rounding')
          AND a.creator_id IS NULL
          AND a.credits_posted - a.debits_posted <> coalesce(e.balance, 0)
    """,
    "diamonds_held_by_creators": f"""
        WITH {diamonds_moved_ctes("transfers")}, platform AS (
            SELECT coalesce(sum(credits_posted - debits_posted)
                            FILTER (WHERE kind IN ('diamonds_redeemed', 'rounding')), 0)
                       AS redeemed,
                   coalesce(sum(debits_posted - credits_posted)
                            FILTER (WHERE kind = 'operator_adjustments'), 0) AS adjusted
            FROM accounts WHERE asset = 'DIAMOND' AND creator_id IS NULL
        ), creators AS (
            SELECT coalesce(sum(credits_posted - debits_posted), 0) AS held
            FROM accounts WHERE asset = 'DIAMOND' AND creator_id IS NOT NULL
        )
        SELECT 'issued ' || issued || ' - reversed ' || reversed || ' - redeemed ' || redeemed
               || ' + adjusted ' || adjusted
               || CASE WHEN s.moved <> 0 THEN ' + synthetic ' || s.moved ELSE '' END
               || ' = ' || (issued - reversed - redeemed + adjusted + s.moved)
               || ' milli-diamonds, but creators hold ' || held
        FROM moved, platform, synthetic s, creators
        WHERE issued - reversed - redeemed + adjusted + s.moved <> held
    """,  # noqa: S608
}


CHAIN_CHECK = "hash_chain_intact"


async def verify(conn: AsyncConnection) -> list[Problem]:
    """Every broken invariant, by check name; an empty list means the ledger is sound. The
    checks read the ledger in many statements, so the caller's transaction must see one
    snapshot (REPEATABLE READ or SERIALIZABLE): at READ COMMITTED, a writer that commits
    between two statements shows as a problem that is not there (`SnapshotRequiredError`)."""
    await require_snapshot(conn)
    return await _whole_ledger_problems(conn)


async def _whole_ledger_problems(conn: AsyncConnection) -> list[Problem]:
    problems: list[Problem] = []
    for check, sql in _CHECKS.items():
        rows = await conn.execute(text(sql + f" LIMIT {PROBLEM_COUNT_MAX}"))
        problems.extend(Problem(check, str(row[0])) for row in rows)
    problems.extend(Problem(CHAIN_CHECK, detail) for detail in await check_chain(conn))
    problems.extend(Problem(*found) for found in await check_closed_periods(conn))
    problems.extend(Problem(*found) for found in await rolled_day_problems(conn, after_day=None))
    return problems


def check_names() -> list[str]:
    return [*_CHECKS, CHAIN_CHECK]


def ledger_check_names() -> list[str]:
    """Every check `verify_ledger` runs, whole or incremental: the ledger's, the closes' and
    the per-day totals'."""
    return [*check_names(), *CLOSE_CHECKS, *ROLLED_DAY_CHECKS]


# The checks that read accounts and cash-outs but no transfer: an incremental run runs them
# whole; the others it runs over what was added since the checkpoint.
_WHOLE_TABLE_CHECKS = tuple(name for name in _CHECKS if name not in WINDOW_CHECK_NAMES)
_SNAPSHOT_ISOLATION_LEVELS = frozenset({"repeatable read", "serializable"})


class SnapshotRequiredError(Exception):
    """`verify` and `verify_ledger` read the ledger in many statements, which must see one
    snapshot."""


async def require_snapshot(conn: AsyncConnection) -> None:
    """Refuse a transaction whose statements would each see a snapshot of their own."""
    isolation = (await conn.execute(text("SHOW transaction_isolation"))).scalar_one()
    if isolation not in _SNAPSHOT_ISOLATION_LEVELS:
        raise SnapshotRequiredError(f"verify needs a REPEATABLE READ transaction, not {isolation}")


@dataclass(frozen=True, slots=True)
class Verification:
    """What a run found: `full_check` says whether it checked the whole ledger; `base` is the
    latest checkpoint when it started (where an incremental run started from)."""

    full_check: bool
    problems: list[Problem]
    base: Checkpoint | None
    reached: Reached
    # False on a database that recorded revision 0020 while it was still empty (it has no
    # checkpoint tables): every run there is a full one and records nothing.
    checkpoints_kept: bool = True


async def verify_ledger(conn: AsyncConnection, *, full: bool) -> Verification:
    """Check the whole ledger (`full`, or no checkpoint yet) or what was added since the latest
    checkpoint, in the caller's transaction, which must be REPEATABLE READ (one snapshot)."""
    await require_snapshot(conn)
    if not await checkpoints_kept(conn):
        problems = await _whole_ledger_problems(conn)
        return Verification(True, problems, None, await _reached_by_full_check(conn), False)
    base = await latest_checkpoint(conn)
    if full or base is None:
        problems = await _whole_ledger_problems(conn)
        return Verification(True, problems, base, await _reached_by_full_check(conn))
    result = await check_since(conn, base)
    problems = [Problem(*found) for found in result.problems]
    for check in _WHOLE_TABLE_CHECKS:
        rows = await conn.execute(text(_CHECKS[check] + f" LIMIT {PROBLEM_COUNT_MAX}"))
        problems.extend(Problem(check, str(row[0])) for row in rows)
    return Verification(False, problems, base, result.reached)


async def _reached_by_full_check(conn: AsyncConnection) -> Reached:
    row = (
        await conn.execute(
            text(
                """
                SELECT h.link_id, h.hash, s.transfer_count, s.seq_max,
                       (SELECT max(id) FROM period_closes) AS close_id, now() AS checked_at,
                       (SELECT max(day) FROM rolled_days) AS rolled_day_max
                FROM ledger_chain_head h,
                     (SELECT count(*) AS transfer_count, coalesce(max(seq), 0) AS seq_max
                      FROM transfers) s
                """
            )
        )
    ).one()
    return Reached(
        link_id=row.link_id,
        chain_hash=bytes(row.hash),
        linked_transfer_count=row.transfer_count,
        seq_max=row.seq_max,
        close_id=row.close_id,
        checked_at=row.checked_at,
        walked_transfer_count=row.transfer_count,
        rolled_day_max=row.rolled_day_max,
    )


async def record_checkpoint(conn: AsyncConnection, verification: Verification) -> Checkpoint | None:
    """Record where a clean run ended, in the transaction it ran in (commit it after); None when
    another run recorded a checkpoint meanwhile, or the database keeps none. A run that found a
    problem records nothing."""
    if verification.problems:
        raise ValueError("a verification that found problems records no checkpoint")
    if not verification.checkpoints_kept:
        return None
    return await write_checkpoint(
        conn, verification.base, verification.full_check, verification.reached
    )
