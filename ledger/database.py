"""The async engine, with the connection settings the ledger relies on."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

APPLICATION_NAME = "giftledger"
RANDOM_PAGE_COST = "1.1"


def create_engine(
    url: str,
    *,
    pool_size: int = 8,
    pool_overflow_max: int = 4,
    pool_timeout_s: float = 10.0,
    statement_timeout_ms: int = 30_000,
    role: str | None = None,
) -> AsyncEngine:
    """An engine for `url` (postgresql+asyncpg://...).

    Custom plans are forced because the ledger's statements take arrays whose sizes vary from one
    batch to the next, and a generic plan cached while tables were small keeps sequential scans
    after they grow. JIT is off: our statements are short and JIT compile time dominates them.
    With `role`, every connection acts as that database role from its start (least privilege:
    the services write as `giftledger_writer`, which cannot change or remove ledger rows).
    """
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_overflow_max,
        pool_timeout=pool_timeout_s,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {
                "application_name": APPLICATION_NAME,
                "plan_cache_mode": "force_custom_plan",
                "jit": "off",
                "random_page_cost": RANDOM_PAGE_COST,
                "statement_timeout": str(statement_timeout_ms),
                "timezone": "UTC",
                **({"role": role} if role else {}),
            }
        },
    )


def to_async_url(url: str) -> str:
    """Accept plain postgresql:// URLs too, as most tools print them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url
