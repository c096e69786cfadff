"""The consumer process's collector settings: start-up objects frozen, young collections rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.runtime.collector import YOUNG_COLLECTION_ALLOCATIONS, settle_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_settling_freezes_what_exists_and_spaces_out_young_collections() -> None:
    gc.unfreeze()
    long_lived: list[list[int]] = [[1]]

    def collected_generations_hold(target: object) -> bool:
        return any(o is target for generation in range(3) for o in gc.get_objects(generation))

    assert collected_generations_hold(long_lived)
    settle_collector()
    assert not collected_generations_hold(long_lived)  # in the permanent generation now
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_ALLOCATIONS


@pytest.mark.usefixtures("restored_collector")
def test_cycles_made_after_settling_are_still_collected() -> None:
    settle_collector()

    class Node:
        partner: object = None

    first, second = Node(), Node()
    first.partner, second.partner = second, first
    del first, second
    assert gc.collect() >= 2
