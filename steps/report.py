"""A card-agnostic report: titled tables, image rows and charts that a flow renders as a Metaflow card.

Charts are Vega-Lite specs (plain dicts): the Metaflow UI draws them itself, interactively, and a
task that reports draws nothing (no plotting library to import: ~0.8 s of CPU a join or end task).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_DECIMALS = 8


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[object]]


@dataclass(frozen=True)
class Images:
    """A row of images with captions, e.g. original → resized → edges."""

    title: str
    images: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Chart:
    title: str
    spec: dict  # Vega-Lite


@dataclass
class Report:
    title: str
    headline: str
    sections: list[Table | Images | Chart] = field(default_factory=list)


def bar_chart(labels: Sequence[str], values: Sequence[float], ylabel: str) -> dict:
    """Vega-Lite: one bar per label, in the order given."""
    return {
        "data": {
            "values": [{"label": str(label), "value": value} for label, value in zip(labels, values, strict=True)]
        },
        "mark": {"type": "bar", "color": "#3b7dd8"},
        "encoding": {
            "x": {"field": "label", "type": "nominal", "sort": None, "title": None},
            "y": {"field": "value", "type": "quantitative", "title": ylabel},
        },
        "height": 200,
    }


def usd(value: float) -> str:
    """Dollars for people: cents when a cent or more, else two significant digits ($0.000042)."""
    if value == 0:
        return "$0"
    if abs(value) >= 0.01:
        return f"${value:,.2f}"
    decimals = min(MAX_DECIMALS, 1 - math.floor(math.log10(abs(value))))
    return f"${value:.{decimals}f}"


def gigabytes(value: float) -> str:
    """A data size given in GB, to 3 significant digits in the unit that reads best (MB under 1 GB)."""
    return f"{value:.3g} GB" if value >= 1 else f"{value * 1000:.3g} MB"


def column_decimals(values: Sequence[float], least: int = 2) -> int:
    """Decimals that keep every distinct value of a column distinct and give the smallest non-zero
    one at least two significant digits: a ranking's reason stays visible in the cells."""
    distinct = {round(v, MAX_DECIMALS) for v in values}
    smallest = min((abs(v) for v in values if v), default=1.0)
    decimals = least
    while decimals < MAX_DECIMALS and (
        len({round(v, decimals) for v in distinct}) < len(distinct) or smallest < 10 ** (1 - decimals)
    ):
        decimals += 1
    return decimals


def fixed(values: Sequence[float], least: int = 2) -> list[str]:
    """A numeric column, all with the same decimals (``column_decimals``)."""
    decimals = column_decimals(values, least)
    return [f"{v:,.{decimals}f}" for v in values]


def human(value: object) -> str:
    """A table cell: floats to 4 significant digits without trailing zeros (no 16-digit noise),
    never blank."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    digits = max(0, 3 - math.floor(math.log10(abs(value))))
    text = f"{value:,.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
