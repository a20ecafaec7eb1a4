"""Where a manifest row without a region runs: its work from its size and parameters, then the
selector's choice, runner-up and reason (hand-made price book: every number worked out by hand)."""

from __future__ import annotations

from pathlib import Path

from steps.cost.throughput import read_throughput
from steps.dispatch.placing import (
    DATA,
    NAMED,
    SELECTED,
    InputSize,
    RowPlace,
    RowWork,
    Selector,
    flow_defaults,
    measure_input,
    place_row,
    row_work,
    select_row_region,
)
from steps.dispatch.results import SUCCEEDED, RowResult, build_report
from tests.unit.cost.test_regions import GPU_STEP, REGIONS_CONFIG, THROUGHPUT, US_EU

# infer on g4dn.xlarge: 3.6 s per image, so 10,000 images = 10 task-hours in one task.
SELECTOR = Selector("infer", {}, GPU_STEP, THROUGHPUT, REGIONS_CONFIG, US_EU)


def test_a_sharded_rows_tasks_follow_the_flows_sizing_and_the_rows_parameters() -> None:
    # preprocess: 25 ms per vCPU / 4 vCPUs = 6.25 ms an image: 96,000 images in a 10-minute shard.
    defaults, throughput = flow_defaults("preprocess"), read_throughput()
    assert row_work("preprocess", 1_000_000, defaults, {}, throughput) == RowWork(1_000_000, 11)
    assert row_work("preprocess", 1_000_000, defaults, {"max_shards": 5}, throughput) == RowWork(1_000_000, 5)
    assert row_work("preprocess", 1_000_000, defaults, {"shard_size": 400_000}, throughput) == RowWork(1_000_000, 3)
    assert row_work("preprocess", 10, defaults, {}, throughput) == RowWork(10, 1)


def test_a_training_rows_work_is_every_image_once_per_epoch_in_one_task() -> None:
    defaults = flow_defaults("train")
    assert row_work("train", 1000, defaults, {}, read_throughput()) == RowWork(1000 * defaults["epochs"], 1)
    assert row_work("train", 1000, defaults, {"epochs": 3}, read_throughput()) == RowWork(3000, 1)


def test_a_compute_heavy_row_leaves_its_data_for_the_cheaper_region(tmp_path: Path) -> None:
    # Data: 1 GB in eu-west-1 (a local path: local_region). 10 task-hours, one task of 10 h, so a
    # reclaim redoes 10 min: rework = compute x 5% x 1/60.
    # us-east-2: $2.00 compute + $0.02 egress + $0.00167 rework = $2.0217.
    # eu-west-1: $3.00 compute + $0.0025 rework = $3.0025.
    place = select_row_region(str(tmp_path), InputSize(100, 10**9), RowWork(10_000, 1), SELECTOR)
    assert (place.region, place.decided_by, place.data_region, place.instance_type) == (
        "us-east-2",
        SELECTED,
        "eu-west-1",
        "g4dn.xlarge",
    )
    assert round(place.expected_usd, 6) == 2.021667
    assert place.runner_up == "eu-west-1 g4dn.xlarge, $3.00 expected"
    assert place.reason.startswith("us-east-2 g4dn.xlarge: $2.02 ")
    assert "$0.98 " in place.reason and "less than eu-west-1 g4dn.xlarge where the data is" in place.reason
    assert "because its spot price is lower ($0.200/h vs $0.300/h), despite $0.02 to move 1 GB" in place.reason
    assert place.reason.endswith("Priced: 100 objects, 1 GB, 10000 images in 1 task.")


def test_a_data_heavy_row_stays_with_its_data(tmp_path: Path) -> None:
    # 500 GB in eu-west-1: moving it costs $10, more than the $1 of compute it would save.
    place = select_row_region(str(tmp_path), InputSize(100, 500 * 10**9), RowWork(10_000, 1), SELECTOR)
    assert (place.region, place.data_region) == ("eu-west-1", "eu-west-1")
    assert place.runner_up.startswith("us-east-2 g4dn.xlarge, $12.0")
    assert "where the data is" in place.reason and "avoids moving 500 GB across regions ($10.00)" in place.reason


def test_a_named_region_is_kept_without_listing_and_an_empty_input_stays_with_its_data(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    assert place_row(missing, "us-east-2", {}, SELECTOR) == RowPlace("us-east-2", NAMED)
    (tmp_path / "empty").mkdir()
    empty = place_row(str(tmp_path / "empty"), "", {}, SELECTOR)
    assert (empty.region, empty.decided_by, empty.instance_type) == ("eu-west-1", DATA, "")
    assert "holds no objects" in empty.reason


def test_a_rows_input_is_measured_and_priced(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"x" * 1000)
    (tmp_path / "labels.csv").write_text("key,label\n")  # metadata, not an input
    assert measure_input(str(tmp_path)) == InputSize(3, 3000)
    selector = Selector("infer", flow_defaults("infer"), GPU_STEP, THROUGHPUT, REGIONS_CONFIG, US_EU)
    place = place_row(str(tmp_path), "", {}, selector)
    assert place.decided_by == SELECTED and place.reason.endswith("Priced: 3 objects, 3e-06 GB, 3 images in 1 task.")


def test_the_dispatch_report_shows_each_rows_choice_runner_up_and_reason(tmp_path: Path) -> None:
    place = select_row_region(str(tmp_path), InputSize(100, 10**9), RowWork(10_000, 1), SELECTOR)
    rows = [
        RowResult(1, place.region, "s3://b-eu/raw", "s3://b-eu/out", SUCCEEDED, place=place.to_plain()),
        RowResult(
            2, "us-east-1", "s3://b-us/raw", "s3://b-us/out", SUCCEEDED, place=RowPlace("us-east-1", NAMED).to_plain()
        ),
    ]
    (_, where) = build_report("InferFlow", rows, None).sections
    assert where.title == "Where each row ran"
    assert where.rows == [
        [1, "s3://b-eu/raw", "eu-west-1", "us-east-2 g4dn.xlarge", SELECTED, "$2.02", place.runner_up, place.reason],
        [2, "s3://b-us/raw", "–", "us-east-1", NAMED, "", "–", "–"],
    ]
