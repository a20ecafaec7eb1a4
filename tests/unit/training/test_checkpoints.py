"""Checkpoints: torn writes are skipped, old ones pruned, and training resumes bit-identically."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from steps.errors import ConfigError, SpotInterruption
from steps.io.local_storage import LocalStorage
from steps.io.storage import open_storage
from steps.models.architectures import SmallCNN
from steps.training.checkpoints import CheckpointStore, checkpoint_name, load_resume_from
from steps.training.data import Dataset, check_dataset, load_dataset
from steps.training.events import BatchDone, CheckpointWritten, Resumed, TrainingEvent
from steps.training.loop import fit
from steps.training.trainer import Trainer
from tests.unit.training.conftest import tiny_config


def small_state(value: float) -> dict:
    return {"epoch": 0, "batch": int(value), "weights": torch.full((4,), value)}


def test_torn_checkpoints_are_skipped_for_the_previous_complete_one(tmp_path: Path) -> None:
    store = CheckpointStore(LocalStorage(tmp_path), "run-1", keep_last=5)
    store.save(1, small_state(1.0))
    store.save(2, small_state(2.0))
    # Step 3: the data file was cut short after its marker was written (a non-atomic copy).
    store.save(3, small_state(3.0))
    path = tmp_path / "run-1" / f"{checkpoint_name(3)}.pt"
    path.write_bytes(path.read_bytes()[:100])
    # Step 4: the process died between the data file and its commit marker.
    store.save(4, small_state(4.0))
    (tmp_path / "run-1" / f"{checkpoint_name(4)}.json").unlink()

    latest = store.latest()
    assert latest is not None and latest.step == 2
    assert torch.equal(latest.state["weights"], torch.full((4,), 2.0))
    with pytest.raises(ConfigError, match="complete checkpoint"):
        load_resume_from(str(path))


def test_only_the_last_k_checkpoints_are_kept(tmp_path: Path) -> None:
    store = CheckpointStore(LocalStorage(tmp_path), "run-2", keep_last=2)
    for step in range(1, 6):
        store.save(step, small_state(step))
    assert store.committed_steps() == [4, 5]
    assert sorted(p.name for p in (tmp_path / "run-2").iterdir()) == [
        f"{checkpoint_name(s)}.{ext}" for s in (4, 5) for ext in ("json", "pt")
    ]
    assert load_resume_from(str(tmp_path / "run-2")).step == 5


def test_checkpoints_on_s3(s3_server) -> None:
    root = s3_server.make_bucket("ckpt-unit")
    store = CheckpointStore(open_storage(f"{root}/checkpoints"), "run-3", keep_last=2)
    for step in (1, 2, 3):
        store.save(step, small_state(step))
    store.storage.write(f"run-3/{checkpoint_name(4)}.pt", b"torn")  # no marker
    assert store.committed_steps() == [2, 3]
    assert store.latest().step == 3
    assert load_resume_from(f"{root}/checkpoints/run-3/{checkpoint_name(2)}.pt").step == 2


def test_spot_stop_then_resume_is_bit_identical(sample_dir: Path, tmp_path: Path, tiny_data: Dataset) -> None:
    cfg = tiny_config(sample_dir, tmp_path)
    root = open_storage(cfg.checkpoint_root)
    straight = fit(cfg, tiny_data, CheckpointStore(root, "straight"))

    # A spot notice after the 6th batch (mid second epoch): checkpoint now, then raise.
    stop = threading.Event()
    store = CheckpointStore(root, "interrupted")
    events: list[TrainingEvent] = []

    def notice_after_five(event: TrainingEvent) -> None:
        events.append(event)
        if isinstance(event, BatchDone) and event.step == 5:
            stop.set()

    with pytest.raises(SpotInterruption, match="checkpoint"):
        fit(cfg, tiny_data, store, stop=stop, on_event=notice_after_five)
    assert store.latest().state["epoch"] == 1 and store.latest().state["batch"] > 0  # mid-epoch
    written = [e for e in events if isinstance(e, CheckpointWritten)]
    assert [(e.step, e.reason) for e in written] == [(4, "epoch end"), (6, "spot notice")]
    assert written[-1].uri.endswith(f"{checkpoint_name(6)}.pt") and written[-1].bytes > 0

    events.clear()
    resumed = fit(cfg, tiny_data, store, on_event=events.append)  # the retry
    assert resumed.resumed_from.endswith(f"{checkpoint_name(6)}.pt")
    assert events[0] == Resumed(resumed.resumed_from, 6, 1, 2, 4, "retry")

    # --resume-from: a new run continuing from the interrupted run's checkpoint.
    continued = fit(
        replace(cfg, resume_from=f"{cfg.checkpoint_root}/interrupted/{checkpoint_name(6)}.pt"),
        tiny_data,
        CheckpointStore(root, "continued"),
    )

    for other in (resumed, continued):
        assert other.history == straight.history
        assert other.state_dict.keys() == straight.state_dict.keys()
        assert all(torch.equal(other.state_dict[k], straight.state_dict[k]) for k in straight.state_dict)


def test_bad_labelled_input_gives_one_line_errors(sample_dir: Path, tmp_path: Path) -> None:
    labels = (sample_dir / "labels.csv").read_text().splitlines()
    rows = labels[1:]

    def dataset(lines: list[str], extra: dict[str, bytes] | None = None) -> Path:
        directory = tmp_path / f"set{len(list(tmp_path.iterdir()))}"
        directory.mkdir()
        for line in lines:
            key = line.split(",")[0]
            if (sample_dir / key).exists():
                (directory / key).write_bytes((sample_dir / key).read_bytes())
        for key, data in (extra or {}).items():
            (directory / key).write_bytes(data)
        (directory / "labels.csv").write_text("\n".join(["key,label", *lines]) + "\n")
        return directory

    no_labels = dataset(rows)
    (no_labels / "labels.csv").unlink()
    with pytest.raises(ConfigError, match=r"labels file .*expected a labels.csv"):
        check_dataset(str(no_labels))
    with pytest.raises(ConfigError, match=r"do not exist"):
        check_dataset(str(dataset([*rows, "missing.jpg,cat"])))
    one_class = [r for r in rows if r.endswith(",cat")]
    with pytest.raises(ConfigError, match=r"at least two classes"):
        check_dataset(str(dataset(one_class)))

    # Unreadable images are reported as rejects; training data goes on without them.
    broken = dataset([*rows, "broken.jpg,cat"], {"broken.jpg": b"not a jpeg"})
    assert check_dataset(str(broken))["images"] == len(rows) + 1
    data = load_dataset(str(broken), image_size=32, threads=2)
    assert [r["key"] for r in data.rejects] == ["broken.jpg"]
    assert "not a recognised image" in data.rejects[0]["reason"]
    assert len(data.keys) == len(rows)


def test_initial_weights_load_except_a_differently_shaped_head(
    sample_dir: Path, tmp_path: Path, tiny_data: Dataset
) -> None:
    source = SmallCNN(num_classes=10)
    torch.save(source.state_dict(), tmp_path / "pretrained.pt")
    model = Trainer(tiny_config(sample_dir, tmp_path, initial_weights=str(tmp_path / "pretrained.pt")), tiny_data).model
    assert torch.equal(model.features[0].weight, source.features[0].weight)
    assert model.classifier.weight.shape == (6, source.classifier.in_features)  # new head, random
    with pytest.raises(ConfigError, match="initial-weights"):
        tiny_config(sample_dir, tmp_path, initial_weights=str(tmp_path / "missing.pt")).check()
