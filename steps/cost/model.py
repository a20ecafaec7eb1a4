"""Choose where a GPU job runs: price every region x instance type, including moving the data.

    spot-batch regions rank --instance-types g4dn.xlarge,g5.xlarge --data-region eu-west-1 \
        --data-gb 220 --gpu-hours 2 [--json]

Price-only rankings (SkyPilot's, for one) treat traffic inside a cloud as free. It is not: moving
220 GB across AWS regions costs ≈ $4.40, more than a whole 250k-image preprocessing run. The
cost model here is pure (a ``PriceBook`` and a ``Job`` in, a ``Ranking`` out) and prices, for
each candidate region R and instance type T:

- compute = instance-hours x spot $/h(R, T), where instance-hours = gpu_hours / GPUs per instance;
- egress  = GB of input stored outside R x cross-region $/GB (outputs are not priced);
- rework  = compute x p x min(1, checkpoint / task length). Each of the job's ``gpus`` parallel
  tasks runs gpu_hours / gpus hours, is reclaimed with probability p (the AWS interruption band
  priced by ``prices.toml``, conservatively taken as the chance per task, at most once), and then
  redoes at most one checkpoint interval (a chunk): committed work is never redone;
- total   = compute + egress + rework, the expected cost. Ranked by total, then region name,
  then instance type, so equal totals always rank the same way.

``choose_region`` and ``data_region`` are the I/O edges (bucket locations, object sizes) that a
flow's ``select_region`` step calls; everything above them is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime

from steps.cost.prices import PriceBook, PriceQuote
from steps.errors import ConfigError
from steps.io.validation import check_names
from steps.report import Table

GB = 1e9


_CENT = 0.005  # differences below half a cent are not worth a word in the explanation


def aws_regions() -> list[str]:
    """Every EC2 region botocore knows (offline data): data may live where we do not run."""
    import botocore.session

    return botocore.session.get_session().get_available_regions("ec2")


@dataclass(frozen=True)
class Job:
    """What is being priced: input GB per region, total GPU-hours, parallel GPUs, checkpoint interval."""

    data_gb: Mapping[str, float]
    gpu_hours: float
    gpus: int = 1
    checkpoint_minutes: float = 10.0

    @property
    def home(self) -> str | None:
        """The region holding the most data (ties: by name), or None when there is none."""
        return min(self.data_gb, key=lambda r: (-self.data_gb[r], r)) if self.data_gb else None


@dataclass(frozen=True)
class RegionQuote:
    region: str
    instance_type: str
    spot_price: float
    on_demand_price: float
    instance_hours: float
    compute_cost: float
    moved_gb: float
    egress_cost: float
    risk: str
    interruption_probability: float
    rework_cost: float
    total_cost: float

    @property
    def label(self) -> str:
        return f"{self.region} {self.instance_type}"

    def as_dict(self) -> dict:
        """Rounded for people and JSON; ranking uses the exact values."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def quote(price: PriceQuote, job: Job, book: PriceBook) -> RegionQuote:
    """The expected cost of ``job`` on ``price``'s instance type in its region (model: module docstring)."""
    instance_hours = job.gpu_hours / price.gpus
    compute = instance_hours * price.spot
    moved_gb = sum(gb for region, gb in job.data_gb.items() if region != price.region)
    egress = moved_gb * book.cross_region_per_gb
    probability = book.band_rates[price.band]
    task_hours = job.gpu_hours / job.gpus
    lost_fraction = min(1.0, job.checkpoint_minutes / 60 / task_hours) if task_hours > 0 else 0.0
    rework = compute * probability * lost_fraction
    return RegionQuote(
        region=price.region,
        instance_type=price.instance_type,
        spot_price=price.spot,
        on_demand_price=price.on_demand,
        instance_hours=instance_hours,
        compute_cost=compute,
        moved_gb=moved_gb,
        egress_cost=egress,
        risk=price.band,
        interruption_probability=probability,
        rework_cost=rework,
        total_cost=compute + egress + rework,
    )


def _rank_key(q: RegionQuote) -> tuple[float, str, str]:
    return (round(q.total_cost, 9), q.region, q.instance_type)  # rounding: float noise is not a win


