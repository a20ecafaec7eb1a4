"""``spot-batch plan``: the plan a sharded flow's ``start`` would make, without running anything.

It calls ``prepare_run`` with the flow's defaults (its config file), ``store=False``: the input is
listed (or the manifest read) and the shards chosen exactly as in ``start``, but nothing is
written, not under the output and not elsewhere, so it is safe against a live output.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from steps.config_files import config_file
from steps.cost.prices import parse_snapshot, read_snapshot
from steps.cost.throughput import ImageCost, image_cost, read_throughput
from steps.planning.run_plan import RunPlan, prepare_run


@dataclass(frozen=True)
class PlanSettings:
    """What a flow run would be given; ``None`` takes the flow's config default."""

    flow: str
    manifest: str = ""
    shard_size: int | None = None
    task_minutes: float | None = None
    max_shards: int | None = None
    prefix_width: int = 0
    threads: int | None = None
    input_format: str = "auto"


def flow_config(flow: str) -> dict:
    with open(config_file(f"{flow}.toml"), "rb") as f:
        return tomllib.load(f)


def preview(input_uri: str, output_uri: str, settings: PlanSettings) -> tuple[RunPlan, ImageCost]:
    config = flow_config(settings.flow)
    cost = image_cost(read_throughput(), settings.flow, vcpus=config["resources"]["cpu"])

    def given(value, default):
        return default if value is None else value

    plan = prepare_run(
        input_uri,
        output_uri,
        shard_size=given(settings.shard_size, config["shard_size"]),
        task_minutes=given(settings.task_minutes, config["task_minutes"]),
        max_shards=given(settings.max_shards, config["max_shards"]),
        prefix_width=settings.prefix_width,
        threads=given(settings.threads, config["threads"]),
        cost=cost,
        manifest=settings.manifest,
        store=False,
        input_format=settings.input_format,
    )
    return plan, cost


def plan_facts(plan: RunPlan, cost: ImageCost) -> dict:
    """The plan for people and scripts: ``RunPlan.describe`` plus task-hours and, where the cost
    basis is a priced instance type, spot $ at its cheapest region in config/prices.toml."""
    facts = plan.describe()
    task_hours = plan.images * cost.ms_per_image / 3_600_000
    spot = [q.spot for q in parse_snapshot(read_snapshot()).quotes if q.instance_type == cost.basis]
    facts.update(
        ms_per_image=cost.ms_per_image,
        cost_basis=cost.basis,
        task_hours=round(task_hours, 3),
        spot_dollars=round(task_hours * min(spot), 2) if spot else None,
        dollars_per_million=round(task_hours * min(spot) / plan.images * 1e6, 3) if spot and plan.images else None,
        price_basis=f"{cost.basis} at ${min(spot)}/h spot, cheapest region in config/prices.toml" if spot else None,
    )
    return facts


def format_facts(facts: dict) -> str:
    minutes = facts["largest_task_minutes"]
    work = f"{facts['task_hours']} task-hours at {facts['ms_per_image']:g} ms per image ({facts['cost_basis']})"
    if facts["spot_dollars"] is None:
        dollars = "not estimated (no price for this cost basis in config/prices.toml)"
    else:
        per_million = f"${facts['dollars_per_million']} per million images"
        dollars = f"${facts['spot_dollars']} ({per_million}; {facts['price_basis']})"
    lines = [
        f"shards:        {facts['shards']} (prefix width {facts['prefix_width']})",
        f"images:        {facts['images']} ({facts['input_bytes']} bytes)",
        f"largest shard: {facts['largest_shard']} images ≈ {minutes:.1f} task minutes",
        f"work:          {work}",
        f"spot $:        {dollars}",
        f"reason:        {facts['reason']}",
    ]
    return "\n".join(lines)
