"""The checks of `verify` over what was added since a checkpoint (ledger/verify_checkpoints.py).

The transfers added since a checkpoint are those the links after its link name: a batch links
itself in the transaction that stores it, holding the chain head until its commit, so the links a
run sees are exactly those up to the head it sees. The run copies those transfers once into a
temporary table (`verify_window`) and holds them, and nothing older, to the ledger's invariants:

- the chain: the checkpoint's link still has the hash recorded, each link after it follows the
  one before and its transfers hash to its digest, the head is the last link, and every transfer
  stored after the checkpoint's highest `seq` is named by one of those links;
- per account: stored totals = totals at the checkpoint + the posted, pending and resolved
  amounts since; each balance after = balance at the checkpoint + the account's posted changes
  since, up to it. An account's transfers are stored in the order its row lock is taken, which
  is also the order their batches link, so every transfer of an account added since the
  checkpoint comes after (by `seq`) all of its transfers before;
- per transfer added: its asset matches its accounts, it has its key, a post or void has its
  resolution and its pending transfer; no pending left open expired since the checkpoint;
- the books' identities, which are sums over transfers that held at the checkpoint, over the
  amounts added: gift coins against Diamonds per rate card, the clearing accounts' movements
  against their items, Diamonds issued, reversed, redeemed and adjusted against creators'
  holdings;
- the closes: both chains and anchors; the balances of closes made since the checkpoint; no
  transfer added since is stamped in a month closed before it;
- the per-day totals (ledger/rollups.py): the days rolled since the checkpoint (those after its
  highest rolled day: days are rolled in order, without a gap) recomputed from their transfers;
  no transfer added since is stamped in a day rolled before it.

What only `verify --full` sees is in the README ("Verify").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chain import walk_links
from ledger.closes import CHECK_BALANCES, check_closed_periods
from ledger.rollups import (
    CHECK_ACCOUNTS,
    CHECK_COUNT,
    CHECK_GIFTS,
    ONE_DAY,
    day_start,
    rolled_day_differences,
)
from ledger.verify_checkpoints import ZERO_HASH, Checkpoint, Reached
from ledger.verify_sql import (
    clearing_legs_ctes,
    diamonds_moved_ctes,
    gift_coins_reconcile_with_diamonds,
    resolutions_keep_their_pending,
    transfer_assets_match_accounts,
    transfer_sides_cte,
)

PROBLEM_COUNT_MAX: Final = 100
CHAIN_CHECK: Final = "hash_chain_intact"

_CREATE_WINDOW: Final = text(
    """
    CREATE TEMP TABLE verify_window ON COMMIT DROP AS
    SELECT id, seq, debit_account_id, credit_account_id, amount, asset, code, flags, pending_id,
           expires_at, rate_card_version, event_id, debit_balance_after, credit_balance_after,
           created_at
    FROM transfers WITH NO DATA
    """
)

_FILL_WINDOW: Final = text(
    """
    INSERT INTO verify_window
    SELECT t.id, t.seq, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code,
           t.flags, t.pending_id, t.expires_at, t.rate_card_version, t.event_id,
           t.debit_balance_after, t.credit_balance_after, t.created_at
    FROM ledger_links l
    CROSS JOIN LATERAL unnest(l.transfer_ids) AS named(id)
    -- one index probe per transfer named, never a scan of the transfers (OFFSET 0 keeps the
    -- planner from turning the LATERAL into a join over all of them)
    CROSS JOIN LATERAL (SELECT * FROM transfers t WHERE t.id = named.id OFFSET 0) t
    WHERE l.id > :after_link_id AND l.id <= :up_to_link_id
    """
)


# Each check: (name, SQL giving one detail per problem). Parameters: :checkpoint_id,
# :checked_at (the checkpoint's clock), :limit.
_WINDOW_CHECKS: Final[tuple[tuple[str, str], ...]] = (
    (
        "totals_match_transfers",
        """
        WITH resolved AS (
            -- pending transfers posted or voided since the checkpoint leave the pending totals
            -- (one index probe per post or void: OFFSET 0 keeps the LATERAL from becoming a
            -- join over every transfer)
            SELECT p.debit_account_id, p.credit_account_id, p.amount
            FROM verify_window t
            CROSS JOIN LATERAL (
                SELECT p.debit_account_id, p.credit_account_id, p.amount FROM transfers p
                WHERE p.id = t.pending_id AND p.flags & 2 <> 0 OFFSET 0
            ) p
            WHERE t.flags & 12 <> 0
        ), moves AS (
            SELECT debit_account_id AS account_id,
                   CASE WHEN flags & 10 = 0 THEN amount ELSE 0 END AS dp, 0::bigint AS cp,
                   CASE WHEN flags & 2 <> 0 THEN amount ELSE 0 END AS dpend, 0::bigint AS cpend
            FROM verify_window
            UNION ALL
            SELECT credit_account_id, 0, CASE WHEN flags & 10 = 0 THEN amount ELSE 0 END,
                   0, CASE WHEN flags & 2 <> 0 THEN amount ELSE 0 END
            FROM verify_window
            UNION ALL
            SELECT debit_account_id, 0, 0, -amount, 0 FROM resolved
            UNION ALL
            SELECT credit_account_id, 0, 0, 0, -amount FROM resolved
        ), sums AS (
            SELECT account_id, sum(dp) AS dp, sum(cp) AS cp, sum(dpend) AS dpend,
                   sum(cpend) AS cpend
            FROM moves GROUP BY account_id
        ), expected AS (
            SELECT a.id,
                   coalesce(b.dp, 0) + coalesce(s.dp, 0) AS dp,
                   coalesce(b.cp, 0) + coalesce(s.cp, 0) AS cp,
                   coalesce(b.dpend, 0) + coalesce(s.dpend, 0) AS dpend,
                   coalesce(b.cpend, 0) + coalesce(s.cpend, 0) AS cpend
            FROM accounts a
            LEFT JOIN LATERAL (
                -- the account's totals as of the checkpoint (no row: none yet)
                SELECT c.debits_posted_minor AS dp, c.credits_posted_minor AS cp,
                       c.debits_pending_minor AS dpend, c.credits_pending_minor AS cpend
                FROM verify_checkpoint_accounts c
                WHERE c.account_id = a.id AND c.checkpoint_id <= :checkpoint_id
                ORDER BY c.checkpoint_id DESC LIMIT 1
            ) b ON true
            LEFT JOIN sums s ON s.account_id = a.id
        )
        SELECT a.name || ': stored (' || a.debits_posted || ', ' || a.credits_posted || ', '
               || a.debits_pending || ', ' || a.credits_pending || ') but checkpoint '
               || CAST(:checkpoint_id AS bigint) || ' and the transfers since give ('
               || e.dp || ', ' || e.cp || ', ' || e.dpend || ', ' || e.cpend || ')'
        FROM accounts a JOIN expected e ON e.id = a.id
        WHERE (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
           <> (e.dp, e.cp, e.dpend, e.cpend)
        ORDER BY a.id
        """,
    ),
    (
        "balances_after_match_running_totals",
        f"""
        WITH {transfer_sides_cte("verify_window")}, opening AS (
            SELECT s.account_id, coalesce(b.cp - b.dp, 0) AS balance
            FROM (SELECT DISTINCT account_id FROM sides) s
            LEFT JOIN LATERAL (
                -- the account's totals as of the checkpoint (no row: none yet)
                SELECT c.debits_posted_minor AS dp, c.credits_posted_minor AS cp,
                       c.debits_pending_minor AS dpend, c.credits_pending_minor AS cpend
                FROM verify_checkpoint_accounts c
                WHERE c.account_id = s.account_id AND c.checkpoint_id <= :checkpoint_id
                ORDER BY c.checkpoint_id DESC LIMIT 1
            ) b ON true
        ), running AS (
            SELECT account_id, seq, id, stored,
                   sum(change) OVER (PARTITION BY account_id ORDER BY seq) AS moved
            FROM sides
        )
        SELECT 'transfer ' || r.id || ': ' || a.name || ' balance after is ' || r.stored
               || ' but its balance at checkpoint ' || CAST(:checkpoint_id AS bigint)
               || ' and its transfers since give ' || (o.balance + r.moved)
        FROM running r
        JOIN opening o ON o.account_id = r.account_id
        JOIN accounts a ON a.id = r.account_id
        WHERE r.stored <> o.balance + r.moved
        ORDER BY r.seq
        """,  # noqa: S608
    ),
    (
        "no_expired_pending_left_open",
        """
        SELECT 'pending transfer ' || t.id || ' expired at ' || t.expires_at || ' and is open'
        FROM transfers t
        WHERE t.expires_at >= :checked_at AND t.expires_at < now()
          AND NOT EXISTS (SELECT 1 FROM pending_resolutions r WHERE r.pending_id = t.id)
        UNION
        SELECT 'pending transfer ' || t.id || ' expired at ' || t.expires_at || ' and is open'
        FROM verify_window t
        WHERE t.expires_at < :checked_at
          AND NOT EXISTS (SELECT 1 FROM pending_resolutions r WHERE r.pending_id = t.id)
        """,
    ),
    (
        "transfer_assets_match_accounts",
        transfer_assets_match_accounts("verify_window") + " ORDER BY t.seq",
    ),
    (
        "every_transfer_has_one_key",
        """
        SELECT 'transfer ' || t.id || ' has no key'
        FROM verify_window t
        WHERE NOT EXISTS (SELECT 1 FROM transfer_keys k
                          WHERE k.id = t.id AND k.created_at = t.created_at)
        ORDER BY t.seq
        """,
    ),
    (
        "resolutions_match_transfers",
        f"""
        SELECT 'transfer ' || t.id || ' resolves ' || t.pending_id || ' but '
               || CASE WHEN p.id IS NULL THEN 'no pending transfer has that id'
                       ELSE 'no resolution names it' END
        FROM verify_window t
        LEFT JOIN LATERAL (
            SELECT p.id FROM transfers p WHERE p.id = t.pending_id AND p.flags & 2 <> 0 LIMIT 1
        ) p ON true
        LEFT JOIN pending_resolutions r ON r.pending_id = t.pending_id AND r.resolved_by = t.id
        WHERE t.flags & 12 <> 0 AND (p.id IS NULL OR r.pending_id IS NULL)
        UNION ALL
        {resolutions_keep_their_pending("verify_window")}
        """,  # noqa: S608
    ),
    ("gift_coins_reconcile_with_diamonds", gift_coins_reconcile_with_diamonds("verify_window")),
    (
        # What a clearing account moved since the checkpoint is what its items added since
        # moved: an item's legs are one event's linked transfers, posted in one batch.
        "clearing_accounts_explained",
        f"""
        WITH {clearing_legs_ctes("verify_window")}, groups AS (
            SELECT l.id, sum(l.change) AS change,
                   bool_or(l.code = c.item_code) AND bool_and(l.code = ANY(c.codes)) AS is_item
            FROM legs l JOIN clearing c ON c.id = l.id
            GROUP BY l.id, l.event_id, c.item_code, c.codes
        )
        SELECT c.name || ': moved ' || sum(g.change) || ' since checkpoint '
               || CAST(:checkpoint_id AS bigint) || ' but its items in flight added since explain '
               || coalesce(sum(g.change) FILTER (WHERE g.is_item), 0)
        FROM clearing c JOIN groups g ON g.id = c.id
        GROUP BY c.id, c.name
        HAVING sum(g.change) <> coalesce(sum(g.change) FILTER (WHERE g.is_item), 0)
        """,  # noqa: S608
    ),
    (
        "diamonds_held_by_creators",
        f"""
        WITH {diamonds_moved_ctes("verify_window")}, posted AS (
            SELECT * FROM verify_window WHERE flags & 10 = 0
        ), sides AS (
            SELECT a.kind, a.creator_id, a.asset, -t.amount AS change
            FROM posted t JOIN accounts a ON a.id = t.debit_account_id
            UNION ALL
            SELECT a.kind, a.creator_id, a.asset, t.amount
            FROM posted t JOIN accounts a ON a.id = t.credit_account_id
        ), accounts_moved AS (
            SELECT coalesce(sum(change) FILTER (WHERE creator_id IS NULL
                                AND kind IN ('diamonds_redeemed', 'rounding')), 0) AS redeemed,
                   coalesce(-sum(change) FILTER (WHERE creator_id IS NULL
                                AND kind = 'operator_adjustments'), 0) AS adjusted,
                   coalesce(sum(change) FILTER (WHERE creator_id IS NOT NULL), 0) AS held
            FROM sides WHERE asset = 'DIAMOND'
        )
        SELECT 'since checkpoint ' || CAST(:checkpoint_id AS bigint) || ': issued ' || issued
               || ' - reversed ' || reversed || ' - redeemed ' || redeemed
               || ' + adjusted ' || adjusted
               || CASE WHEN s.moved <> 0 THEN ' + synthetic ' || s.moved ELSE '' END
               || ' = ' || (issued - reversed - redeemed + adjusted + s.moved)
               || ' milli-diamonds, but creators'' holdings moved ' || held
        FROM moved, accounts_moved, synthetic s
        WHERE issued - reversed - redeemed + adjusted + s.moved <> held
        """,  # noqa: S608
    ),
)

WINDOW_CHECK_NAMES: Final = tuple(name for name, _ in _WINDOW_CHECKS)


@dataclass(frozen=True, slots=True)
class IncrementalResult:
    problems: list[tuple[str, str]]
    reached: Reached


async def check_since(conn: AsyncConnection, checkpoint: Checkpoint) -> IncrementalResult:
    """Run every check over what was added since `checkpoint`, in the caller's transaction (one
    snapshot: REPEATABLE READ); the checks of whole tables but `transfers` are the caller's."""
    start = checkpoint.reached
    problems = [(CHAIN_CHECK, detail) for detail in await _checkpoint_link_problems(conn, start)]
    walk = await walk_links(conn, after_link_id=start.link_id or 0, previous_hash=start.chain_hash)
    problems += [(CHAIN_CHECK, detail) for detail in walk.problems]
    await conn.execute(_CREATE_WINDOW)
    await conn.execute(
        _FILL_WINDOW, {"after_link_id": start.link_id or 0, "up_to_link_id": walk.last_link_id}
    )
    await conn.execute(text("ANALYZE verify_window"))
    window_seq_max, unlinked = await _unlinked_count(conn, start.seq_max)
    if unlinked:
        problems.append(
            (
                CHAIN_CHECK,
                f"{unlinked} transfers stored since checkpoint {checkpoint.id} are in no link",
            )
        )
    parameters = {
        "checkpoint_id": checkpoint.id,
        "checked_at": start.checked_at,
        "limit": PROBLEM_COUNT_MAX,
    }
    for name, sql in _WINDOW_CHECKS:
        rows = await conn.execute(text(f"{sql} LIMIT :limit"), parameters)
        problems += [(name, str(row[0])) for row in rows]
    problems += await check_closed_periods(conn, recomputed_up_to_id=start.close_id or 0)
    problems += await _stamped_in_closed_month(conn, start.close_id)
    problems += await rolled_day_problems(conn, after_day=start.rolled_day_max)
    problems += await _stamped_in_rolled_day(conn, checkpoint)
    close_id, checked_at, day_max = (
        await conn.execute(
            text(
                "SELECT (SELECT max(id) FROM period_closes), now(),"
                " (SELECT max(day) FROM rolled_days)"
            )
        )
    ).one()
    reached = Reached(
        link_id=walk.last_link_id or None,
        chain_hash=walk.last_hash,
        linked_transfer_count=start.linked_transfer_count + walk.linked_count,
        seq_max=max(start.seq_max, window_seq_max),
        close_id=close_id,
        checked_at=checked_at,
        walked_transfer_count=walk.linked_count,
        rolled_day_max=day_max,
    )
    return IncrementalResult(problems, reached)


