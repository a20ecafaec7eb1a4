"""Spot capacity and price stability, when AWS answers: Spot Placement Scores and price history.

``GetSpotPlacementScores`` rates (1-10) how likely a spot request for the candidate types
succeeds in each region; AWS allows few distinct requests a day, so one request covers every
candidate type and region. ``DescribeSpotPriceHistory`` over the last week gives each
(region, type) its price volatility (population standard deviation / mean). Both fold into the
ranking as a risk band one step up from the snapshot's (``shifted_band``): a low score means
capacity is scarce, a volatile price means demand is. Without credentials, or when a call fails,
the ranking uses the snapshot's bands alone and says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from steps.cost.prices import PriceBook, ec2_client

LOW_SCORE = 3  # placement scores at or below this: capacity is scarce
VOLATILE = 0.25  # a week's price standard deviation above this share of its mean
HISTORY_DAYS = 7


@dataclass(frozen=True)
class Capacity:
    scores: Mapping[str, int] = field(default_factory=dict)  # region → placement score 1-10
    volatility: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (region, type) → sd / mean
    note: str = "capacity: snapshot interruption bands only"

    def shift(self, region: str, instance_type: str) -> tuple[int, str]:
        """Band steps to add for (region, type), and why ("" when none)."""
        reasons = []
        score = self.scores.get(region)
        if score is not None and score <= LOW_SCORE:
            reasons.append(f"placement score {score}/10")
        volatility = self.volatility.get((region, instance_type))
        if volatility is not None and volatility > VOLATILE:
            reasons.append(f"price volatility {volatility:.0%}")
        return len(reasons), ", ".join(reasons)


def shifted_band(band: str, steps: int, bands: Sequence[str]) -> str:
    """``band`` moved ``steps`` up the ordered ``bands``, capped at the last."""
    return bands[min(len(bands) - 1, bands.index(band) + steps)]


def placement_scores(
    ec2, regions: Sequence[str], instance_types: Sequence[str], target_capacity: int
) -> dict[str, int]:
    """Region-level Spot Placement Scores for ``target_capacity`` instances of any of the types."""
    response = ec2.get_spot_placement_scores(
        InstanceTypes=list(instance_types),
        TargetCapacity=max(1, target_capacity),
        SingleAvailabilityZone=False,
        RegionNames=list(regions),
    )
    return {item["Region"]: int(item["Score"]) for item in response["SpotPlacementScores"]}


def price_volatility(ec2, region: str, instance_types: Sequence[str], now: datetime | None = None) -> dict:
    """(region, type) → standard deviation / mean of the last week's spot prices there."""
    start = (now or datetime.now(UTC)) - timedelta(days=HISTORY_DAYS)
    prices: dict[str, list[float]] = {}
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=list(instance_types), ProductDescriptions=["Linux/UNIX"], StartTime=start
    )
    for page in pages:
        for item in page["SpotPriceHistory"]:
            prices.setdefault(item["InstanceType"], []).append(float(item["SpotPrice"]))
    return {
        (region, name): statistics.pstdev(values) / statistics.mean(values)
        for name, values in prices.items()
        if statistics.mean(values) > 0
    }


def measure_capacity(
    client_for: Callable[[str], object], regions: Sequence[str], instance_types: Sequence[str], target_capacity: int
) -> Capacity:
    """Scores and volatility from the EC2 API (``client_for(region)`` gives a client); botocore
    errors propagate so the caller can fall back to the snapshot."""
    scores = placement_scores(client_for(regions[0]), regions, instance_types, target_capacity)
    volatility: dict[tuple[str, str], float] = {}
    for region in regions:
        volatility.update(price_volatility(client_for(region), region, instance_types))
    return Capacity(
        scores,
        volatility,
        f"capacity: Spot Placement Scores and {HISTORY_DAYS}-day price volatility from EC2 "
        f"(score <= {LOW_SCORE} or volatility > {VOLATILE:.0%} counts one band riskier)",
    )


def live_capacity(
    book: PriceBook, instance_types: Sequence[str], target_capacity: int, endpoint_url: str | None = None
) -> Capacity:
    """``measure_capacity`` when the book's spot prices are live (credentials answered); else, or
    when EC2 fails, the snapshot's bands alone with the reason."""
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    if book.live_at is None:
        return Capacity(note=f"capacity: snapshot interruption bands only ({book.fallback_reason})")
    try:
        return measure_capacity(lambda r: ec2_client(r, endpoint_url), book.regions, instance_types, target_capacity)
    except (BotoCoreError, ClientError, ResponseParserError) as err:
        return Capacity(note=f"capacity: snapshot interruption bands only (lookup failed: {err})")
