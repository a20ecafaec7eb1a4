"""TrainFlow's card prices GPU time only, and says so; a gang of K nodes costs K On-Demand instances."""

from __future__ import annotations

from steps.cost.prices import parse_snapshot, read_snapshot
from steps.training.report import cost_table


def test_gpu_training_is_priced_and_cpu_training_is_not() -> None:
    book = parse_snapshot(read_snapshot())
    one = {"seconds": 3600.0, "images": 100, "epochs": 36, "device": "cuda:0", "world_size": 1}
    gpu = dict(cost_table(one, book).rows)
    assert gpu["throughput (images/s, all epochs)"] == "1"
    assert gpu["GPU-hours (h)"] == "1" and gpu["cost ($)"] == "$0.19"  # cheapest 1-GPU spot: g4dn.xlarge us-east-2
    assert gpu["cost basis"] == "1 GPU-hours × $0.19/h spot g4dn.xlarge in us-east-2"
    cpu = dict(cost_table({"seconds": 60.0, "images": 10, "epochs": 2, "device": "cpu", "world_size": 1}, book).rows)
    assert (cpu["GPU-hours (h)"], cpu["cost ($)"]) == ("0", "–")


def test_a_gang_is_priced_as_k_on_demand_instances_with_the_nodes_gpus() -> None:
    book = parse_snapshot(read_snapshot())
    # 2 nodes x 1 GPU: two g4dn.xlarge (the cheapest 1-GPU On-Demand type, $0.526/h) for half an hour.
    gang = {"seconds": 1800.0, "images": 1000, "epochs": 9, "device": "cuda", "world_size": 2, "nodes": 2}
    rows = dict(cost_table(gang, book).rows)
    assert rows["instances"] == 2 and rows["task-hours (h)"] == "1" and rows["GPU-hours (h)"] == "1"
    assert rows["cost ($)"] == "$0.53"
    assert rows["cost basis"].startswith("2 instances × 0.5 h × $0.526/h On-Demand g4dn.xlarge in ")
    assert rows["cost basis"].endswith("Batch runs a gang on On-Demand only")
    # 2 nodes x 4 GPUs with only 1-GPU types priced: 4 x the 1-GPU price per node, said so.
    rows = dict(cost_table({**gang, "world_size": 8}, book).rows)
    assert rows["GPU-hours (h)"] == "4" and rows["cost ($)"] == "$2.10"
    assert "× $2.104/h On-Demand 4 × g4dn.xlarge (no 4-GPU type priced)" in rows["cost basis"]
