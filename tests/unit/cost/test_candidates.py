"""Candidates follow a step's resources: CPU steps on CPU instance types, GPU steps on GPU types,
on the shipped config (prices.toml, regions.toml, throughput.toml, the flows' [resources])."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from steps.cli import main
from steps.config_files import CONFIG_DIR
from steps.cost.model import Job, rank
from steps.cost.placement import RegionChoice, choose_region
from steps.cost.prices import InstanceShape, parse_snapshot, read_snapshot
from steps.cost.resources import StepResources
from steps.errors import ConfigError


def config(name: str) -> dict:
    return tomllib.loads((CONFIG_DIR / name).read_text())


def shipped_choice(flow: str, tmp_path: Path, images: int = 100_000, tasks: int = 8) -> RegionChoice:
    return choose_region(
        {str(tmp_path): 10**9},
        images,
        resources=StepResources.from_config(config(f"{flow}.toml")["resources"]),
        tasks=tasks,
        flow=flow,
        throughput=config("throughput.toml"),
        regions_config=config("regions.toml"),
        prices=parse_snapshot(read_snapshot()),
    )


def gpus(instance_type: str) -> int:
    return next(q.gpus for q in parse_snapshot(read_snapshot()).quotes if q.instance_type == instance_type)


def test_a_cpu_step_is_never_ranked_on_a_gpu_type(tmp_path: Path) -> None:
    choice = shipped_choice("preprocess", tmp_path)
    ranked = {q.instance_type for q in choice.ranking.quotes}
    assert ranked and all(gpus(t) == 0 for t in ranked)
    assert {"c6i.xlarge", "c7i.xlarge", "c7a.xlarge", "m7i.xlarge", "c7g.xlarge"} <= ranked
    assert gpus(choice.instance_type) == 0 and choice.batch_queue.startswith("spot-batch-cpu-")
    assert "A task asks for no GPU, 4 vCPU, 8000 MB" in choice.report().headline


def test_a_gpu_step_is_never_ranked_on_a_cpu_type(tmp_path: Path) -> None:
    choice = shipped_choice("infer", tmp_path)
    ranked = {q.instance_type for q in choice.ranking.quotes}
    assert ranked == {"g4dn.xlarge", "g5.xlarge", "g6.xlarge"}
    assert choice.batch_queue.startswith("spot-batch-gpu-")


def test_explicit_type_of_the_wrong_kind_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    book = parse_snapshot(read_snapshot())
    with pytest.raises(ConfigError, match=r"^instance type 'g4dn.xlarge \(1 GPU, 4 vCPU, 16 GiB\)': expected one "):
        rank(book, Job({}, {"g4dn.xlarge": 1.0}, StepResources(cpu=4)))
    with pytest.raises(ConfigError, match=r"holds a task of 1 GPU, 4 vCPU"):
        rank(book, Job({}, {"c7i.xlarge": 1.0}, StepResources(cpu=4, gpu=1)))
    args = ["regions", "rank", "--instance-types", "c7i.xlarge", "--task-hours", "1", "--snapshot-only"]
    assert main(args) == 2  # --gpu defaults to 1: a CPU type cannot hold the task
    assert main([*args, "--gpu", "0", "--images", "1000000"]) == 0
    assert "expected $/M images" in capsys.readouterr().out


def test_instances_hold_as_many_tasks_as_fit_and_the_job_has() -> None:
    step = StepResources(cpu=4, memory_mb=8000)
    assert step.tasks_per_instance(InstanceShape(16, 32)) == 4
    assert step.tasks_per_instance(InstanceShape(16, 16)) == 2  # memory bound
    assert step.tasks_per_instance(InstanceShape(2, 8)) == 0
    assert step.tasks_per_instance(InstanceShape(4, 16, gpus=1)) == 0
    book = parse_snapshot(read_snapshot())
    # One task: a 4xlarge would bill 16 vCPUs for 4 used; 8 tasks: four per 4xlarge, same $ as xlarge.
    for tasks, ratio in ((1, 4.0), (8, 1.0)):
        job = Job({}, {"c7i.xlarge": 2.0, "c7i.4xlarge": 2.0}, step, tasks=tasks)
        by_type = {q.instance_type: q for q in rank(book, job, regions=["us-east-1"]).quotes}
        assert by_type["c7i.4xlarge"].compute_cost / by_type["c7i.xlarge"].compute_cost == pytest.approx(ratio, 1e-3)


def test_region_card_tells_every_row_apart_in_dollars_per_million(tmp_path: Path) -> None:
    # 2,000 images cost fractions of a cent: the card's columns get the decimals to show the ranking.
    choice = shipped_choice("preprocess", tmp_path, images=2000, tasks=2)
    table = choice.report().sections[0]
    assert table.header[:6] == ["#", "region", "instance", "spot $/h", "task-hours", "expected $/M images"]
    expected = [row[5] for row in table.rows]
    totals = [q.total_cost for q in choice.ranking.quotes[: len(expected)]]
    pairs = zip(expected, expected[1:], totals, totals[1:], strict=False)
    assert all(float(a) < float(b) for a, b, x, y in pairs if x < y * 0.999)  # a cheaper row reads cheaper
    assert float(expected[0]) > 0
    assert len(table.rows) <= 12 and "(best 12 of" in table.title
