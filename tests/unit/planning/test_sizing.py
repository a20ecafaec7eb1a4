"""Shards sized by task minutes: the target comes from the flow's calibrated per-image cost, the
reason says both numbers, and a fan-out limit that would make tasks far too long is refused with
the exact settings to pass."""

import hashlib

import pytest

from steps.cost.throughput import ImageCost, image_cost, images_for, read_throughput, task_minutes
from steps.errors import ConfigError
from steps.planning.prefixes import PrefixCounts, cell_of, plan_layout
from steps.planning.sizing import Sizing

COST = ImageCost("preprocess", "4 vCPUs", 6.0, "test figure")  # 10,000 images = 1 minute


def counts_of(count: int) -> PrefixCounts:
    counts = PrefixCounts()
    for i in range(count):
        counts.add(cell_of(hashlib.sha256(str(i).encode()).hexdigest()))
    return counts


def test_the_shipped_figures_resolve_per_task() -> None:
    config = read_throughput()
    preprocess = image_cost(config, "preprocess", vcpus=4)
    assert preprocess.ms_per_image == config["preprocess"]["ms_per_image"] / 4 and preprocess.basis == "4 vCPUs"
    infer = image_cost(config, "infer")
    assert infer.basis == config["infer"]["instance_type"]
    assert image_cost(config, "infer", instance_type="g6.xlarge").ms_per_image == 1.0
    with pytest.raises(ConfigError, match=r"instance type 'p9\.huge'"):
        image_cost(config, "infer", instance_type="p9.huge")


def test_minutes_and_images_are_inverse() -> None:
    assert images_for(10, COST) == 100_000
    assert task_minutes(100_000, COST) == pytest.approx(10)


def test_target_comes_from_task_minutes_and_the_reason_says_both_numbers() -> None:
    sizing = Sizing(task_minutes=0.5, cost=COST)  # 5,000 images a shard
    counts = counts_of(40_000)
    layout = plan_layout(counts, sizing.target_images(), max_shards=100)
    assert sizing.target_images() == 5_000 and len(layout.ranges) == 8  # 8 ranges of ~5,000, not 16 of ~2,500
    sizing.check_fanout(layout, counts.total, 100)
    reason = sizing.explain(layout)
    assert "0.5 task minutes" in reason and "6 ms per image" in reason
    assert sizing.largest_minutes(layout) == pytest.approx(max(r.images for r in layout.ranges) * 6 / 60_000)


def test_a_fan_out_limit_that_makes_tasks_too_long_says_exactly_what_to_pass() -> None:
    sizing = Sizing(task_minutes=0.1, cost=COST)  # 1,000 images a shard: 40 shards wanted
    counts = counts_of(40_000)
    layout = plan_layout(counts, sizing.target_images(), max_shards=10)  # 4,000 a shard: 0.4 minutes
    with pytest.raises(ConfigError) as refused:
        sizing.check_fanout(layout, counts.total, 10)
    message = str(refused.value)
    assert "--max-shards 10: expected enough shards for ~0.1-minute tasks" in message
    assert "pass --max-shards 40 and Metaflow's `run --max-num-splits 40`" in message
    assert "METAFLOW_RUN_MAX_NUM_SPLITS=40" in message


def test_an_explicit_shard_size_is_kept_and_never_refused() -> None:
    sizing = Sizing(shard_size=1_000, cost=COST)
    counts = counts_of(40_000)
    layout = plan_layout(counts, sizing.target_images(), max_shards=4)
    sizing.check_fanout(layout, counts.total, 4)
    assert "--shard-size 1000" in sizing.explain(layout)


@pytest.mark.parametrize(
    ("sizing", "message"), [(Sizing(), "--shard-size 0"), (Sizing(task_minutes=0, cost=COST), "--task-minutes 0")]
)
def test_bad_sizing_is_a_config_error(sizing: Sizing, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sizing.target_images()


def test_at_10_8_images_the_default_sizing_gives_minutes_long_tasks_once_the_limits_are_raised() -> None:
    """The issue's 10^8 target, from counts alone (uniform sha256 prefixes, no keys listed)."""
    counts = PrefixCounts()
    for cell in range(16**4):
        counts.cells[cell] = 10**8 // 16**4
    counts.total = sum(counts.cells)
    sizing = Sizing(task_minutes=10, cost=image_cost(read_throughput(), "preprocess", vcpus=4))
    refused = plan_layout(counts, sizing.target_images(), max_shards=100)
    with pytest.raises(ConfigError, match=r"pass --max-shards (\d+)") as error:
        sizing.check_fanout(refused, counts.total, 100)
    needed = int(error.value.args[0].split("pass --max-shards ")[1].split()[0])
    layout = plan_layout(counts, sizing.target_images(), max_shards=needed)
    sizing.check_fanout(layout, counts.total, needed)
    assert 3 <= sizing.largest_minutes(layout) <= 30
