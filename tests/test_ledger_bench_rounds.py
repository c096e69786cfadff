"""`bench.ledger_bench` alternates the batch path and the ceiling over slices of one workload:
the slices must hold every transfer once, in order, and a path's rate must be its transfers
over the sum of its rounds' times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.ledger_bench import Measurement, in_rounds, summed


@given(st.integers(1, 500), st.integers(1, 100))
def test_the_rounds_slice_the_workload_into_near_equal_parts_in_order(
    length: int, rounds: int
) -> None:
    workload = list(range(length))
    slices = in_rounds(workload, rounds)
    assert len(slices) == rounds
    assert [item for part in slices for item in part] == workload
    sizes = [len(part) for part in slices]
    assert max(sizes) - min(sizes) <= 1


def test_a_path_s_rate_is_its_transfers_over_the_sum_of_its_rounds_times() -> None:
    rounds = [Measurement("hot", "ceiling", 1_000, 1.0), Measurement("hot", "ceiling", 1_000, 3.0)]
    total = summed(rounds)
    assert (total.variant, total.path, total.transfers, total.seconds) == (
        "hot",
        "ceiling",
        2_000,
        4.0,
    )
    assert total.transfers_per_s == 500.0  # not the mean of the rounds' rates (667)
