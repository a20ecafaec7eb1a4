"""The I/O edges of the cost model: where the data lives, how big it is, which queue serves a region."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from steps.cost.billing import BillingRate
from steps.cost.capacity import Capacity
from steps.cost.explanation import explain
from steps.cost.model import GB, NO_CAPACITY, Job, Ranking, RegionQuote, home_region, rank
from steps.cost.prices import PriceBook
from steps.cost.resources import StepResources
from steps.cost.throughput import ImageCost, image_cost
from steps.errors import ConfigError
from steps.io.s3_storage import s3_client
from steps.io.storage import is_s3
from steps.report import Report, gigabytes


def data_region(uri: str, config: Mapping) -> str:
    """The region holding ``uri``: local paths → ``local_region``; a bucket → ``[buckets]`` in
    regions.toml, else S3 GetBucketLocation (short timeouts), else ``default_region``."""
    if not is_s3(uri):
        return str(config["local_region"])
    bucket = uri[len("s3://") :].split("/", 1)[0]
    if bucket in config.get("buckets", {}):
        return str(config["buckets"][bucket])
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        location = s3_client(fail_fast=True).get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except (BotoCoreError, ClientError):
        return str(config["default_region"])
    # S3 reports us-east-1 as no constraint and, for old buckets, eu-west-1 as "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def queue_key(resources: StepResources | None) -> str:
    """The regions.toml key of the queue for a step: ``cpu_batch_queue`` without a GPU."""
    return "cpu_batch_queue" if resources is not None and resources.gpu == 0 else "batch_queue"


def batch_settings(
    region: str, regions_config: Mapping, resources: StepResources | None = None
) -> tuple[dict[str, str], list[str]]:
    """Environment and ``--with`` specs that put a Metaflow run on ``region``'s Batch queue for
    steps of ``resources`` (default: the GPU queue).

    Metaflow fixes the compute layer when a run starts, so a choice made inside a run applies to
    the runs it launches (flows/dispatch.py) or to the next run the user starts with these.
    """
    key = queue_key(resources)
    queue = regions_config["regions"].get(region, {}).get(key)
    if not queue:
        raise ConfigError(
            "region",
            region,
            f"a region with a {key} in config/regions.toml",
            f'add [regions.{region}] {key} = "..." there',
        )
    return {"AWS_DEFAULT_REGION": region}, [f"batch:queue={queue}"]


# Rows of the region card: the deciding ones. The artifact ``region_table`` keeps every row.
CARD_ROWS = 12


@dataclass(frozen=True)
class RegionChoice:
    """Where a run goes, on which instance type, why, and what the compute layer needs to get it there."""

    region: str
    instance_type: str
    batch_queue: str
    resources: StepResources
    data_gb: dict[str, float]
    ranking: Ranking
    rate: ImageCost  # one task's calibrated cost per image on the chosen type

    def billing_rate(self) -> BillingRate:
        """What the run's summary is priced at: the chosen instance, shared by its tasks."""
        best = self.best
        return BillingRate(
            region=best.region,
            instance_type=best.instance_type,
            resources=self.resources.describe(),
            spot_usd_per_hour=best.spot_price,
            tasks_per_instance=best.tasks_per_instance,
            seconds_per_image=self.rate.ms_per_image / 1000,
            rate_source=f"config/throughput.toml: {self.rate.source}",
        )

    @property
    def explanation(self) -> str:
        return self.ranking.explanation

    @property
    def best(self) -> RegionQuote:
        return self.ranking.best

    @property
    def home(self) -> str | None:
        """The region holding most of the input."""
        return home_region(self.data_gb)

    @property
    def runner_up(self) -> RegionQuote | None:
        """The best option in another region: what choosing this region beat (None: one region only)."""
        return next((q for q in self.ranking.quotes if q.region != self.region), None)

    @property
    def reason(self) -> str:
        """One sentence: why this region rather than the runner-up's, by the cost terms that decided it."""
        return explain(self.best, self.runner_up, self.home)

    def run_command(self) -> str:
        """How a user starts a run in the chosen region, on its queue."""
        env = f"AWS_DEFAULT_REGION={self.region}"
        return f"`{env} python flows/<flow>.py run --with batch:queue={self.batch_queue} ...`"

    @property
    def region_table(self) -> list[dict]:
        """The ``region_table`` artifact: the ranked rows, best first."""
        return self.ranking.rows()

    def report(self, verdict: str = "") -> Report:
        """The region card; ``verdict`` (``steps.cost.run_region``) says whether this run is where it would go."""
        data = ", ".join(f"{gigabytes(gb)} in {r}" for r, gb in sorted(self.data_gb.items())) or "no input data"
        best = self.best
        return Report(
            "Region choice",
            f"{self.explanation}\n\nA task asks for {self.resources.describe()}: candidates are the instance types "
            f"that hold one ({len({q.instance_type for q in self.ranking.quotes})} types). "
            f"{best.task_hours:.3g} task-hours estimated on {best.instance_type} from {self.rate.describe()}; {data}. "
            f"{self.ranking.prices}. "
            f"To run there: {self.run_command()}" + (f"\n\n{verdict}" if verdict else ""),
            [self.ranking.table(CARD_ROWS if len(self.ranking.quotes) > CARD_ROWS else None)],
        )


