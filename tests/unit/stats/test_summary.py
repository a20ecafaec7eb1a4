"""RunSummary: shards add up to a run, runs to a dispatch; the artifact round-trips; one headline;
a flow's own figures (InferFlow's ``InferenceStats``) ride along without the generic part knowing them."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pytest

from steps.cost.billing import BillingRate
from steps.inference.summary import InferenceStats
from steps.output.ledger import ShardOutcome
from steps.stats.report import totals_table
from steps.stats.summary import FlowStats, RunSummary, ShardStats, shard_stats


def stats(
    name: str, images: int, rejected: int, seconds: float, skipped: bool = False, *, attempts: tuple[float, ...] = ()
) -> ShardStats:
    return ShardStats(
        name, images, images - rejected, rejected, skipped, seconds, chunks=2, reused_chunks=1, attempt_seconds=attempts
    )


def inferred(shard: ShardStats, device: str, model_seconds: float, labelled: int, correct: int) -> RunSummary:
    """An InferFlow shard's summary, as its join builds it."""
    return RunSummary.of_shard(shard, InferenceStats.of_shard(shard, device, model_seconds, labelled, correct))


def rate(spot: float, seconds_per_image: float = 1.0, tasks_per_instance: int = 1) -> BillingRate:
    return BillingRate("us-east-1", "c7i.xlarge", "no GPU, 4 vCPU", spot, tasks_per_instance, seconds_per_image, "test")


def test_shards_add_up_and_skipped_shards_do_not_count_as_work() -> None:
    total = sum(
        [
            inferred(stats("0", 10, 1, 4.0), "cuda:0", 1.5, labelled=9, correct=6),
            inferred(stats("1", 20, 2, 6.0), "cpu", 2.5, labelled=18, correct=18),
            RunSummary.of_shard(stats("2", 30, 0, 9.0, skipped=True)),
        ],
        RunSummary(),
    )
    assert (total.images, total.images_this_run, total.processed, total.rejected) == (60, 30, 57, 3)
    assert (total.shards, total.skipped_shards, total.reused_chunks) == (3, 1, 3)
    # Every task bills, the skipped shard's too (its check took its attempt's seconds).
    assert (total.task_seconds, total.flow_stats.gpu_seconds, total.flow_stats.model_seconds) == (19.0, 4.0, 4.0)
    assert (total.attempts, total.retried_attempts, total.images_worked) == (3, 0, 30)
    assert total.flow_stats.devices == ("cpu", "cuda:0")
    assert total.flow_stats.accuracy == pytest.approx(24 / 27)
    assert total.seconds == 6.0  # parts ran side by side: the longest, not the sum


def test_on_cloud_every_attempt_is_billed_killed_ones_included() -> None:
    # Shard 0: a killed attempt of 1,800 s, then 3,600 s; shard 1: one 1,800 s attempt: 2 task-hours.
    # $0.20/h for an instance that runs 2 tasks = $0.10 per task-hour: $0.20.
    run = sum(
        [
            RunSummary.of_shard(stats("0", 3600, 0, 3600.0, attempts=(1800.0, 3600.0))),
            RunSummary.of_shard(stats("1", 3600, 0, 1800.0, attempts=(1800.0,))),
        ],
        RunSummary(),
    )
    billed = replace(run, seconds=100.0).billed(rate(0.2, tasks_per_instance=2), on_cloud=True)
    assert (billed.attempts, billed.retried_attempts, billed.task_hours) == (3, 1, 2.0)
    assert billed.estimated_usd == pytest.approx(0.2)
    assert billed.usd_per_million_images == pytest.approx(0.2 / 7200 * 1e6)
    assert billed.cost_basis == (
        "no GPU, 4 vCPU a task on spot c7i.xlarge in us-east-1, 2 tasks an instance @ $0.1/h per task "
        "× 2 task-hours billed (3 attempts incl. 1 retried)"
    )
    assert billed.images_per_second == pytest.approx(72.0)
    assert RunSummary().usd_per_million_images is None


def test_locally_the_calibrated_rate_prices_the_work_and_the_chunk_a_kill_lost() -> None:
    # 2,400 images in 2 chunks: the killed attempt committed one (1,200 images) and lost the second in
    # flight; the retry reused the first and processed the second. At a calibrated 1 s each:
    # 2,400 + 1,200 redone = 1 task-hour, at $0.08/h = $0.08; per million images: $0.08 / 2,400.
    killed = replace(stats("0", 2400, 0, 60.0, attempts=(30.0, 60.0)), reused_images=1200, chunk_size=1200)
    billed = RunSummary.of_shard(killed).billed(rate(0.08), on_cloud=False)
    assert (billed.images_worked, billed.images_redone) == (2400, 1200)
    assert billed.task_hours == pytest.approx(1.0)
    assert billed.estimated_usd == pytest.approx(0.08)
    assert billed.usd_per_million_images == pytest.approx(0.08 / 2400 * 1e6)
    assert billed.cost_basis.startswith("local run, priced as the same work on no GPU, 4 vCPU a task on spot ")
    assert (
        "(2400 images + 1200 images redone after killed attempts (at most the chunk each had in flight)) "
        "× 1e+03 ms/image (test)" in billed.cost_basis
    )
    assert billed.cost_basis.endswith("= 1 task-hours (2 attempts incl. 1 retried); laptop seconds are not billed")
    clean = RunSummary.of_shard(stats("0", 3600, 0, 60.0, attempts=(60.0,))).billed(rate(0.08), on_cloud=False)
    assert clean.estimated_usd == pytest.approx(0.08)
    assert "redone" not in clean.cost_basis


