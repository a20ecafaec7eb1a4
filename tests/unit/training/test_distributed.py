"""Two gloo ranks on the CPU: they learn, a killed rank fails the group at once, and the retry
resumes bit-identically; a deterministic error in the ranks is reported as not worth retrying."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from steps.errors import ConfigError, SpotInterruption
from steps.io.storage import open_storage
from steps.spot import is_transient
from steps.training.checkpoints import CheckpointStore, checkpoint_name
from steps.training.config import TrainConfig
from steps.training.data import Dataset, load_dataset
from steps.training.determinism import epoch_order, rank_batch
from steps.training.distributed import RankFailed, RankLost, fit_on_ranks, world_size_for
from steps.training.events import CheckpointWritten, EpochDone, Resumed, TrainingEvent, TrainingStarted
from tests.support.flows import spawned_children
from tests.unit.training.conftest import tiny_config


def test_each_rank_reads_its_own_slice_of_every_global_batch() -> None:
    order = epoch_order(7, 2, 41)
    for world in (1, 2, 3):
        for batch in range(2):
            parts = [rank_batch(order, batch, 16, world, rank) for rank in range(world)]
            assert torch.equal(torch.cat(parts), order[batch * 16 : (batch + 1) * 16])
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # A pure function of (seed, epoch, world size, rank): a retry reads the same images.
    assert torch.equal(rank_batch(epoch_order(7, 2, 41), 1, 16, 2, 1), rank_batch(order, 1, 16, 2, 1))


def test_world_size_is_one_per_gpu_by_default_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert (world_size_for(0, 16), world_size_for(2, 16)) == (1, 2)
    with pytest.raises(ConfigError, match=r"--batch-size 6: expected at least 2 images per rank for 4 ranks"):
        world_size_for(4, 6)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert world_size_for(0, 16) == 4
    with pytest.raises(ConfigError, match=r"--processes 8: expected at most the 4 visible GPUs"):
        world_size_for(8, 64)
    # Explicit values are checked in start, before anything runs.
    with pytest.raises(ConfigError, match="--batch-size 6"):
        TrainConfig("in", "out", "ckpt", batch_size=6, processes=4).check()
    with pytest.raises(ConfigError, match="--processes -1"):
        TrainConfig("in", "out", "ckpt", processes=-1).check()


def two_rank_config(sample_dir: Path, root: Path, **changes: object) -> TrainConfig:
    return tiny_config(sample_dir, root, **{"epochs": 4, "checkpoint_every": 0, "processes": 2, **changes})


def test_two_ranks_learn_and_a_killed_rank_resumes_bit_identically(
    sample_dir: Path, tmp_path: Path, tiny_data: Dataset
) -> None:
    cfg = two_rank_config(sample_dir, tmp_path)
    events: list[TrainingEvent] = []
    straight = fit_on_ranks(cfg, tiny_data, "straight", 2, on_event=events.append)
    assert straight.world_size == 2 and straight.device == "cpu"
    assert straight.history["val_accuracy"][-1] > 1 / 6, straight.history  # six classes
    assert straight.history["train_loss"][-1] < straight.history["train_loss"][0]
    started = events[0]
    assert isinstance(started, TrainingStarted) and started.world_size == 2
    epochs = [e for e in events if isinstance(e, EpochDone)]
    assert [e.val_accuracy for e in epochs] == straight.history["val_accuracy"]
    assert sum(map(sum, straight.confusion)) == started.val_images

    # SIGKILL one rank from outside after the first checkpoint, as the OOM killer or a lost
    # device would: the group fails at once with a transient error instead of hanging.
    killed: list[int] = []

    def kill_a_rank(event: TrainingEvent) -> None:
        if isinstance(event, CheckpointWritten) and not killed:
            killed.append(spawned_children(os.getpid())[-1])
            os.kill(killed[0], signal.SIGKILL)

    with pytest.raises(RankLost, match=r"rank \d of 2 was killed \(SIGKILL\)") as lost:
        fit_on_ranks(cfg, tiny_data, "killed", 2, on_event=kill_a_rank)
    assert is_transient(lost.value)
    assert not spawned_children(os.getpid()), "a rank outlived the failed group"

    events.clear()
    resumed = fit_on_ranks(cfg, tiny_data, "killed", 2, on_event=events.append)  # the @retry
    first = events[0]
    assert isinstance(first, Resumed) and first.source == "retry" and first.step >= 1
    assert resumed.resumed_from == first.uri
    assert resumed.history == straight.history
    assert all(torch.equal(resumed.state_dict[k], straight.state_dict[k]) for k in straight.state_dict)


def test_a_spot_notice_checkpoints_and_a_bad_resume_is_not_retried(
    sample_dir: Path, tmp_path: Path, tiny_data: Dataset
) -> None:
    cfg = two_rank_config(sample_dir, tmp_path, checkpoint_every=3600)
    stop = threading.Event()
    stop.set()  # the notice came before the first step ended: rank 0 stops everyone after it
    with pytest.raises(SpotInterruption, match=r"spot interruption notice: wrote checkpoint .*ckpt-0000000001\.pt"):
        fit_on_ranks(cfg, tiny_data, "noticed", 2, stop=stop)
    assert CheckpointStore(open_storage(cfg.checkpoint_root), "noticed").committed_steps() == [1]

    # A checkpoint of another image size cannot be resumed: every rank raises ConfigError.
    other = replace(cfg, image_size=24, resume_from=f"{cfg.checkpoint_root}/noticed/{checkpoint_name(1)}.pt")
    with pytest.raises(RankFailed, match=r"rank \d: ConfigError: checkpoint .*expected architecture") as failed:
        fit_on_ranks(other, load_dataset(str(sample_dir), image_size=24, threads=2), "mismatch", 2)
    assert not is_transient(failed.value)
