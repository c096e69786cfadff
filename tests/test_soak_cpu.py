"""The soak's CPU figures: cores between two moments from cumulative samples (the database
server's only while one postmaster ran), the consumers' CPU a record applied per third, and a
real process's CPU time read from /proc."""

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


def test_the_database_share_is_its_server_tree_and_none_across_a_restart() -> None:
    # One postmaster (pid 100) for 30 s at 0.8 of a core, then a restart: another (pid 200)
    # whose count starts again from 0 at 0.4 of a core.
    samples = [MemorySample(float(at), 0, 0, 0.0, None, at * 0.8, 100) for at in range(0, 31)] + [
        MemorySample(float(at), 0, 0, 0.0, None, (at - 31) * 0.4, 200) for at in range(31, 61)
    ]
    before = cpu_share(samples, 0.0, 30.0)
    assert before.database is not None
    assert abs(before.database - 0.8) < 1e-9
    after = cpu_share(samples, 35.0, 60.0)
    assert after.database is not None
    assert abs(after.database - 0.4) < 1e-9
    assert cpu_share(samples, 20.0, 40.0).database is None  # the count started again
    unread = [MemorySample(0.0, 0, 0, 0.0, None, None, None), MemorySample(9.0, 0, 0, 1.0)]
    assert cpu_share(unread, 0.0, 9.0).database is None


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


def test_cpu_lines_give_the_database_servers_growth() -> None:
    # The database server at 0.5 of a core in the first third, 0.9 in the last; one postmaster.
    samples = []
    database_s = 0.0
    for at in range(0, 91):
        samples.append(MemorySample(float(at), 0, 0, at * 0.5, None, database_s, 7))
        database_s += 0.5 if at < 60 else 0.9
    lines = cpu_lines(samples, 90.0, Window(3_000, 3_000, 1.0, 2.0), Window(1_500, 1_500, 1.0, 2.0))
    assert lines[-2:] == [
        "database's cores: first third 0.50, last third 0.90",
        "database cpu last/first third ratio: 1.80",
    ]


def test_a_process_cpu_time_grows_while_it_works_and_is_zero_once_gone() -> None:
    before = cpu_seconds_of(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert cpu_seconds_of(os.getpid()) >= before + 0.2
    assert cpu_seconds_of(2**22 + 12_345) == 0.0
