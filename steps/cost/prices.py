"""Hourly instance prices (GPU and CPU types), egress rates and interruption bands: live spot prices when AWS answers,
otherwise the dated snapshot in ``config/prices.toml``.

Live: ``ec2.describe_spot_price_history`` per region (current price, Linux/UNIX), short timeouts
and one retry, all regions at once, so a machine without network falls back in seconds. The EC2
API has no on-demand prices and no interruption frequencies (those are the Pricing API and the
Spot Instance Advisor feed), so both always come from the snapshot. A live book is all-or-nothing:
if any region fails, the whole book is the snapshot, and ``PriceBook.describe`` says why.

The EC2 endpoint is ``endpoint_url``, else ``SPOT_BATCH_EC2_ENDPOINT_URL``, else boto3's own
``AWS_ENDPOINT_URL_EC2`` / ``AWS_ENDPOINT_URL``, else AWS.
"""

from __future__ import annotations

import os
import statistics
import tomllib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

from steps.config_files import CONFIG_DIR
from steps.spot import metadata_url

SNAPSHOT_PATH = CONFIG_DIR / "prices.toml"


ENDPOINT_ENV = "SPOT_BATCH_EC2_ENDPOINT_URL"


PRODUCT = "Linux/UNIX"


@dataclass(frozen=True)
class InstanceShape:
    """What one instance offers a task: the resources a step's ``@resources`` asks for."""

    vcpus: int
    memory_gib: float
    gpus: int = 0
    arch: str = "x86_64"

    def describe(self) -> str:
        gpus = f"{self.gpus} GPU, " if self.gpus else ""
        return f"{gpus}{self.vcpus} vCPU, {self.memory_gib:g} GiB"


@dataclass(frozen=True)
class PriceQuote:
    """What one instance type costs per hour in one region, and how often spot loses it."""

    region: str
    instance_type: str
    shape: InstanceShape
    on_demand: float
    spot: float
    band: str  # AWS interruption-frequency band, e.g. "5-10%"

    @property
    def gpus(self) -> int:
        return self.shape.gpus


@dataclass(frozen=True)
class PriceBook:
    quotes: tuple[PriceQuote, ...]
    band_rates: Mapping[str, float]  # band → interruption probability the cost model uses
    cross_region_per_gb: float
    snapshot_date: date
    bands_assumed: bool
    live_at: datetime | None = None  # set when spot prices came from the EC2 API
    fallback_reason: str = ""  # why a live lookup was not used

    @property
    def regions(self) -> list[str]:
        return sorted({q.region for q in self.quotes})

    @property
    def instance_types(self) -> list[str]:
        return sorted({q.instance_type for q in self.quotes})

    def describe(self, today: date) -> str:
        """One line for people: which source, how old, and why not live."""
        age = f"snapshot config/prices.toml dated {self.snapshot_date} ({(today - self.snapshot_date).days} days old)"
        bands = "; interruption bands are assumed" if self.bands_assumed else ""
        if self.live_at is not None:
            return (
                f"prices: live EC2 spot price history fetched {self.live_at:%Y-%m-%d %H:%M} UTC; "
                f"on-demand prices and interruption bands from the {age}{bands}"
            )
        why = f" ({self.fallback_reason})" if self.fallback_reason else ""
        return f"prices: {age}{why}{bands}"


def parse_snapshot(snapshot: Mapping) -> PriceBook:
    """A ``PriceBook`` from the parsed ``prices.toml`` (a dict, or a Metaflow ``Config`` value)."""
    quotes = tuple(
        PriceQuote(region, name, _shape(spec), float(p["on_demand"]), float(p["spot"]), str(p["band"]))
        for name, spec in snapshot["instances"].items()
        for region, p in spec["regions"].items()
    )
    return PriceBook(
        quotes=quotes,
        band_rates={band: float(rate) for band, rate in snapshot["risk"]["bands"].items()},
        cross_region_per_gb=float(snapshot["egress"]["cross_region_per_gb"]),
        snapshot_date=date.fromisoformat(str(snapshot["snapshot_date"])),
        bands_assumed=bool(snapshot["risk"]["bands_assumed"]),
    )


def _shape(spec: Mapping) -> InstanceShape:
    return InstanceShape(int(spec["vcpus"]), float(spec["memory_gib"]), int(spec.get("gpus", 0)), str(spec["arch"]))


def read_snapshot(path: Path = SNAPSHOT_PATH) -> dict:
    return tomllib.loads(path.read_text())


def aws_session():
    """A boto3 session that, off cloud compute, never asks the instance metadata service.

    botocore's default credential chain ends with the EC2 metadata address (169.254.169.254); on
    a laptop with no credentials that is a stray network probe. Only where a spot interruption
    watcher would run (AWS Batch, Kubernetes) is that provider kept.
    """
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    if metadata_url() is None:
        core.get_component("credential_provider").remove("iam-role")
    return boto3.session.Session(botocore_session=core)


def ec2_client(region: str, endpoint_url: str | None = None):
    """An EC2 client that gives up fast: price lookups must never stall a run."""
    from botocore.config import Config

    config = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 2, "mode": "standard"})
    endpoint = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    return aws_session().client("ec2", region_name=region, endpoint_url=endpoint, config=config)


def region_spot_prices(region: str, instance_types: Iterable[str], endpoint_url: str | None = None) -> dict[str, float]:
    """Current spot $/h per instance type in ``region``: the median over its availability zones.

    Median, not minimum: a Batch compute environment spans several zones and its allocation
    strategy weighs capacity, so it does not always land in the cheapest one.
    """
    response = ec2_client(region, endpoint_url).describe_spot_price_history(
        InstanceTypes=list(instance_types), ProductDescriptions=[PRODUCT], StartTime=datetime.now(UTC)
    )
    by_type: dict[str, list[float]] = {}
    for item in response["SpotPriceHistory"]:
        by_type.setdefault(item["InstanceType"], []).append(float(item["SpotPrice"]))
    return {name: statistics.median(prices) for name, prices in by_type.items()}


def with_live_spot(book: PriceBook, endpoint_url: str | None = None) -> PriceBook:
    """``book`` with spot prices from the EC2 API; raises botocore errors when a region fails.

    A quote the API has no price for is dropped: the type is not offered there right now.
    """
    types = book.instance_types
    with ThreadPoolExecutor(max_workers=len(book.regions), thread_name_prefix="spot-prices") as pool:
        live = dict(
            zip(book.regions, pool.map(lambda r: region_spot_prices(r, types, endpoint_url), book.regions), strict=True)
        )
    quotes = tuple(
        replace(q, spot=live[q.region][q.instance_type]) for q in book.quotes if q.instance_type in live[q.region]
    )
    return replace(book, quotes=quotes, live_at=datetime.now(UTC))


def load_prices(
    snapshot: Mapping,
    *,
    live: bool = True,
    endpoint_url: str | None = None,
    keep: Callable[[PriceQuote], bool] | None = None,
) -> PriceBook:
    """Live spot prices when ``live`` and AWS credentials exist and every region answers; else the snapshot.

    ``keep`` limits the book (and the live lookup) to the quotes a step can use, e.g. CPU types.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    book = parse_snapshot(snapshot)
    if keep is not None:
        book = replace(book, quotes=tuple(q for q in book.quotes if keep(q)))
    if not live:
        return replace(book, fallback_reason="live prices not requested")
    if aws_session().get_credentials() is None:
        return replace(book, fallback_reason="no AWS credentials for live prices")
    try:
        return with_live_spot(book, endpoint_url)
    except (BotoCoreError, ClientError) as err:
        return replace(book, fallback_reason=f"live lookup failed: {err}")
