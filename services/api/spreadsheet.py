"""Text cells of the CSV answers (statements, dead letters, the journal) as a spreadsheet opens
them: what comes from outside shown, never run as a formula."""

from __future__ import annotations

from typing import Final

# What a spreadsheet takes a cell starting with for a formula (a tab and a carriage return too,
# which some strip first).
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    """A text cell that comes from outside (an event id, a dead letter's detail) as a
    spreadsheet shows it rather than runs it: one that would start a formula gets a leading
    `'`, which spreadsheets take as "text" and do not show. Numbers are never passed here."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
