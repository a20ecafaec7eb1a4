"""Is this run where the selector would put it, and what would moving save?

A Metaflow run cannot move itself (its compute layer is fixed when it starts), so the selector's
choice made in ``start`` applies to the next run. This says how the run that asked compares:

- a local run is local: the choice is where the same work would go on AWS Batch;
- a run on AWS Batch or Kubernetes (``steps.spot.on_cloud``) is in the region its environment
  names: ``AWS_REGION``, else ``AWS_DEFAULT_REGION`` (Metaflow sets it on every Batch job). The
  instance metadata endpoint is never asked.

The comparison is with the best option in the run's own region, as the ranking priced it: the
queue there may have placed the run on a dearer type, so the saving is a lower bound.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from steps.cost.explanation import explain
from steps.cost.placement import RegionChoice
from steps.report import usd
from steps.spot import on_cloud

LOCAL = "local"
UNKNOWN = "unknown"
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


def region_of_run() -> str:
    """``LOCAL`` off cloud compute; on it, the region this process's environment names, or ``UNKNOWN``."""
    if not on_cloud():
        return LOCAL
    return next((os.environ[name] for name in REGION_VARIABLES if os.environ.get(name)), UNKNOWN)


@dataclass(frozen=True)
class RunRegionVerdict:
    """The run's region against the selector's choice: the ``run_region`` artifact and a ``summary`` entry."""

    run_region: str  # a region name, LOCAL or UNKNOWN
    chosen: str  # the selector's choice: "region instance-type"
    chosen_usd: float  # its expected cost for this run's work
    saving_usd: float | None  # what running there would save against the best option here; None: not comparable
    sentence: str

    def to_artifact(self) -> dict:
        return asdict(self)


def judge_run_region(choice: RegionChoice, run_region: str) -> RunRegionVerdict:
    """Pure: ``choice`` (this run's ranking) read from ``run_region`` (``region_of_run``)."""
    best = choice.best
    expected = f"{best.label}, {usd(best.total_cost)} expected"

    def verdict(sentence: str, saving: float | None = None) -> RunRegionVerdict:
        return RunRegionVerdict(run_region, best.label, best.total_cost, saving, sentence)

    if run_region == LOCAL:
        return verdict(
            f"Local run: on AWS Batch this work would go to {expected}. To run there: {choice.run_command()}"
        )
    if run_region == UNKNOWN:
        return verdict(
            "This run's region is unknown: neither AWS_REGION nor AWS_DEFAULT_REGION is set in its environment "
            f"(set one in the job definition to compare). The selector's choice is {expected}."
        )
    if run_region == choice.region:
        return verdict(f"This run is in {run_region}, the selector's choice ({expected}).", 0.0)
    here = next((q for q in choice.ranking.quotes if q.region == run_region), None)
    if here is None:
        return verdict(
            f"This run is in {run_region}, which is not a candidate (no [regions.{run_region}] in "
            f"config/regions.toml, or no priced instance type there), so moving cannot be priced; add it to compare. "
            f"The selector's choice is {expected}."
        )
    saving = here.total_cost - best.total_cost
    return verdict(
        f"This run is in {run_region}, not the selector's choice: the next run would save {usd(saving)} of "
        f"{usd(here.total_cost)} expected there. {explain(best, here, choice.home)} "
        f"To run there: {choice.run_command()}",
        saving,
    )