async def _checkpoint_link_problems(conn: AsyncConnection, start: Reached) -> list[str]:
    """The checkpoint's link must still be there with the hash it had: the links before it are
    then the ones the checkpoint saw (each link's hash covers the one before)."""
    if start.link_id is None:
        return [] if start.chain_hash == ZERO_HASH else ["the checkpoint names no link but a hash"]
    stored = (
        await conn.execute(
            text("SELECT hash FROM ledger_links WHERE id = :id"), {"id": start.link_id}
        )
    ).scalar_one_or_none()
    if stored is not None and bytes(stored) == start.chain_hash:
        return []
    return [f"link {start.link_id}, the checkpoint's, is gone or has another hash than recorded"]


async def _unlinked_count(conn: AsyncConnection, seq_max: int) -> tuple[int, int]:
    """The highest `seq` among the transfers added, and how many transfers stored after the
    checkpoint's highest `seq` no link after it names (a smuggled row takes a new `seq`).

    The count reads the pages the BRIN index on `seq` points to. Without statistics for the
    newest rows the planner guesses a third of the table and scans all of it, so sequential
    scans are off for that one statement."""
    previous = (await conn.execute(text("SELECT current_setting('enable_seqscan')"))).scalar_one()
    await conn.execute(text("SELECT set_config('enable_seqscan', 'off', true)"))
    row = (
        await conn.execute(
            text(
                """
                SELECT (SELECT coalesce(max(seq), 0) FROM verify_window) AS window_seq_max,
                       (SELECT count(*) FROM transfers WHERE seq > :seq_max)
                       - (SELECT count(*) FROM verify_window WHERE seq > :seq_max) AS unlinked
                """
            ),
            {"seq_max": seq_max},
        )
    ).one()
    await conn.execute(
        text("SELECT set_config('enable_seqscan', :previous, true)"), {"previous": previous}
    )
    return int(row.window_seq_max), int(row.unlinked)


