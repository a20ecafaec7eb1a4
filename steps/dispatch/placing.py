"""Where a manifest row runs: the region its manifest line names, else the selector's choice for
that row's flow and size (``steps.cost.placement.choose_region``: data location, egress, price, risk).

A row's size is its input, listed once in DispatchFlow's start with counters only (memory does not
grow with the bucket; time does, as it does in the child's own plan). Its work is what the child run
would do with the row's parameters and the child's config defaults: a sharded flow's images in as
many shards as its sizing makes (``steps.planning.sizing``), a training run's images x epochs in one task.
A row whose input cannot be listed, or holds nothing, runs in its data's region: its child run then
fails there with its own error line, like any failing row.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from steps.config_files import config_file
from steps.cost.capacity import Capacity
from steps.cost.model import NO_CAPACITY
from steps.cost.placement import choose_region, data_region
from steps.cost.prices import PriceBook
from steps.cost.resources import StepResources
from steps.cost.throughput import image_cost
from steps.errors import ConfigError
from steps.planning.sizing import Sizing
from steps.report import usd

NAMED, SELECTED, DATA = "manifest", "selector", "data region"  # how a row's region was decided
SHARDED_FLOWS = frozenset({"preprocess", "infer"})


@dataclass(frozen=True)
class InputSize:
    objects: int
    bytes: int


def measure_input(uri: str) -> InputSize:
    """Objects and bytes under ``uri`` (metadata files excluded, as in a plan): one parallel listing, counted."""
    from steps.io.storage import open_storage
    from steps.planning.inputs import input_pages

    objects = size = 0
    for page in input_pages(open_storage(uri)):
        objects += len(page)
        size += sum(o.size for o in page)
    return InputSize(objects, size)


@dataclass(frozen=True)
class RowWork:
    """What a row's child run would process: images (training: x epochs) in ``tasks`` tasks."""

    images: int
    tasks: int


def flow_defaults(flow: str) -> dict:
    """``config/<flow>.toml``: what a child run started without ``--config`` uses."""
    with open(config_file(f"{flow}.toml"), "rb") as f:
        return tomllib.load(f)


def row_work(flow: str, images: int, defaults: Mapping, arguments: Mapping[str, Any], throughput: Mapping) -> RowWork:
    """Pure: the work of ``images`` inputs for ``flow`` with the row's ``arguments`` over the config ``defaults``."""
    settings = {**defaults, **arguments}
    if flow not in SHARDED_FLOWS:  # TrainFlow: one run of every image per epoch
        return RowWork(images * int(settings.get("epochs", 1)), 1)
    cost = image_cost(throughput, flow, vcpus=int(defaults.get("resources", {}).get("cpu", 1)))
    target = Sizing(int(settings["shard_size"]), float(settings["task_minutes"]), cost).target_images()
    return RowWork(images, max(1, min(int(settings["max_shards"]), math.ceil(images / target))))


@dataclass(frozen=True)
class RowPlace:
    """Where one row runs and why: plain data for the row plan, its result and the dispatch report."""

    region: str
    decided_by: str  # NAMED, SELECTED or DATA
    data_region: str = ""  # where most of the input is ("" when the manifest named the region)
    instance_type: str = ""  # the selector's instance type
    expected_usd: float | None = None
    runner_up: str = ""  # "region instance-type, $x expected": the best option in another region
    reason: str = ""

    def to_plain(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Selector:
    """What ``choose_region`` needs besides the row: the child flow, its config defaults and
    resources, and the shared configs and prices."""

    flow: str
    defaults: Mapping
    resources: StepResources
    throughput: Mapping
    regions_config: Mapping
    prices: PriceBook
    capacity: Capacity = NO_CAPACITY


def place_row(uri: str, named_region: str, arguments: Mapping[str, Any], selector: Selector) -> RowPlace:
    """Where a row runs: ``named_region`` when its manifest line has one; else its input is measured
    and the selector decides."""
    if named_region:
        return RowPlace(named_region, NAMED)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        size = measure_input(uri)
    except (OSError, BotoCoreError, ClientError, ConfigError) as error:
        return at_data_region(uri, selector, f"the input could not be listed ({error}): its child run reports it")
    if size.objects == 0:
        return at_data_region(uri, selector, "the input holds no objects: its child run reports that")
    work = row_work(selector.flow, size.objects, selector.defaults, arguments, selector.throughput)
    return select_row_region(uri, size, work, selector)


def at_data_region(uri: str, selector: Selector, reason: str) -> RowPlace:
    """A row that cannot be priced runs where its data is, saying why."""
    home = data_region(uri, selector.regions_config)
    return RowPlace(home, DATA, home, reason=reason)


def select_row_region(uri: str, size: InputSize, work: RowWork, selector: Selector) -> RowPlace:
    """The selector's choice for one row's measured work (pure but for ``data_region``'s bucket lookup)."""
    choice = choose_region(
        {uri: size.bytes},
        work.images,
        resources=selector.resources,
        tasks=work.tasks,
        flow=selector.flow,
        throughput=selector.throughput,
        regions_config=selector.regions_config,
        prices=selector.prices,
        capacity=selector.capacity,
    )
    other = choice.runner_up
    return RowPlace(
        region=choice.region,
        decided_by=SELECTED,
        data_region=choice.home or "",
        instance_type=choice.instance_type,
        expected_usd=choice.best.total_cost,
        runner_up=f"{other.label}, {usd(other.total_cost)} expected" if other else "",
        reason=f"{choice.reason} Priced: {size.objects} objects, {size.bytes / 1e9:.3g} GB, "
        f"{work.images} images in {work.tasks} task{'s' if work.tasks != 1 else ''}.",
    )
