"""How far behind the primary the database the API reads is: `read_replica_lag`.

The finance API and the console read through `API_DATABASE_URL`, a PostgreSQL streaming replica,
when it is set. On a replica (`pg_is_in_recovery()`) the lag is the age of the last transaction
it replayed, `now() - pg_last_xact_replay_timestamp()`, except when it has replayed everything
it received: then it is 0, since an idle primary commits nothing and the age of its last commit
is not lag. Both clocks count, so the replica's and the primary's must agree (NTP). On the
primary there is no lag: its pages say "primary".

`/metrics` reads it at each scrape into `giftledger_api_read_lag_seconds` (`record_replica_lag`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

SECONDS_SHOWN_MAX: Final = 120
MINUTES_SHOWN_MAX: Final = 120

READ_LAG_SECONDS: Final = Gauge(
    "giftledger_api_read_lag_seconds",
    "How far behind the primary the database the finance API reads was at the last scrape of"
    " /metrics: 0 on the primary or on a replica that has replayed all it received; NaN when"
    " the replica has replayed nothing since it started. No sample: it could not be read.",
    ["reads_from"],
)

_LAG_QUERY: Final = text(
    """
    SELECT pg_is_in_recovery() AS on_replica,
           extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
               AS replayed_age_s,
           coalesce(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false) AS caught_up
    """
)


@dataclass(frozen=True, slots=True)
class ReplicaLag:
    """Where the API reads and how far behind the primary that is."""

    on_replica: bool
    # now() minus the commit time of the last transaction replayed; None on the primary, or on a
    # replica that has replayed no transaction since it started.
    replayed_age_s: float | None
    # Every WAL record the replica received is replayed (False on the primary).
    caught_up: bool

    @property
    def reads_from(self) -> Literal["primary", "replica"]:
        return "replica" if self.on_replica else "primary"

    @property
    def lag_s(self) -> float | None:
        """0 on the primary and on a caught-up replica; None when not known yet."""
        if not self.on_replica or self.caught_up:
            return 0.0
        if self.replayed_age_s is None:
            return None
        return max(self.replayed_age_s, 0.0)

    def text(self) -> str:
        """One line for people: "primary", or the replica's lag."""
        if not self.on_replica:
            return "primary"
        if self.caught_up:
            if self.replayed_age_s is None:
                return "replica, caught up"
            return (
                "replica, caught up (last transaction replayed "
                f"{duration_text(self.replayed_age_s)} ago)"
            )
        if self.lag_s is None:
            return "replica, no transaction replayed since it started"
        return f"replica, {duration_text(self.lag_s)} behind"


def duration_text(duration_s: float) -> str:
    duration_s = max(duration_s, 0.0)
    if duration_s < SECONDS_SHOWN_MAX:
        return f"{duration_s:.1f} s"
    if duration_s < MINUTES_SHOWN_MAX * 60:
        return f"{duration_s // 60:.0f} min"
    return f"{duration_s // 3600:.0f} h"


async def read_replica_lag(conn: AsyncConnection) -> ReplicaLag:
    """The lag of the database `conn` is on (any role may read it)."""
    row = (await conn.execute(_LAG_QUERY)).one()
    return ReplicaLag(
        on_replica=bool(row.on_replica),
        replayed_age_s=None if row.replayed_age_s is None else float(row.replayed_age_s),
        caught_up=bool(row.caught_up),
    )


def record_replica_lag(lag: ReplicaLag | None) -> None:
    """Set READ_LAG_SECONDS from `lag`; None (it could not be read) leaves it without a sample."""
    READ_LAG_SECONDS.clear()
    if lag is not None:
        value = lag.lag_s
        READ_LAG_SECONDS.labels(reads_from=lag.reads_from).set(math.nan if value is None else value)