async def _stamped_in_closed_month(
    conn: AsyncConnection, close_id: int | None
) -> list[tuple[str, str]]:
    """Transfers added since the checkpoint were committed after every close it saw: none may be
    stamped before the end of a month those closed."""
    if close_id is None:
        return []
    rows = await conn.execute(
        text(
            """
            SELECT 'transfer ' || t.id || ' stamped ' || t.created_at || ' in closed '
                   || c.period || ' was stored after the close'
            FROM verify_window t
            JOIN period_closes c ON c.id = (SELECT max(id) FROM period_closes WHERE id <= :id)
            WHERE t.created_at < c.period_end
            ORDER BY t.seq
            LIMIT :limit
            """
        ),
        {"id": close_id, "limit": PROBLEM_COUNT_MAX},
    )
    return [(CHECK_BALANCES, str(row[0])) for row in rows]


ROLLED_DAY_CHECKS: Final = (CHECK_COUNT, CHECK_ACCOUNTS, CHECK_GIFTS)
_ROLLED_DAY_DETAILS: Final = {
    CHECK_COUNT: "rolled_days counts another number of transfers than the day holds",
    CHECK_ACCOUNTS: "day_account_totals differ from the day's posted transfers",
    CHECK_GIFTS: "day_gift_totals differ from the day's gift transfers",
}


