"""A record's bytes as a page shows them: text when they are UTF-8, else hex; always cut short.

What is returned is plain text; the page escapes it like every other value, so bytes holding
HTML or script show as the characters they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

TEXT_CHARACTERS_MAX: Final = 4_000
HEX_BYTES_MAX: Final = 1_024
HEX_BYTES_PER_LINE: Final = 16

Shape = Literal["text", "hex", "absent"]


@dataclass(frozen=True, slots=True)
class ShownBytes:
    shape: Shape
    text: str
    length_bytes: int
    truncated: bool


def shown_bytes(value: bytes | None) -> ShownBytes:
    """`value` as UTF-8 text (at most TEXT_CHARACTERS_MAX characters, control characters other
    than newline and tab written as `\\xNN`), or, when it is not UTF-8, as a hex dump of its
    first HEX_BYTES_MAX bytes."""
    if value is None:
        return ShownBytes("absent", "", 0, truncated=False)
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError:
        return _hex(value)
    cut = decoded[:TEXT_CHARACTERS_MAX]
    return ShownBytes("text", _visible(cut), len(value), truncated=len(decoded) > len(cut))


def _visible(text: str) -> str:
    return "".join(
        character
        if character in "\n\t" or (ord(character) >= 0x20 and ord(character) != 0x7F)
        else f"\\x{ord(character):02x}"
        for character in text
    )


def _hex(value: bytes) -> ShownBytes:
    cut = value[:HEX_BYTES_MAX]
    lines = []
    for start in range(0, len(cut), HEX_BYTES_PER_LINE):
        chunk = cut[start : start + HEX_BYTES_PER_LINE]
        printable = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{start:08x}  {chunk.hex(' '):<{HEX_BYTES_PER_LINE * 3 - 1}}  {printable}")
    return ShownBytes("hex", "\n".join(lines), len(value), truncated=len(value) > len(cut))
