"""Render a ``steps.report.Report`` as a Metaflow card (the only card code in the project)."""

from __future__ import annotations

from metaflow import current
from metaflow.cards import Image, Markdown, Table, VegaChart

from steps.report import Chart, Images, Report, human
from steps.report import Table as ReportTable


def render(report: Report) -> None:
    card = current.card
    card.append(Markdown(f"# {report.title}\n\n{report.headline}"))
    for section in report.sections:
        card.append(Markdown(f"## {section.title}"))
        if isinstance(section, ReportTable):
            if section.rows:
                # human(): rounded floats, a dash for unset values, never a blank cell
                card.append(Table(data=[[human(v) for v in row] for row in section.rows], headers=section.header))
            else:
                card.append(Markdown("_none_"))
        elif isinstance(section, Images):
            card.append(
                Table(
                    data=[[Image(src=data) for _, data in section.images]],  # captions are the header
                    headers=[caption for caption, _ in section.images],
                )
            )
        elif isinstance(section, Chart):
            card.append(VegaChart(section.spec))  # titled by the section header above
