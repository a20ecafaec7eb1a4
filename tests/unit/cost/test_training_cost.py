"""TrainFlow's card prices GPU time only, and says so."""

from __future__ import annotations

from steps.cost.prices import parse_snapshot, read_snapshot
from steps.training.report import cost_table


def test_gpu_training_is_priced_and_cpu_training_is_not() -> None:
    book = parse_snapshot(read_snapshot())
    gpu = dict(cost_table({"seconds": 3600.0, "images": 100, "epochs": 36, "device": "cuda:0"}, book).rows)
    assert gpu["throughput (images/s, all epochs)"] == "1"
    assert gpu["GPU-hours (h)"] == "1" and gpu["cost ($)"] == "$0.19"  # cheapest 1-GPU spot: g4dn.xlarge us-east-2
    assert gpu["cost basis"] == "1 GPU-hours × $0.19/h spot g4dn.xlarge in us-east-2"
    cpu = dict(cost_table({"seconds": 60.0, "images": 10, "epochs": 2, "device": "cpu"}, book).rows)
    assert (cpu["GPU-hours (h)"], cpu["cost ($)"]) == ("0", "–")
