"""The limits of the console's statement downloads (`statement_routes`).

A download streams every line of a statement's range from one snapshot, so it holds a connection
of the API's read pool, and that snapshot, for as long as it streams: a paused browser download
would hold them for ever. So at most `count_max` run at once in a process (another is answered
503 with `Retry-After`), each for at most `duration_s_max` (then it is cut off: the answer ends
without its last chunk, which a client reports as a failed download, never as a shorter file),
and each reads `page_size` transfers a query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from ledger.queries import STATEMENT_PAGE_SIZE_MAX

STATEMENT_DOWNLOAD_COUNT_MAX: Final = 4
STATEMENT_DOWNLOAD_S_MAX: Final = 900.0


@dataclass(slots=True)
class StatementDownloads:
    """The downloads running in this process, and their limits. The console runs on one event
    loop, so counting needs no lock."""

    page_size: int = STATEMENT_PAGE_SIZE_MAX
    count_max: int = STATEMENT_DOWNLOAD_COUNT_MAX
    duration_s_max: float = STATEMENT_DOWNLOAD_S_MAX
    running: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= STATEMENT_PAGE_SIZE_MAX:
            raise ValueError(f"page_size must be between 1 and {STATEMENT_PAGE_SIZE_MAX}")
        if self.count_max < 1:
            raise ValueError("count_max must be at least 1")
        if self.duration_s_max <= 0:
            raise ValueError("duration_s_max must be above 0")

    def start(self) -> bool:
        """Take a place for one more download; False when all `count_max` are taken."""
        if self.running >= self.count_max:
            return False
        self.running += 1
        return True

    def end(self) -> None:
        """Give back the place `start` took."""
        assert self.running > 0
        self.running -= 1
