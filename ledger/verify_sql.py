"""The SQL that `verify` (ledger/verify.py) and its incremental run (ledger/verify_incremental.py)
share: the parts of a check that read transfers, written once and given the relation they read,
`transfers` for the whole ledger or `verify_window` for the transfers added since a checkpoint.

The relation is one of `TransferRelation`, chosen in the code, never taken from input.
"""

from __future__ import annotations

from typing import Final, Literal

TransferRelation = Literal["transfers", "verify_window"]

# What a detail names for its scope: nothing for the whole ledger, the checkpoint for a window.
_SCOPE: Final[dict[TransferRelation, str]] = {
    "transfers": "",
    "verify_window": " || ', since checkpoint ' || CAST(:checkpoint_id AS bigint)",
}


def transfer_sides_cte(relation: TransferRelation) -> str:
    """`sides`: each transfer's debit and credit side, with its stored balance after and the
    change it made to its account's posted balance."""
    return f"""
        sides AS (
            SELECT debit_account_id AS account_id, seq, id, created_at,
                   debit_balance_after AS stored,
                   CASE WHEN flags & 10 = 0 THEN -amount ELSE 0 END AS change
            FROM {relation}
            UNION ALL
            SELECT credit_account_id, seq, id, created_at, credit_balance_after,
                   CASE WHEN flags & 10 = 0 THEN amount ELSE 0 END
            FROM {relation}
        )"""  # noqa: S608


def resolutions_keep_their_pending(relation: TransferRelation) -> str:
    """Posts and voids (flags 4 and 8) that break what the ledger's engine allows: another
    account or asset than their pending transfer's, a post of more than it reserved, a void of
    another amount than it reserved."""
    return f"""
        SELECT 'transfer ' || x.id || ' resolves ' || p.id || ' but '
               || CASE WHEN x.debit_account_id <> p.debit_account_id
                            OR x.credit_account_id <> p.credit_account_id
                       THEN 'moves other accounts'
                       WHEN x.asset <> p.asset THEN 'in another asset'
                       WHEN x.flags & 4 <> 0 THEN 'posts ' || x.amount || ' of ' || p.amount
                       ELSE 'voids ' || x.amount || ' of ' || p.amount END
        FROM {relation} x
        CROSS JOIN LATERAL (
            SELECT p.id, p.debit_account_id, p.credit_account_id, p.asset, p.amount
            FROM transfers p WHERE p.id = x.pending_id AND p.flags & 2 <> 0 OFFSET 0
        ) p
        WHERE x.flags & 12 <> 0
          AND (x.debit_account_id <> p.debit_account_id
               OR x.credit_account_id <> p.credit_account_id
               OR x.asset <> p.asset
               OR (x.flags & 4 <> 0 AND x.amount > p.amount)
               OR (x.flags & 8 <> 0 AND x.amount <> p.amount))
    """  # noqa: S608


def transfer_assets_match_accounts(relation: TransferRelation) -> str:
    """Transfers in another asset than one of their accounts."""
    return f"""
        SELECT 'transfer ' || t.id || ' in ' || t.asset || ' touches ' || d.name || ' ('
               || d.asset || ') and ' || c.name || ' (' || c.asset || ')'
        FROM {relation} t
        JOIN accounts d ON d.id = t.debit_account_id
        JOIN accounts c ON c.id = t.credit_account_id
        WHERE d.asset <> t.asset OR c.asset <> t.asset
    """  # noqa: S608


def gift_coins_reconcile_with_diamonds(relation: TransferRelation) -> str:
    """Per rate card, the gifts' coins (less their reversals) against the Diamonds issued (less
    theirs); a window's detail names its checkpoint (`:checkpoint_id`)."""
    return f"""
        WITH coins AS (
            SELECT rate_card_version AS version,
                   sum(CASE code WHEN 2 THEN amount ELSE -amount END) AS coins
            FROM {relation} WHERE code IN (2, 4) GROUP BY rate_card_version
        ), diamonds AS (
            SELECT rate_card_version AS version,
                   sum(CASE code WHEN 1 THEN amount ELSE -amount END) AS milli_diamonds
            FROM {relation} WHERE code IN (1, 3) GROUP BY rate_card_version
        )
        SELECT 'rate card ' || coalesce(r.version::text, 'none'){_SCOPE[relation]} || ': '
               || coalesce(c.coins, 0)
               || ' coins should give ' || coalesce(c.coins * r.milli_diamonds_per_coin, 0)
               || ' milli-diamonds, transfers give ' || coalesce(d.milli_diamonds, 0)
        FROM coins c FULL JOIN diamonds d USING (version)
        LEFT JOIN rate_cards r ON r.version = coalesce(c.version, d.version)
        WHERE r.version IS NULL
           OR coalesce(c.coins, 0) * r.milli_diamonds_per_coin <> coalesce(d.milli_diamonds, 0)
    """  # noqa: S608


def clearing_legs_ctes(relation: TransferRelation) -> str:
    """`rules` (each clearing account's item code and the codes of an item's legs), `clearing`
    (the clearing accounts, with their posted balance) and `legs` (the posted transfers through
    them, each with its event and the change it made)."""
    return f"""
        rules (kind, item_code, codes) AS (
            VALUES ('tips_clearing', 10, ARRAY[10, 11, 12]),
                   ('marketplace_clearing', 30, ARRAY[30, 31])
        ), clearing AS (
            SELECT a.id, a.name, a.credits_posted - a.debits_posted AS balance,
                   r.item_code, r.codes
            FROM accounts a JOIN rules r USING (kind)
        ), legs AS (
            SELECT c.id, t.event_id, t.code, -t.amount AS change
            FROM clearing c JOIN {relation} t ON t.debit_account_id = c.id
            WHERE t.flags & 10 = 0
            UNION ALL
            SELECT c.id, t.event_id, t.code, t.amount
            FROM clearing c JOIN {relation} t ON t.credit_account_id = c.id
            WHERE t.flags & 10 = 0
        )"""  # noqa: S608


def diamonds_moved_ctes(relation: TransferRelation) -> str:
    """`moved` (the Diamonds issued and reversed by posted transfers) and `synthetic` (what
    posted transfers moved between benchmarks' and tests' own accounts and creators)."""
    return f"""
        moved AS (
            SELECT coalesce(sum(amount) FILTER (WHERE code = 1), 0) AS issued,
                   coalesce(sum(amount) FILTER (WHERE code = 3), 0) AS reversed
            FROM {relation} WHERE code IN (1, 3) AND asset = 'DIAMOND' AND flags & 10 = 0
        ), synthetic AS (
            -- benchmarks' and tests' own accounts, a source of their own
            SELECT coalesce(sum(CASE WHEN c.creator_id IS NOT NULL THEN t.amount
                                     ELSE -t.amount END), 0) AS moved
            FROM {relation} t
            JOIN accounts d ON d.id = t.debit_account_id
            JOIN accounts c ON c.id = t.credit_account_id
            WHERE t.asset = 'DIAMOND' AND t.flags & 10 = 0
              AND ((d.kind = 'synthetic' AND c.creator_id IS NOT NULL)
                   OR (c.kind = 'synthetic' AND d.creator_id IS NOT NULL))
        )"""  # noqa: S608
