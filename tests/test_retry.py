"""The services' retry helper: bounded tries, doubling waits with a ceiling, and only transient
failures tried again."""

from __future__ import annotations

import pytest

from services.runtime.retry import RetryPolicy, retry

QUICK = RetryPolicy(retry_count_max=3, backoff_ms_first=1, backoff_ms_max=4)


class TransientError(Exception):
    pass


def transient(error: BaseException) -> bool:
    return isinstance(error, TransientError)


async def test_a_transient_failure_is_tried_again_until_it_succeeds() -> None:
    calls: list[int] = []
    reported: list[tuple[int, int]] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("down")
        return "done"

    result = await retry(
        flaky,
        QUICK,
        is_transient=transient,
        on_retry=lambda error, number, wait_ms: reported.append((number, wait_ms)),
    )
    assert result == "done"
    assert reported == [(1, 1), (2, 2)]


async def test_the_last_transient_failure_propagates_after_the_bound() -> None:
    calls: list[int] = []

    async def down() -> None:
        calls.append(1)
        raise TransientError("still down")

    with pytest.raises(TransientError):
        await retry(down, QUICK, is_transient=transient, on_retry=lambda *_: None)
    assert len(calls) == QUICK.retry_count_max + 1


async def test_a_failure_that_is_not_transient_propagates_at_once() -> None:
    calls: list[int] = []

    async def broken() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await retry(broken, QUICK, is_transient=transient, on_retry=lambda *_: None)
    assert len(calls) == 1


def test_the_wait_doubles_up_to_its_ceiling() -> None:
    assert [QUICK.backoff_ms(number) for number in range(1, 6)] == [1, 2, 4, 4, 4]


def test_a_policy_without_a_bound_or_with_a_wait_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="not a retry policy"):
        RetryPolicy(retry_count_max=-1, backoff_ms_first=1, backoff_ms_max=2)
    with pytest.raises(ValueError, match="not a retry policy"):
        RetryPolicy(retry_count_max=1, backoff_ms_first=0, backoff_ms_max=2)
