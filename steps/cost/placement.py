"""The I/O edges of the cost model: where the data lives, how big it is, which queue serves a region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from steps.cost.model import GB, Job, Ranking, rank
from steps.cost.prices import PriceBook
from steps.errors import ConfigError
from steps.io.storage import is_s3, open_storage, s3_client
from steps.report import Report


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
    ``prices``: a ``PriceBook`` from ``steps.cost.prices.load_prices``.
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
        gpu_hours=job.gpu_hours,
        data_gb=data_gb,
        ranking=ranking,
    )
