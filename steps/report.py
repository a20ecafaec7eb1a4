"""A card-agnostic report: titled tables, image rows and charts that a flow renders as a Metaflow card.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field


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
    png: bytes


@dataclass
class Report:
    title: str
    headline: str
    sections: list[Table | Images | Chart] = field(default_factory=list)


def bar_chart_png(labels: Sequence[str], values: Sequence[float], ylabel: str, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.bar(list(labels), list(values), color="#3b7dd8")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=90 if len(labels) > 16 else 0, labelsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
