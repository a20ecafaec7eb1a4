"""What each manifest row's child run did, merged into the dispatch's summary, headline and report.

Preprocess and infer rows carry a ``RunSummary`` (they add up); a train row's summary is
TrainFlow's own dict, reported per row, never forced into ``RunSummary``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from steps.dispatch.placing import NAMED, RowPlace
from steps.report import Report, Table, usd
from steps.stats.summary import FlowStats, RunSummary

SUCCEEDED, FAILED, REUSED = "succeeded", "failed", "done earlier"


@dataclass(frozen=True)
class RowResult:
    line: int  # manifest line
    region: str
    input: str
    output: str
    status: str  # SUCCEEDED, FAILED or REUSED (an earlier successful child run of the same row)
    run: str = ""  # the child run's pathspec
    parameters: dict[str, Any] = field(default_factory=dict)
    place: dict[str, Any] = field(default_factory=dict)  # steps.dispatch.placing.RowPlace: how the region was decided
    summary: dict[str, Any] | None = None
    error: str = ""  # FAILED: the child run's own error line

    @property
    def images(self) -> int:
        return int((self.summary or {}).get("images", 0))

    @property
    def seconds(self) -> float:
        return float((self.summary or {}).get("seconds", 0.0))

    @property
    def estimated_usd(self) -> float | None:
        value = (self.summary or {}).get("estimated_usd")
        return None if value is None else float(value)

    def describe(self) -> str:
        return f"line {self.line} ({self.region} {self.input})"


def merged_summary(results: list[RowResult], seconds: float, flow_stats: type[FlowStats] = FlowStats) -> RunSummary:
    """Sharded rows that ran in this dispatch, added up and timed over its wall time (they ran side
    by side). Rows done earlier are reported, not re-counted: their work and cost were earlier runs'."""
    ran = [RunSummary.from_artifact(r.summary, flow_stats) for r in results if r.status == SUCCEEDED and r.summary]
    return replace(sum(ran, RunSummary()), seconds=seconds)


def headline(flow: str, results: list[RowResult], merged: RunSummary | None) -> str:
    counts = {status: sum(r.status == status for r in results) for status in (SUCCEEDED, REUSED, FAILED)}
    rows = (
        f"{len(results)} {flow} rows: {counts[SUCCEEDED]} ran, {counts[REUSED]} done earlier, {counts[FAILED]} failed"
    )
    usd = sum(r.estimated_usd or 0.0 for r in results if r.status == SUCCEEDED)
    work = (
        f"; {merged.images} images, {merged.processed} ok, {merged.rejected} rejected in {merged.seconds:.1f} s"
        if merged is not None
        else f"; {sum(r.images for r in results if r.status == SUCCEEDED)} images"
    )
    failed = [r.describe() for r in results if r.status == FAILED]
    redo = f". Failed: {', '.join(failed)}; rerun the same manifest to redo only those" if failed else ""
    return f"Dispatched {rows}{work}, ≈ ${usd:,.2f}{redo}."


def build_report(flow: str, results: list[RowResult], merged: RunSummary | None) -> Report:
    table = Table(
        "Rows (one child run each)",
        ["line", "region", "input", "output", "parameters", "status", "run", "images", "seconds", "$", "error"],
        [
            [
                r.line,
                r.region,
                r.input,
                r.output,
                ", ".join(f"{k}={v}" for k, v in r.parameters.items()),
                r.status,
                r.run,
                r.images,
                round(r.seconds, 1),
                "" if r.estimated_usd is None else round(r.estimated_usd, 4),
                r.error,
            ]
            for r in results
        ],
    )
    return Report(f"Dispatch of {flow}", headline(flow, results, merged), [table, placement_table(results)])


def placement_table(results: list[RowResult]) -> Table:
    """Per row: the region, who decided it, the selector's choice, its runner-up and the reason."""
    rows = []
    for r in results:
        place = RowPlace(**r.place) if r.place else RowPlace(r.region, NAMED)
        chosen = f"{place.region} {place.instance_type}".strip()
        cost = "" if place.expected_usd is None else usd(place.expected_usd)
        rows.append(
            [
                r.line,
                r.input,
                place.data_region or "–",
                chosen,
                place.decided_by,
                cost,
                place.runner_up or "–",
                place.reason or "–",
            ]
        )
    return Table(
        "Where each row ran",
        ["line", "input", "data in", "chosen", "decided by", "expected $", "runner-up", "reason"],
        rows,
    )
