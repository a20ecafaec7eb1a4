"""Choose where a GPU job runs: price every region x instance type, including moving the data.

    python -m steps.regions rank --instance-types g4dn.xlarge,g5.xlarge --data-region eu-west-1 \\
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

import argparse
import difflib
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime

from steps.errors import ConfigError
from steps.prices import PriceBook, PriceQuote, load_prices, read_snapshot
from steps.report import Report, Table
from steps.storage import is_s3, open_storage, s3_client

GB = 1e9
_CENT = 0.005  # differences below half a cent are not worth a word in the explanation


def check_names(what: str, names: Iterable[str], valid: Iterable[str], expected: str, flag: str) -> None:
    """Raise ConfigError for the first unknown name, suggesting the closest valid ones."""
    known = sorted(set(valid))
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}?" if close else f"choose from {', '.join(known)}"
            raise ConfigError(what, name, expected, f"{hint} (fix {flag})")


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


# ---- I/O edges: what a flow's select_region step calls ----


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


def input_sizes(uris: Iterable[str]) -> dict[str, int]:
    """Total bytes under each input location (one listing each)."""
    return {uri: sum(o.size for o in open_storage(uri).list()) for uri in uris}


def batch_settings(region: str, regions_config: Mapping) -> tuple[dict[str, str], list[str]]:
    """Environment and ``--with`` specs that put a Metaflow run on ``region``'s Batch queue.

    Metaflow fixes the compute layer when a run starts, so a choice made inside a run applies to
    the runs it launches (flows/dispatch.py) or to the next run the user starts with these.
    """
    queue = regions_config["regions"].get(region, {}).get("batch_queue")
    if not queue:
        raise ConfigError(
            "region",
            region,
            "a region with a batch_queue in config/regions.toml",
            f'add [regions.{region}] batch_queue = "..." there',
        )
    return {"AWS_DEFAULT_REGION": region}, [f"batch:queue={queue}"]


@dataclass(frozen=True)
class RegionChoice:
    """Where a run goes, why, and what the compute layer needs to get it there."""

    region: str
    instance_type: str
    batch_queue: str
    staging_bucket: str
    kubernetes_context: str | None
    gpu_hours: float
    data_gb: dict[str, float]
    ranking: Ranking

    @property
    def explanation(self) -> str:
        return self.ranking.explanation

    @property
    def region_table(self) -> list[dict]:
        """The ``region_table`` artifact: the ranked rows, best first."""
        return self.ranking.rows()

    def report(self) -> Report:
        data = ", ".join(f"{gb:g} GB in {r}" for r, gb in sorted(self.data_gb.items())) or "no input data"
        return Report(
            "Region choice",
            f"{self.explanation}\n\n{self.gpu_hours:.2f} GPU-hours estimated; {data}. {self.ranking.prices}. "
            f"To run there: `AWS_DEFAULT_REGION={self.region} python flows/<flow>.py run "
            f"--with batch:queue={self.batch_queue} ...`",
            [self.ranking.table()],
        )


def choose_region(
    inputs: Mapping[str, int], images: int, *, regions_config: Mapping, prices: PriceBook
) -> RegionChoice:
    """Pick the region and instance type for a run, among the regions in ``regions_config``.

    ``inputs``: each input URI → its total bytes (``input_sizes`` measures them). ``images``: how
    many images the run processes; GPU-hours = images x ``[estimate] seconds_per_image`` / 3600.
    ``regions_config``: parsed config/regions.toml (a dict or a Metaflow ``Config``); candidate
    instance types, parallel GPUs and checkpoint interval come from its ``[estimate]`` table.
    ``prices``: a ``PriceBook`` from ``steps.prices.load_prices``.
    """
    estimate = regions_config["estimate"]
    data_gb: dict[str, float] = {}
    for uri, size in inputs.items():
        region = data_region(uri, regions_config)
        data_gb[region] = data_gb.get(region, 0.0) + size / GB
    job = Job(
        data_gb,
        images * float(estimate["seconds_per_image"]) / 3600,
        int(estimate["gpus"]),
        float(estimate["checkpoint_minutes"]),
    )
    ranking = rank(prices, job, list(estimate["instance_types"]), list(regions_config["regions"]))
    best = ranking.best
    target = regions_config["regions"][best.region]
    return RegionChoice(
        region=best.region,
        instance_type=best.instance_type,
        batch_queue=str(target["batch_queue"]),
        staging_bucket=str(target["staging_bucket"]),
        kubernetes_context=target.get("kubernetes_context"),
        gpu_hours=job.gpu_hours,
        data_gb=data_gb,
        ranking=ranking,
    )


# ---- CLI ----


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def format_ranking(ranking: Ranking) -> str:
    table = ranking.table()
    cells = [table.header, *[[str(c) for c in row] for row in table.rows]]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(table.header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([*lines, "", ranking.explanation, ranking.prices])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m steps.regions", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("rank", help="rank regions x instance types by expected cost")
    cmd.add_argument("--instance-types", type=_csv, required=True, help="comma-separated, e.g. g4dn.xlarge,g5.xlarge")
    cmd.add_argument("--data-region", type=_csv, default=[], help="region(s) holding the input, comma-separated")
    cmd.add_argument(
        "--data-gb",
        type=lambda s: [float(x) for x in _csv(s)],
        default=[],
        help="GB of input in each --data-region, same order",
    )
    cmd.add_argument("--gpu-hours", type=float, required=True, help="estimated total GPU-hours")
    cmd.add_argument("--gpus", type=int, default=1, help="GPUs working in parallel (default 1)")
    cmd.add_argument("--checkpoint-minutes", type=float, default=10.0, help="work lost per interruption (default 10)")
    cmd.add_argument("--regions", type=_csv, default=None, help="candidate regions (default: all priced)")
    cmd.add_argument("--snapshot-only", action="store_true", help="skip live EC2 prices, use config/prices.toml")
    cmd.add_argument("--endpoint-url", default=None, help="EC2 endpoint for live prices (e.g. a local fake)")
    cmd.add_argument("--json", action="store_true", help="print the ranked rows as JSON (explanation on stderr)")
    args = parser.parse_args(argv)
    if len(args.data_region) != len(args.data_gb):
        parser.error(
            f"--data-gb {args.data_gb}: expected one value per --data-region {args.data_region}; "
            "pass them in the same order"
        )
    try:
        book = load_prices(read_snapshot(), live=not args.snapshot_only, endpoint_url=args.endpoint_url)
        job = Job(
            dict(zip(args.data_region, args.data_gb, strict=True)), args.gpu_hours, args.gpus, args.checkpoint_minutes
        )
        ranking = rank(book, job, args.instance_types, args.regions)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    if args.json:
        print(json.dumps(ranking.rows(), indent=2))
        print(f"{ranking.explanation}\n{ranking.prices}", file=sys.stderr)
    else:
        print(format_ranking(ranking))


if __name__ == "__main__":
    main()
