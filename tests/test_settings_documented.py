"""The README's settings table names every setting `Settings` reads, and nothing else.

A row's first cell names one variable or several (`A_B` / `A_C`, or `A_B` / `_C`, where `_C` is
`A_C`: the first name less its last part, then `_C`); `ELIGIBILITY_*` stands for the nested
eligibility settings."""

from __future__ import annotations

from pathlib import Path

from services.runtime.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_HEADER = "| variable | default | meaning |"
NESTED = {"ELIGIBILITY_*": "ELIGIBILITY"}


def documented_names() -> set[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(TABLE_HEADER)
    end = text.index("\n\n", start)
    names: set[str] = set()
    for row in text[start:end].splitlines()[2:]:
        cell = row.split("|")[1]
        parts = [part.strip().strip("`") for part in cell.split(" / ")]
        prefix = parts[0].rsplit("_", 1)[0]
        for part in parts:
            name = prefix + part if part.startswith("_") else part
            names.add(NESTED.get(name, name))
    return names


def test_every_setting_has_a_row_and_every_row_a_setting() -> None:
    read = {name.upper() for name in Settings.model_fields}
    documented = documented_names()
    assert sorted(read - documented) == [], "settings the README's table leaves out"
    assert sorted(documented - read) == [], "rows of the README's table no setting reads"
