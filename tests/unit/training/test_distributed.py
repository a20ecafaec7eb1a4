"""Two gloo ranks on the CPU: they learn, a killed rank fails the group at once, and the retry
resumes bit-identically; a deterministic error in the ranks is reported as not worth retrying."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from steps.errors import ConfigError, SpotInterruption
from steps.io.storage import open_storage
from steps.spot import is_transient
from steps.training import nodes
from steps.training.checkpoints import CheckpointStore, checkpoint_name
from steps.training.config import TrainConfig
from steps.training.data import Dataset, load_dataset
from steps.training.determinism import epoch_order, rank_batch
from steps.training.distributed import RankFailed, RankLost, fit_on_ranks, ranks_per_node
from steps.training.events import CheckpointWritten, EpochDone, Resumed, TrainingEvent, TrainingStarted
from steps.training.nodes import Gang, NodeWatch, gang_port, is_peer_loss
from steps.training.run import TrainOutcome, train_run
from tests.support.flows import spawned_children
from tests.unit.training.conftest import free_port, tiny_config


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
    assert (ranks_per_node(0, 16), ranks_per_node(2, 16)) == (1, 2)
    with pytest.raises(ConfigError, match=r"--batch-size 6: expected at least 2 images per rank for 4 ranks"):
        ranks_per_node(4, 6)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert ranks_per_node(0, 16) == 4
    with pytest.raises(ConfigError, match=r"--processes 8: expected at most the 4 visible GPUs"):
        ranks_per_node(8, 64)
    # Explicit values are checked in start, before anything runs.
    with pytest.raises(ConfigError, match="--batch-size 6"):
        TrainConfig("in", "out", "ckpt", batch_size=6, processes=4).check()
    with pytest.raises(ConfigError, match="--processes -1"):
        TrainConfig("in", "out", "ckpt", processes=-1).check()
    # A gang splits the batch over every node's ranks.
    with pytest.raises(ConfigError, match=r"--batch-size 6: expected at least 2 images per rank for 4 ranks"):
        TrainConfig("in", "out", "ckpt", batch_size=6, processes=2, nodes=2).check()
    with pytest.raises(ConfigError, match="--nodes 0"):
        TrainConfig("in", "out", "ckpt", nodes=0).check()


def two_rank_config(sample_dir: Path, root: Path, **changes: object) -> TrainConfig:
    return tiny_config(sample_dir, root, **{"epochs": 4, "checkpoint_every": 0, "processes": 2, **changes})


@pytest.mark.slow  # in process; the default run's representative is the TrainFlow test of a killed gloo rank
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


# 2 x 2 against 1 x 4, mean train loss per epoch (4 epochs of 4-5 steps, 51 images at 32 px, batches
# of 12; losses 1.7 to 0.95): at most 0.072 apart at seed 0 (this test's), 0.195 over seeds 0-2.
# The nodes draw other batches from their slices and hold out other images (the split is by key).
LOSS_TOLERANCE = 0.25


@pytest.mark.slow  # two trainings of 4 ranks (1 min on 2 busy cores); the flow test runs the gang by default
def test_a_gang_of_two_nodes_trains_like_one_node_with_as_many_ranks(
    sample_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """2 nodes x 2 ranks (each node's task in its own thread, each reading only its slice) against
    1 node x 4 ranks on the same data and seed: the loss curves agree within ``LOSS_TOLERANCE``."""
    cfg = tiny_config(sample_dir, tmp_path, epochs=4, checkpoint_every=0, processes=2, nodes=2, batch_size=12)
    port = free_port()
    results: dict[int, TrainOutcome | None] = {}

    def node(index: int) -> None:
        results[index] = train_run(cfg, "gang", 0, gang=Gang(index, 2, "127.0.0.1", port))

    other = threading.Thread(target=node, args=(1,))
    other.start()
    node(0)
    other.join()
    gang, quiet = results[0], results[1]
    assert quiet is None, "only node 0 returns the result"
    assert gang is not None and gang.summary["world_size"] == 4
    # A log line from node 1 at each of rank 0's checkpoints (one per step: checkpoint_every 0).
    written = CheckpointStore(open_storage(cfg.checkpoint_root), "gang").committed_steps()[-1]
    barrier = [
        line for line in capfd.readouterr().out.splitlines() if "node 1 of 2 (ranks 2-3): past the barrier" in line
    ]
    assert len(barrier) == written and barrier[-1].endswith(f"ckpt-{written:010d}.pt, step {written}")
    one_node = train_run(replace(cfg, processes=4, nodes=1), "one-node", 0)
    assert one_node is not None
    curves = gang.metrics["train_loss"], one_node.metrics["train_loss"]
    print(f"mean train loss per epoch, 2 x 2: {curves[0]}, 1 x 4: {curves[1]}")
    assert max(abs(a - b) for a, b in zip(*curves, strict=True)) <= LOSS_TOLERANCE, curves
    assert all(curve[-1] < curve[0] for curve in curves), curves


def test_peer_loss_is_transient_and_each_attempt_meets_on_its_own_port() -> None:
    gloo = RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:30132.")
    assert is_peer_loss(gloo) and not is_peer_loss(RuntimeError("size mismatch")) and not is_peer_loss(OSError())
    assert gang_port("7", 0) != gang_port("7", 1) and 20000 <= gang_port("7", 0) < 50000
    assert gang_port("7", 0) == gang_port("7", 0) and gang_port("7", 3, "3339") == 3339
    assert gang_port("7", 0, "None") == gang_port("7", 0)  # what Metaflow 2.19's JobSets set


def wait_for(condition: Callable[[], object], timeout_s: float) -> float:
    """Seconds until ``condition()`` holds (fails the test after ``timeout_s``)."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout_s, "timed out"
        time.sleep(0.05)
    return time.monotonic() - began


def test_a_silent_node_or_a_lost_main_node_is_noticed_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat watch alone (no training): what ends a node's wait when no socket closes."""
    # A quarter of the real beat, silent for four beats: what is tested is the watch, not the production figures.
    monkeypatch.setattr(nodes, "BEAT_S", 0.25)
    monkeypatch.setattr(nodes, "LOST_AFTER_S", 1.0)
    port = free_port()
    main, other = NodeWatch(Gang(0, 2, "127.0.0.1", port)), NodeWatch(Gang(1, 2, "127.0.0.1", port))
    time.sleep(3 * nodes.BEAT_S)
    assert main.lost is None and other.lost is None  # both beat
    other.close()  # node 1 stops beating without saying it is done: an instance gone silent
    assert wait_for(lambda: main.lost, 10) < 3
    assert main.lost.startswith("node 1 of 2 stopped answering for ")

    port = free_port()
    serving, client = NodeWatch(Gang(0, 2, "127.0.0.1", port)), NodeWatch(Gang(1, 2, "127.0.0.1", port))
    time.sleep(2 * nodes.BEAT_S)
    serving.close()
    del serving  # node 0 and the store it serves are gone
    gc.collect()
    assert wait_for(lambda: client.lost, 10) < 2.5
    assert client.lost.startswith("node 0 of 2 (the gang's store) is gone")
    client.close()
