"""Bar charts as geometry for an inline SVG: one bar per value, scaled to the largest.

Integer arithmetic on the values (minor units); only the drawing coordinates are rounded. The
template draws the bars and labels; every label is escaped there like any other value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

CHART_WIDTH_PX: Final = 720
CHART_HEIGHT_PX: Final = 200
LABEL_HEIGHT_PX: Final = 20
BAR_GAP_PX: Final = 2
BAR_COUNT_MAX: Final = 62


@dataclass(frozen=True, slots=True)
class Bar:
    x_px: int
    y_px: int
    width_px: int
    height_px: int
    label: str
    value_text: str


@dataclass(frozen=True, slots=True)
class BarChart:
    width_px: int
    height_px: int
    plot_height_px: int
    bars: tuple[Bar, ...]
    title: str


def bar_chart(title: str, points: Sequence[tuple[str, int, str]]) -> BarChart:
    """`points` are (label, value, value as text), in drawing order; values are not negative.
    At most BAR_COUNT_MAX bars (the last ones are kept)."""
    kept = list(points)[-BAR_COUNT_MAX:]
    plot_height = CHART_HEIGHT_PX - LABEL_HEIGHT_PX
    largest = max((value for _, value, _ in kept), default=0)
    slot = CHART_WIDTH_PX // max(len(kept), 1)
    bars = []
    for index, (label, value, value_text) in enumerate(kept):
        assert value >= 0, value
        height = 0 if largest == 0 else max(1, value * plot_height // largest) if value else 0
        bars.append(
            Bar(
                x_px=index * slot,
                y_px=plot_height - height,
                width_px=max(slot - BAR_GAP_PX, 1),
                height_px=height,
                label=label,
                value_text=value_text,
            )
        )
    return BarChart(CHART_WIDTH_PX, CHART_HEIGHT_PX, plot_height, tuple(bars), title)
