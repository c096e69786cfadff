"""A record's bytes as a page shows them: text when they are UTF-8, else hex; always cut short.

What is returned is plain text; the page escapes it like every other value, so bytes holding
HTML or script show as the characters they are. Characters that would not show as themselves
(controls, bidirectional overrides and isolates, zero-width and line-separator characters) are
written as escapes (`visible_text`), so a text shows in the order it was written: the same goes
for a record's header names and a dead letter's detail on the console's pages.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

TEXT_CHARACTERS_MAX: Final = 4_000
HEX_BYTES_MAX: Final = 1_024
HEX_BYTES_PER_LINE: Final = 16

Shape = Literal["text", "hex", "absent"]

# Unicode's control (Cc: C0, DEL, C1) and format (Cf: bidirectional marks, overrides and
# isolates, zero-width characters, the byte order mark, ...) categories, and the line and
# paragraph separators (Zl, Zp).
_ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
_KEPT_CHARACTERS: Final = frozenset("\n\t")


@dataclass(frozen=True, slots=True)
class ShownBytes:
    shape: Shape
    text: str
    length_bytes: int
    truncated: bool


def shown_bytes(value: bytes | None) -> ShownBytes:
    """`value` as UTF-8 text (at most TEXT_CHARACTERS_MAX characters, as `visible_text` writes
    them), or, when it is not UTF-8, as a hex dump of its first HEX_BYTES_MAX bytes."""
    if value is None:
        return ShownBytes("absent", "", 0, truncated=False)
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError:
        return _hex(value)
    cut = decoded[:TEXT_CHARACTERS_MAX]
    return ShownBytes("text", visible_text(cut), len(value), truncated=len(decoded) > len(cut))


def visible_text(text: str) -> str:
    """`text` with every control or format character and line or paragraph separator (newline
    and tab excepted) written as an escape: `\\xNN` up to U+00FF, `\\uNNNN`, `\\UNNNNNNNN` beyond,
    as Python writes them: a right-to-left override (U+202E) shows as `\\u202e` and reorders
    nothing."""
    return "".join(_escaped(character) for character in text)


def _escaped(character: str) -> str:
    if character in _KEPT_CHARACTERS:
        return character
    if unicodedata.category(character) not in _ESCAPED_CATEGORIES:
        return character
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _hex(value: bytes) -> ShownBytes:
    cut = value[:HEX_BYTES_MAX]
    lines = []
    for start in range(0, len(cut), HEX_BYTES_PER_LINE):
        chunk = cut[start : start + HEX_BYTES_PER_LINE]
        printable = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{start:08x}  {chunk.hex(' '):<{HEX_BYTES_PER_LINE * 3 - 1}}  {printable}")
    return ShownBytes("hex", "\n".join(lines), len(value), truncated=len(value) > len(cut))
