"""The README's metrics table names every metric the project defines, with its labels, and no
other: an operator reading it finds each series `/metrics` can show."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

import ledger
import schemas
import services

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION_HEADING = "## Metrics: what each says, and when to act"
ROW = re.compile(r"^\| `(giftledger_[a-z_]+)` \|([^|]*)\|")


def defined_metrics() -> dict[str, tuple[str, ...]]:
    """Every metric a module of the product defines, by the name `/metrics` shows it under (a
    counter's with `_total`), with its label names."""
    found: dict[str, tuple[str, ...]] = {}
    for package in (ledger, schemas, services):
        for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if ".migrations" in module_info.name:  # Alembic's scripts, run only by Alembic
                continue
            module = importlib.import_module(module_info.name)
            for value in vars(module).values():
                if isinstance(value, MetricWrapperBase):
                    family = next(iter(value.describe()))
                    name = family.name + ("_total" if family.type == "counter" else "")
                    found[name] = tuple(value._labelnames)
    return found


def documented_metrics() -> dict[str, tuple[str, ...]]:
    text = README.read_text()
    section = text[text.index(SECTION_HEADING) :]
    section = section[: section.index("\n## ", len(SECTION_HEADING))]
    found: dict[str, tuple[str, ...]] = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            labels = tuple(re.findall(r"`([a-z_]+)`", match.group(2)))
            found[match.group(1)] = labels
    return found


def test_the_readme_names_every_metric_with_its_labels_and_no_other() -> None:
    defined = defined_metrics()
    assert "giftledger_ledger_conflicts_retried_total" in defined  # the walk finds them
    assert documented_metrics() == defined