async def rolled_day_problems(
    conn: AsyncConnection, *, after_day: date | None
) -> list[tuple[str, str]]:
    """The rolled days after `after_day` (None: every rolled day) whose stored totals differ
    from their transfers; reads every transfer of those days."""
    from_day = None if after_day is None else after_day + ONE_DAY
    differences = await rolled_day_differences(conn, from_day=from_day, limit=PROBLEM_COUNT_MAX)
    return [
        (found.check, f"day {found.day}: {_ROLLED_DAY_DETAILS[found.check]}")
        for found in differences
    ]


async def _stamped_in_rolled_day(
    conn: AsyncConnection, checkpoint: Checkpoint
) -> list[tuple[str, str]]:
    """Transfers added since the checkpoint were committed after every roll it saw: none may be
    stamped in a day up to its highest rolled day (a day is rolled once no transfer can still be
    stamped in it)."""
    day_max = checkpoint.reached.rolled_day_max
    if day_max is None:
        return []
    rows = await conn.execute(
        text(
            """
            SELECT 'transfer ' || t.id || ' stamped ' || t.created_at || ' in day '
                   || CAST(t.created_at AT TIME ZONE 'UTC' AS date) || ', rolled before checkpoint '
                   || CAST(:checkpoint_id AS bigint) || ', was stored after it'
            FROM verify_window t
            WHERE t.created_at < :rolled_to
            ORDER BY t.seq
            LIMIT :limit
            """
        ),
        {
            "checkpoint_id": checkpoint.id,
            "rolled_to": day_start(day_max + ONE_DAY),
            "limit": PROBLEM_COUNT_MAX,
        },
    )
    return [(CHECK_COUNT, str(row[0])) for row in rows]