@dataclass(frozen=True)
class Ranking:
    quotes: tuple[RegionQuote, ...]  # best first
    explanation: str
    prices: str  # which price source, and how old

    @property
    def best(self) -> RegionQuote:
        return self.quotes[0]

    def rows(self) -> list[dict]:
        """The ranked table as plain dicts: a Metaflow artifact or the CLI's --json."""
        return [q.as_dict() for q in self.quotes]

    def table(self) -> Table:
        return Table(
            "Regions ranked by expected cost",
            [
                "#",
                "region",
                "instance",
                "spot $/h",
                "on-demand $/h",
                "compute $",
                "moved GB",
                "egress $",
                "risk",
                "rework $",
                "expected $",
            ],
            [
                [
                    i,
                    q.region,
                    q.instance_type,
                    f"{q.spot_price:.4f}",
                    f"{q.on_demand_price:.4f}",
                    f"{q.compute_cost:.2f}",
                    f"{q.moved_gb:g}",
                    f"{q.egress_cost:.2f}",
                    q.risk,
                    f"{q.rework_cost:.2f}",
                    f"{q.total_cost:.2f}",
                ]
                for i, q in enumerate(self.quotes, 1)
            ],
        )


def rival(quotes: Sequence[RegionQuote], home: str | None) -> RegionQuote | None:
    """What the winner is best compared with: the best option where the data is, when the winner
    moved away from it; otherwise the price-only pick (lowest spot $/h); otherwise the runner-up."""
    best, others = quotes[0], quotes[1:]
    if not others:
        return None
    at_home = [q for q in others if q.region == home]
    if home is not None and best.region != home and at_home:
        return at_home[0]
    cheapest = min(quotes, key=lambda q: (q.spot_price, q.region, q.instance_type))
    return cheapest if cheapest is not best else others[0]


def explain(best: RegionQuote, other: RegionQuote | None, home: str | None) -> str:
    """One sentence: the winner, what it beat and by how much, and which cost terms decided it."""
    where = " where the data is" if best.region == home else ""
    if other is None:
        return f"{best.label}{where}: ${best.total_cost:.2f} expected, the only candidate."
    pros, cons = [], []
    d_compute = other.compute_cost - best.compute_cost
    if d_compute > _CENT:
        pros.append(f"its spot price is lower (${best.spot_price:.3f}/h vs ${other.spot_price:.3f}/h)")
    elif d_compute < -_CENT:
        cons.append(f"a higher spot price (${best.spot_price:.3f}/h vs ${other.spot_price:.3f}/h)")
    if other.egress_cost - best.egress_cost > _CENT:
        pros.append(f"it avoids moving {other.moved_gb:g} GB across regions (${other.egress_cost:.2f})")
    elif best.egress_cost - other.egress_cost > _CENT:
        cons.append(f"${best.egress_cost:.2f} to move {best.moved_gb:g} GB")
    if other.rework_cost - best.rework_cost > _CENT:
        pros.append(f"its interruption risk is lower ({best.risk} vs {other.risk})")
    elif best.rework_cost - other.rework_cost > _CENT:
        cons.append(f"higher interruption risk ({best.risk} vs {other.risk})")
    if pros:
        why = " because " + " and ".join(pros)
    elif _rank_key(best)[0] == _rank_key(other)[0]:
        why = " (equal cost: ties go to the region name, then the instance type)"
    else:
        why = " (less than a cent apart)"
    despite = ", despite " + " and ".join(cons) if cons else ""
    other_where = " where the data is" if other.region == home else ""
    return (
        f"{best.label}{where}: ${best.total_cost:.2f} expected, ${other.total_cost - best.total_cost:.2f} "
        f"less than {other.label}{other_where}{why}{despite}."
    )


def rank(
    book: PriceBook,
    job: Job,
    instance_types: Sequence[str],
    regions: Sequence[str] | None = None,
    today: date | None = None,
) -> Ranking:
    """Every offered (region, instance type) pair priced for ``job``, best first, with the reason.

    ``regions`` defaults to every region in the price book. Unknown names raise ConfigError with
    the closest valid ones.
    """
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
    if job.gpu_hours < 0 or job.gpus < 1:
        raise ConfigError("job", job, "gpu_hours >= 0 and gpus >= 1", "fix --gpu-hours / --gpus")
    quotes = sorted(
        (quote(p, job, book) for p in book.quotes if p.region in candidates and p.instance_type in instance_types),
        key=_rank_key,
    )
    if not quotes:
        raise ConfigError(
            "instance types",
            list(instance_types),
            f"offered in one of {candidates}",
            "add a region or an instance type that config/prices.toml prices there",
        )
    return Ranking(
        tuple(quotes),
        explain(quotes[0], rival(quotes, job.home), job.home),
        book.describe(today or datetime.now(UTC).date()),
    )


def format_ranking(ranking: Ranking) -> str:
    """The ranking as an aligned text table, then the explanation and the price source."""
    table = ranking.table()
    cells = [table.header, *[[str(c) for c in row] for row in table.rows]]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(table.header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([*lines, "", ranking.explanation, ranking.prices])
