"""A database of its own for a test module, migrated to head and dropped at the end.

The session's database is shared by every module; month-end closes and reconciliations are about
the whole ledger (every account, every cash-out of a day), so the tests of them run on a database
where only their own data is. It is made the way the benchmarks make theirs
(`bench.harness.fresh_database`), named `giftledger_test_<random>` unless told otherwise.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from bench import harness


def fresh_database(
    admin_url: str, prefix: str = "giftledger_test"
) -> AbstractAsyncContextManager[str]:
    """The URL of a new database `<prefix>_<random>` on the test server, migrated by the Alembic
    migrations."""
    return harness.fresh_database(admin_url, prefix)
