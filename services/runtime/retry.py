"""The one way services run an action again after a transient failure: a bounded number of
tries, waits doubling from `backoff_ms_first` to `backoff_ms_max` with jitter (so processes that
failed together do not come back together), and a callback that reports each retry.

(The ledger's unit of work has its own conflict retry: `ledger/` never imports `services/`.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

RetryReport = Callable[[BaseException, int, int], None]  # error, retry number, wait in ms


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_count_max: int
    backoff_ms_first: int
    backoff_ms_max: int

    def __post_init__(self) -> None:
        if self.retry_count_max < 0 or not 0 < self.backoff_ms_first <= self.backoff_ms_max:
            raise ValueError(f"not a retry policy: {self}")

    def backoff_ms(self, retry_number: int) -> int:
        """The longest wait before retry `retry_number` (1, 2, ...)."""
        return min(self.backoff_ms_max, self.backoff_ms_first << min(retry_number - 1, 32))


async def retry(
    action: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    is_transient: Callable[[BaseException], bool],
    on_retry: RetryReport,
) -> T:
    """`action()`, tried again after each transient failure, at most `retry_count_max` more
    times; a failure that is not transient, or the last one, propagates."""
    retry_number = 0
    while True:
        try:
            return await action()
        except Exception as error:
            if not is_transient(error) or retry_number == policy.retry_count_max:
                raise
            retry_number += 1
            wait_ms = policy.backoff_ms(retry_number)
            on_retry(error, retry_number, wait_ms)
            await asyncio.sleep(random.uniform(wait_ms / 2, wait_ms) / 1_000)
