"""Choose where a step runs: price every region x instance type that fits it, moving the data included.

    spot-batch regions rank --instance-types g4dn.xlarge,g5.xlarge --data-region eu-west-1 \
        --data-gb 220 --task-hours 2 [--cpu 4 --gpu 1] [--json]

Price-only rankings (SkyPilot's, for one) treat traffic inside a cloud as free. It is not: moving
220 GB across AWS regions costs ≈ $4.40, more than a whole 250k-image preprocessing run. The
cost model here is pure (a ``PriceBook`` and a ``Job`` in, a ``Ranking`` out).

Candidates follow the step's ``@resources`` (``StepResources``): a step without a GPU is priced on
CPU instance types only, a GPU step on GPU types only, and a type must hold one task's vCPUs,
memory and GPUs. For each candidate region R and instance type T:

- compute = instance-hours x spot $/h(R, T). task-hours(T) = images x seconds per image of one
  task on T (the calibrated rate); an instance runs ``tasks_per_instance`` tasks side by side
  (never more than the job has), so instance-hours = task-hours / that;
- egress  = GB of input stored outside R x cross-region $/GB (outputs are not priced);
- rework  = compute x p x min(1, checkpoint / task length). Each of the job's ``tasks`` runs
  task-hours / tasks, is reclaimed with probability p (the AWS interruption band priced by
  ``prices.toml``, conservatively taken as the chance per task, at most once), and then redoes at
  most one checkpoint interval (a chunk): committed work is never redone;
- total   = compute + egress + rework, the expected cost; per million images when the job says
  how many. Ranked by total, then region name, then instance type, so equal totals always rank
  the same way.

``choose_region`` and ``data_region`` (steps/cost/placement.py) are the I/O edges that a sharded
flow's ``start`` and DispatchFlow's rows call; everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime

from steps.cost.capacity import Capacity, shifted_band
from steps.cost.explanation import explain, rival
from steps.cost.prices import PriceBook, PriceQuote
from steps.cost.resources import StepResources
from steps.errors import ConfigError
from steps.io.validation import check_names
from steps.report import Table, fixed

GB = 1e9

NO_CAPACITY = Capacity()


def aws_regions() -> list[str]:
    """Every EC2 region botocore knows (offline data): data may live where we do not run."""
    import botocore.session

    return botocore.session.get_session().get_available_regions("ec2")


@dataclass(frozen=True)
class Job:
    """What is being priced: input GB per region; per candidate instance type, the task-hours the
    whole job needs there; one task's resources; tasks side by side; checkpoint interval; images."""

    data_gb: Mapping[str, float]
    task_hours: Mapping[str, float]
    resources: StepResources = field(default_factory=lambda: StepResources(cpu=1, gpu=1))
    tasks: int = 1
    checkpoint_minutes: float = 10.0
    images: int = 0

    @property
    def home(self) -> str | None:
        return home_region(self.data_gb)


def home_region(data_gb: Mapping[str, float]) -> str | None:
    """The region holding the most data (ties: by name), or None when there is none."""
    return min(data_gb, key=lambda r: (-data_gb[r], r)) if data_gb else None


@dataclass(frozen=True)
class RegionQuote:
    region: str
    instance_type: str
    shape: str  # "1 GPU, 4 vCPU, 16 GiB"
    spot_price: float
    on_demand_price: float
    tasks_per_instance: int
    task_hours: float
    instance_hours: float
    compute_cost: float
    moved_gb: float
    egress_cost: float
    risk: str
    interruption_probability: float
    rework_cost: float
    total_cost: float
    usd_per_million_images: float | None

    @property
    def label(self) -> str:
        return f"{self.region} {self.instance_type}"

    @property
    def rank_key(self) -> tuple[float, str, str]:
        """Total cost, then names: equal totals always rank the same way (rounded: float noise is not a win)."""
        return (round(self.total_cost, 12), self.region, self.instance_type)

    def as_dict(self) -> dict:
        """Plain data for the artifact and JSON, unrounded: a short run costs fractions of a cent."""
        return asdict(self)


def quote(price: PriceQuote, job: Job, book: PriceBook, capacity: Capacity = NO_CAPACITY) -> RegionQuote:
    """The expected cost of ``job`` on ``price``'s instance type in its region (model: module docstring);
    scarce capacity or a volatile price there prices it one band riskier (steps/cost/capacity.py)."""
    side_by_side = min(job.resources.tasks_per_instance(price.shape), job.tasks)
    task_hours = job.task_hours[price.instance_type]
    instance_hours = task_hours / side_by_side
    compute = instance_hours * price.spot
    moved_gb = sum(gb for region, gb in job.data_gb.items() if region != price.region)
    egress = moved_gb * book.cross_region_per_gb
    steps, why = capacity.shift(price.region, price.instance_type)
    band = shifted_band(price.band, steps, list(book.band_rates))
    probability = book.band_rates[band]
    task_length = task_hours / job.tasks
    lost_fraction = min(1.0, job.checkpoint_minutes / 60 / task_length) if task_length > 0 else 0.0
    rework = compute * probability * lost_fraction
    total = compute + egress + rework
    return RegionQuote(
        region=price.region,
        instance_type=price.instance_type,
        shape=price.shape.describe(),
        spot_price=price.spot,
        on_demand_price=price.on_demand,
        tasks_per_instance=side_by_side,
        task_hours=task_hours,
        instance_hours=instance_hours,
        compute_cost=compute,
        moved_gb=moved_gb,
        egress_cost=egress,
        risk=f"{price.band} → {band} ({why})" if why else price.band,
        interruption_probability=probability,
        rework_cost=rework,
        total_cost=total,
        usd_per_million_images=total / job.images * 1e6 if job.images else None,
    )