def candidate_costs(
    prices: PriceBook,
    resources: StepResources,
    architectures: Iterable[str],
    cost_on: Callable[[str], ImageCost | None],
) -> dict[str, ImageCost]:
    """Per instance type that can run the step — of its kind (GPU or CPU), big enough for one task,
    of an allowed CPU architecture, with a calibrated rate — one task's cost per image there."""
    allowed = set(architectures)
    costs = {}
    for price in prices.quotes:
        if price.shape.arch not in allowed or resources.tasks_per_instance(price.shape) < 1:
            continue
        cost = cost_on(price.instance_type)
        if cost is not None:
            costs[price.instance_type] = cost
    if not costs:
        raise ConfigError(
            "resources",
            resources.describe(),
            f"an instance type in config/prices.toml that holds such a task ({', '.join(sorted(allowed))}) and has "
            "a per-image rate in config/throughput.toml",
            "add one, or change the step's [resources]",
        )
    return costs


def calibrated_cost(throughput: Mapping, flow: str, resources: StepResources, instance_type: str) -> ImageCost | None:
    """One task's per-image cost of ``flow`` on ``instance_type`` (config/throughput.toml: a
    per-vCPU figure is the same on every type); None when the file has no figure for that type."""
    try:
        return image_cost(throughput, flow, vcpus=resources.cpu, instance_type=instance_type)
    except ConfigError:
        return None


def choose_region(
    inputs: Mapping[str, int],
    images: int,
    *,
    resources: StepResources,
    tasks: int,
    flow: str,
    throughput: Mapping,
    regions_config: Mapping,
    prices: PriceBook,
    capacity: Capacity = NO_CAPACITY,
) -> RegionChoice:
    """Pick the region and instance type for a run's foreach step, among the regions in ``regions_config``
    that have a queue of the step's kind (``queue_key``): a run needs one to land on.

    ``inputs``: each input URI → its total bytes (a run's plan, or steps/dispatch/placing.py's
    listing). ``images``: how many images the run processes, in ``tasks`` tasks of ``resources`` each (the step's
    ``@resources``). ``throughput``: parsed config/throughput.toml, whose ``flow`` section gives a
    task's calibrated cost per image on each instance type (a type without one is no candidate).
    ``regions_config``: parsed config/regions.toml (a dict or a Metaflow ``Config``): candidate
    regions, allowed CPU architectures and the checkpoint interval. ``prices``: a ``PriceBook``
    from ``steps.cost.prices.load_prices``. ``capacity``: placement scores and price volatility
    (``steps.cost.capacity.live_capacity``), which make scarce or volatile pairs riskier.
    """
    key = queue_key(resources)
    regions = [name for name, settings in regions_config["regions"].items() if settings.get(key)]
    if not regions:
        raise ConfigError(
            "config/regions.toml",
            sorted(regions_config["regions"]),
            f"a region with a {key}",
            f'add {key} = "..." under [regions.<region>]',
        )
    estimate = regions_config["estimate"]
    costs = candidate_costs(
        prices, resources, estimate["architectures"], lambda t: calibrated_cost(throughput, flow, resources, t)
    )
    data_gb: dict[str, float] = {}
    for uri, size in inputs.items():
        region = data_region(uri, regions_config)
        data_gb[region] = data_gb.get(region, 0.0) + size / GB
    job = Job(
        data_gb,
        {t: images * cost.ms_per_image / 3_600_000 for t, cost in costs.items()},
        resources,
        max(1, tasks),
        float(estimate["checkpoint_minutes"]),
        images,
    )
    ranking = rank(prices, job, regions, capacity=capacity)
    best = ranking.best
    return RegionChoice(
        region=best.region,
        instance_type=best.instance_type,
        batch_queue=str(regions_config["regions"][best.region][key]),
        resources=resources,
        data_gb=data_gb,
        ranking=ranking,
        rate=costs[best.instance_type],
    )
