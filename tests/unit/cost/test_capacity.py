"""Spot Placement Scores and price volatility fold into the ranking as a riskier band. moto does not
implement GetSpotPlacementScores and returns one constant price, so EC2 is stubbed (botocore Stubber)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber

from steps.cost.capacity import Capacity, live_capacity, measure_capacity, price_volatility
from steps.cost.model import Job, rank
from steps.cost.prices import InstanceShape, PriceBook, PriceQuote
from steps.cost.resources import StepResources

TODAY = date(2026, 11, 23)
SHAPE = InstanceShape(vcpus=4, memory_gib=8)
BOOK = PriceBook(
    quotes=(
        PriceQuote("us-east-1", "c7i.xlarge", SHAPE, 0.18, 0.07, "<5%"),
        PriceQuote("us-east-2", "c7i.xlarge", SHAPE, 0.18, 0.072, "<5%"),
    ),
    band_rates={"<5%": 0.05, "5-10%": 0.10, "10-15%": 0.15},
    cross_region_per_gb=0.02,
    snapshot_date=date(2026, 11, 1),
    bands_assumed=False,
)
JOB = Job({}, {"c7i.xlarge": 10.0}, StepResources(cpu=4), tasks=1, checkpoint_minutes=600)


def stubbed(region: str) -> tuple[object, Stubber]:
    client = boto3.client("ec2", region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def history(prices: list[float]) -> dict:
    when = datetime(2026, 11, 20, tzinfo=UTC)
    rows = [{"InstanceType": "c7i.xlarge", "SpotPrice": str(p), "Timestamp": when} for p in prices]
    return {"SpotPriceHistory": rows}


def test_scarce_capacity_and_volatile_prices_rank_riskier() -> None:
    clients = {r: stubbed(r) for r in ("us-east-1", "us-east-2")}
    _, stub1 = clients["us-east-1"]
    stub1.add_response(
        "get_spot_placement_scores",
        {"SpotPlacementScores": [{"Region": "us-east-1", "Score": 2}, {"Region": "us-east-2", "Score": 9}]},
        {
            "InstanceTypes": ["c7i.xlarge"],
            "TargetCapacity": 4,
            "SingleAvailabilityZone": False,
            "RegionNames": ["us-east-1", "us-east-2"],
        },
    )
    stub1.add_response(
        "describe_spot_price_history",
        history([0.07, 0.07]),
        {"InstanceTypes": ["c7i.xlarge"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY},
    )
    _, stub2 = clients["us-east-2"]
    stub2.add_response(
        "describe_spot_price_history",
        history([0.072, 0.072]),
        {"InstanceTypes": ["c7i.xlarge"], "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY},
    )
    with stub1, stub2:
        capacity = measure_capacity(lambda r: clients[r][0], ["us-east-1", "us-east-2"], ["c7i.xlarge"], 4)
    assert capacity.scores == {"us-east-1": 2, "us-east-2": 9}
    assert capacity.volatility == {("us-east-1", "c7i.xlarge"): 0.0, ("us-east-2", "c7i.xlarge"): 0.0}

    # Without capacity data us-east-1 wins on price; a score of 2/10 prices it one band riskier:
    # rework 0.70 x 0.10 = $0.07 vs us-east-2's 0.72 x 0.05 = $0.036, so us-east-2 wins.
    assert rank(BOOK, JOB, today=TODAY).best.region == "us-east-1"
    ranking = rank(BOOK, JOB, today=TODAY, capacity=capacity)
    assert ranking.best.region == "us-east-2"
    assert ranking.quotes[1].risk == "<5% → 5-10% (placement score 2/10)"
    assert "its interruption risk is lower" in ranking.explanation
    assert ranking.prices.endswith("counts one band riskier)")


def test_volatility_is_the_weeks_spread_and_shifts_a_band() -> None:
    client, stub = stubbed("us-east-1")
    stub.add_response("describe_spot_price_history", history([0.05, 0.15]), None)
    with stub:
        volatility = price_volatility(client, "us-east-1", ["c7i.xlarge"])
    assert volatility == {("us-east-1", "c7i.xlarge"): pytest.approx(0.5)}
    shifted = rank(BOOK, JOB, today=TODAY, capacity=Capacity(volatility=volatility)).quotes
    assert {q.region: q.risk for q in shifted}["us-east-1"] == "<5% → 5-10% (price volatility 50%)"


def test_without_live_prices_the_snapshot_bands_are_labelled() -> None:
    capacity = live_capacity(BOOK, ["c7i.xlarge"], 1)
    assert (capacity.scores, capacity.volatility) == ({}, {})
    assert capacity.note.startswith("capacity: snapshot interruption bands only")
    assert rank(BOOK, JOB, today=TODAY).prices.endswith("capacity: snapshot interruption bands only")
