"""Server-drawn SVG bar charts (no chart library, no script): pure geometry from integer series.

`stacked_bars` lays out one bar per day, stacked by series; the template draws the rectangles and
colours them by CSS class (`s0`...`s7`), so the page's style sheet themes the chart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

PALETTE_SIZE = 8


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: int  # index into the legend, for the colour class
    title: str  # the tooltip: "2026-05-15 · privaterouter/fast: $0.0041"


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    bars: list[Bar]
    ticks: list[tuple[float, str, str]]  # x position, label and SVG text-anchor of a few days
    legend: list[tuple[int, str]]
    top_label: str  # the value of the highest bar (the y scale)
    empty: bool


def last_days(today: date, count: int) -> list[str]:
    """The `count` UTC days ending today, oldest first, as 'YYYY-MM-DD'."""
    return [(today - timedelta(days=offset)).isoformat() for offset in range(count - 1, -1, -1)]


def stacked_bars(days: Sequence[str], values: Mapping[tuple[str, str], int], *,
                 label: Callable[[int], str], width: int = 720, height: int = 220) -> Chart:
    """A chart of `values[(day, series)]` (integers >= 0) over `days`; series ordered by their total, largest first."""
    totals: dict[str, int] = {}
    for (_, series), value in values.items():
        totals[series] = totals.get(series, 0) + value
    order = sorted(totals, key=lambda name: (-totals[name], name))
    legend = [(index % PALETTE_SIZE, name) for index, name in enumerate(order)]
    colour = {name: index for index, name in legend}
    day_totals = [sum(values.get((day, name), 0) for name in order) for day in days]
    peak = max(day_totals, default=0)
    top, bottom = 12, height - 24
    slot = width / max(1, len(days))
    bars: list[Bar] = []
    for position, day in enumerate(days):
        y = float(bottom)
        for name in order:
            value = values.get((day, name), 0)
            if value <= 0 or peak == 0:
                continue
            bar_height = max(1.0, (bottom - top) * value / peak)
            y -= bar_height
            bars.append(Bar(round(position * slot + slot * 0.15, 2), round(y, 2), round(slot * 0.7, 2),
                            round(bar_height, 2), colour[name], f"{day} · {name}: {label(value)}"))
    step = max(1, len(days) // 6)
    # The first label starts at the left edge so it is never clipped; the others centre on their bar.
    ticks = [(round(position * slot + slot / 2, 2) if position else 0.0, day[5:], "middle" if position else "start")
             for position, day in enumerate(days) if position % step == 0]
    return Chart(width=width, height=height, plot_top=top, plot_bottom=bottom, bars=bars, ticks=ticks,
                 legend=legend, top_label=label(peak), empty=peak == 0)
