"""The soak's CPU figures: cores between two moments from cumulative samples, the consumers'
CPU a record applied per third, and a real process's CPU time read from /proc."""

from __future__ import annotations

import os
import time

from bench.process_cpu import cpu_seconds_of
from bench.soak_database import Window
from bench.soak_report import MemorySample, cpu_lines, cpu_share


def sample(at_s: float, consumers_cpu_s: float, broker_cpu_s: float | None) -> MemorySample:
    return MemorySample(at_s, 0, 0, consumers_cpu_s, broker_cpu_s)


def test_cores_are_the_cpu_time_between_the_samples_nearest_the_moments() -> None:
    samples = [sample(float(at), at * 0.5, at * at / 100) for at in range(0, 61)]
    share = cpu_share(samples, 10.0, 20.0)
    assert share.consumers == 0.5
    assert share.broker is not None
    assert abs(share.broker - (400 - 100) / 100 / 10) < 1e-9
    assert cpu_share(samples, 10.5, 20.5) == share  # the samples at or before each moment


def test_no_broker_reading_gives_no_broker_share() -> None:
    samples = [sample(0.0, 0.0, None), sample(10.0, 4.0, None)]
    share = cpu_share(samples, 0.0, 10.0)
    assert share.consumers == 0.4
    assert share.broker is None
    assert cpu_share([], 0.0, 10.0).consumers is None


def test_cpu_lines_give_the_consumers_cost_a_record_and_the_brokers_growth() -> None:
    # 90 s in thirds of 30 s: the consumers use 0.5 of a core throughout, the broker 0.2 then
    # 0.6; 3,000 records applied in the first third, 1,500 in the last.
    samples = []
    broker_s = 0.0
    for at in range(0, 91):
        samples.append(sample(float(at), at * 0.5, broker_s))
        broker_s += 0.2 if at < 60 else 0.6
    lines = cpu_lines(samples, 90.0, Window(3_000, 3_000, 1.0, 2.0), Window(1_500, 1_500, 1.0, 2.0))
    assert lines == [
        "consumers' CPU a record applied: first third 5,000 µs, last third 10,000 µs",
        "consumer cpu/record last/first third ratio: 2.00",
        "broker's cores: first third 0.20, last third 0.60",
        "broker cpu last/first third ratio: 3.00",
    ]


def test_a_process_cpu_time_grows_while_it_works_and_is_zero_once_gone() -> None:
    before = cpu_seconds_of(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert cpu_seconds_of(os.getpid()) >= before + 0.2
    assert cpu_seconds_of(2**22 + 12_345) == 0.0