def test_reused_images_are_neither_throughput_nor_billed_work() -> None:
    resumed = replace(stats("0", 100, 0, 10.0, attempts=(10.0,)), reused_images=60)
    run = replace(RunSummary.of_shard(resumed), seconds=10.0)
    assert (run.images_worked, run.images_per_second) == (40, 4.0)
    assert run.billed(rate(3.6), on_cloud=False).estimated_usd == pytest.approx(0.04)


def test_artifact_is_plain_data_and_round_trips() -> None:
    run = inferred(stats("0", 10, 1, 4.0), "cuda:0", 1.0, 9, 9) + RunSummary.of_shard(stats("1", 5, 0, 2.0))
    run = run.billed(rate(0.5, seconds_per_image=0.0001), on_cloud=False)
    plain = run.to_artifact()
    assert plain["devices"] == "cuda:0" and plain["instance_types"] == "c7i.xlarge"
    assert plain["accuracy"] == 1.0 and plain["images_per_second"] == pytest.approx(run.images_per_second, 1e-5)
    assert all(isinstance(v, str | int | float | type(None)) for v in plain.values())
    assert plain["estimated_usd"] == pytest.approx(run.estimated_usd, rel=1e-5) and plain["estimated_usd"] > 0
    assert RunSummary.from_artifact(plain, InferenceStats) == replace(
        run, estimated_usd=plain["estimated_usd"], task_hours=plain["task_hours"], seconds=4.0
    )


def test_headline_names_the_verb_counts_accuracy_and_skips() -> None:
    run = inferred(stats("0", 10, 1, 4.0), "cpu", 1.0, 9, 3) + RunSummary.of_shard(stats("1", 5, 0, 2.0, skipped=True))
    line = run.headline("Predicted", "/out")
    assert line.startswith("Predicted 15 images in 4.0 s")
    assert "14 ok, 1 rejected, accuracy 33.3% on 9 labelled images, 2 shards" in line
    assert "1 of 2 shards were already complete and skipped" in line and line.endswith("Output: /out")
    assert "accuracy" not in RunSummary.of_shard(stats("0", 4, 0, 1.0)).headline("Preprocessed", "/o")


def test_a_shard_completed_by_a_killed_attempt_is_this_runs_work() -> None:
    manifest = pa.table({"key": ["a", "b"], "status": ["ok", "ok"], "reason": ["", ""]})
    complete = ShardOutcome("0", manifest, 0, 0, 0.0, skipped=True)
    assert shard_stats(complete, (0.1,)).skipped  # one attempt: complete before this run
    retried = shard_stats(complete, (30.0, 0.1))  # the killed attempt wrote the manifest
    assert not retried.skipped and retried.worked_images == 2


def test_a_flow_without_its_own_figures_has_only_the_generic_ones() -> None:
    run = RunSummary.of_shard(stats("0", 10, 1, 4.0)) + RunSummary.of_shard(stats("1", 5, 0, 2.0))
    assert run.flow_stats == FlowStats()
    plain = run.to_artifact()
    assert not {"devices", "model_seconds", "labelled", "accuracy", "flow_stats"} & set(plain)
    assert RunSummary.from_artifact(plain) == replace(run, seconds=4.0)
    assert "model busy" not in run.headline("Preprocessed", "/o")
    items = [row[0] for row in totals_table(run).rows]
    assert "images" in items and "cost basis" in items and "devices" not in items


def test_the_flows_figures_reach_the_report_through_its_extension() -> None:
    run = inferred(stats("0", 10, 1, 4.0), "cuda:0", 1.5, 9, 6)
    rows = {row[0]: row[1] for row in totals_table(run).rows}
    assert rows["devices"] == "cuda:0" and rows["accuracy (labelled images)"] == "66.7% (9)"
    assert "; model busy 1.5 s on cuda:0, 4.0 GPU-seconds)" in run.headline("Predicted", "/o")
    # A run without the extension adds to one with it: a dispatch of InferFlow rows keeps the model's figures.
    assert (RunSummary() + run).flow_stats == run.flow_stats == (run + RunSummary()).flow_stats