@dataclass(frozen=True)
class Ranking:
    quotes: tuple[RegionQuote, ...]  # best first
    explanation: str
    prices: str  # which price source, and how old
    images: int = 0  # how many images the job processes; 0: not counted

    @property
    def best(self) -> RegionQuote:
        return self.quotes[0]

    def rows(self) -> list[dict]:
        """The ranked table as plain dicts: a Metaflow artifact or the CLI's --json."""
        return [q.as_dict() for q in self.quotes]

    def table(self, limit: int | None = None) -> Table:
        """Best first, the deciding column (expected $) right after the candidate; the same
        decimals down a column, enough to tell every row apart. When the job counts images the
        dollar columns are per million images (a short run costs fractions of a cent; the
        headline keeps the run's own total)."""
        quotes = self.quotes[:limit]
        images = self.images
        unit, scale = ("$/M images", 1e6 / images) if images else ("$", 1.0)
        header = ["#", "region", "instance", "spot $/h", "task-hours"]
        header += [f"expected {unit}", f"egress {unit}", f"rework {unit} (risk)"]
        columns = [fixed([q.spot_price for q in quotes], 3), fixed([q.task_hours for q in quotes])]
        for cost in ("total_cost", "egress_cost", "rework_cost"):
            columns.append(fixed([getattr(q, cost) * scale for q in quotes]))
        rows = []
        for i, q in enumerate(quotes):
            cells = [column[i] for column in columns]
            cells[-1] = f"{cells[-1]} ({q.risk})"
            rows.append([i + 1, q.region, f"{q.instance_type} ({q.shape})", *cells])
        title = "Regions ranked by expected cost" + (f" (best {len(quotes)} of {len(self.quotes)})" if limit else "")
        return Table(title, header, rows)


def rank(
    book: PriceBook,
    job: Job,
    regions: Sequence[str] | None = None,
    today: date | None = None,
    capacity: Capacity = NO_CAPACITY,
) -> Ranking:
    """Every offered (region, instance type) pair of ``job.task_hours`` priced for ``job``, best
    first, with the reason.

    ``regions`` defaults to every region in the price book. Unknown names, and instance types that
    cannot hold one of the job's tasks, raise ConfigError (the closest valid names, or the fix).
    """
    instance_types = sorted(job.task_hours)
    check_names(
        "instance type",
        instance_types,
        book.instance_types,
        "an instance type priced in config/prices.toml",
        "--instance-types",
    )
    candidates = list(regions) if regions is not None else book.regions
    check_names(
        "region", candidates, book.regions, "a region priced in config/prices.toml", "--regions or config/regions.toml"
    )
    check_names("data region", job.data_gb, aws_regions() + book.regions, "an AWS region name", "--data-region")
    if any(hours < 0 for hours in job.task_hours.values()) or job.tasks < 1:
        raise ConfigError("job", job, "task-hours >= 0 and tasks >= 1", "fix --task-hours / --tasks")
    offered = [p for p in book.quotes if p.region in candidates and p.instance_type in instance_types]
    for price in offered:
        if job.resources.tasks_per_instance(price.shape) < 1:
            raise ConfigError(
                "instance type",
                f"{price.instance_type} ({price.shape.describe()})",
                f"one that holds a task of {job.resources.describe()}",
                "choose an instance type of the step's kind (GPU types for GPU steps, CPU types otherwise), "
                "or fix --cpu / --gpu / --memory",
            )
    quotes = sorted((quote(p, job, book, capacity) for p in offered), key=lambda q: q.rank_key)
    if not quotes:
        raise ConfigError(
            "instance types",
            instance_types,
            f"offered in one of {candidates}",
            "add a region or an instance type that config/prices.toml prices there",
        )
    return Ranking(
        tuple(quotes),
        explain(quotes[0], rival(quotes, job.home), job.home),
        f"{book.describe(today or datetime.now(UTC).date())}; {capacity.note}",
        job.images or 0,
    )


def format_ranking(ranking: Ranking) -> str:
    """The ranking as an aligned text table, then the explanation and the price source."""
    table = ranking.table()
    cells = [table.header, *[[str(c) for c in row] for row in table.rows]]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(table.header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([*lines, "", ranking.explanation, ranking.prices])
