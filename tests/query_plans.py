"""Reading `EXPLAIN (FORMAT JSON)` output in tests: the plan's root node and every node under it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def plan_root(document: Any) -> dict[str, Any]:
    """The root node of an `EXPLAIN (FORMAT JSON)` result (the driver hands it back as text or
    already decoded)."""
    plans = json.loads(document) if isinstance(document, str) else document
    root: dict[str, Any] = plans[0]["Plan"]
    return root


def nodes_of(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The node and every node under it, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes_of(child)
