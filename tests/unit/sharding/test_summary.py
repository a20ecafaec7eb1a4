"""RunSummary: shards add up to a run, runs to a dispatch; the artifact round-trips; one headline."""

from __future__ import annotations

from dataclasses import replace

import pytest

from steps.sharding.summary import RunSummary, ShardStats


def stats(name: str, images: int, rejected: int, seconds: float, skipped: bool = False) -> ShardStats:
    return ShardStats(name, images, images - rejected, rejected, skipped, seconds, chunks=2, reused_chunks=1)


def test_shards_add_up_and_skipped_shards_do_not_count_as_work() -> None:
    total = sum(
        [
            RunSummary.of_shard(stats("0", 10, 1, 4.0), "cuda:0", 1.5, labelled=9, correct=6),
            RunSummary.of_shard(stats("1", 20, 2, 6.0), "cpu", 2.5, labelled=18, correct=18),
            RunSummary.of_shard(stats("2", 30, 0, 9.0, skipped=True)),
        ],
        RunSummary(),
    )
    assert (total.images, total.images_this_run, total.processed, total.rejected) == (60, 30, 57, 3)
    assert (total.shards, total.skipped_shards, total.reused_chunks) == (3, 1, 3)
    assert (total.task_seconds, total.gpu_seconds, total.model_seconds) == (10.0, 4.0, 4.0)
    assert total.devices == ("cpu", "cuda:0")
    assert total.accuracy == pytest.approx(24 / 27)
    assert total.seconds == 6.0  # parts ran side by side: the longest, not the sum


def test_priced_gives_dollars_per_million_images_of_this_runs_work() -> None:
    run = replace(RunSummary.of_shard(stats("0", 3600, 0, 3600.0)), seconds=100.0).priced("g4dn.xlarge", 0.2)
    assert run.estimated_usd == pytest.approx(0.2)
    assert run.usd_per_million_images == pytest.approx(0.2 / 3600 * 1e6)
    assert run.images_per_second == pytest.approx(36.0)
    assert RunSummary().usd_per_million_images is None


def test_artifact_is_plain_data_and_round_trips() -> None:
    run = RunSummary.of_shard(stats("0", 10, 1, 4.0), "cuda:0", 1.0, 9, 9) + RunSummary.of_shard(stats("1", 5, 0, 2.0))
    run = run.priced("g5.xlarge", 0.5)
    plain = run.to_artifact()
    assert plain["devices"] == "cuda:0" and plain["instance_types"] == "g5.xlarge"
    assert plain["accuracy"] == 1.0 and plain["images_per_second"] == round(run.images_per_second, 4)
    assert all(isinstance(v, str | int | float | type(None)) for v in plain.values())
    assert RunSummary.from_artifact(plain) == replace(run, estimated_usd=round(run.estimated_usd, 4), seconds=4.0)


def test_headline_names_the_verb_counts_accuracy_and_skips() -> None:
    run = RunSummary.of_shard(stats("0", 10, 1, 4.0), "cpu", 1.0, 9, 3) + RunSummary.of_shard(
        stats("1", 5, 0, 2.0, skipped=True)
    )
    line = run.headline("Predicted", "/out")
    assert line.startswith("Predicted 15 images in 4.0 s")
    assert "14 ok, 1 rejected, accuracy 33.3% on 9 labelled images, 2 shards" in line
    assert "1 of 2 shards were already complete and skipped" in line and line.endswith("Output: /out")
    assert "accuracy" not in RunSummary.of_shard(stats("0", 4, 0, 1.0)).headline("Preprocessed", "/o")
