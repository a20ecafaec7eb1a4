"""``--decode gpu`` on CPU tensors (the code that runs on CUDA) against the Pillow path, and the
one-lane-per-device dispatch of a shard."""

from __future__ import annotations

import io
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from steps.demo.sample_data import generate
from steps.errors import SpotInterruption
from steps.inference.device_decode import DeviceDecoder, device_batches
from steps.inference.lanes import _portable, _restored
from steps.inference.pipeline import Batch, Prepared, decodes_on_device, prepare_item
from steps.inference.predictions import load_predictions
from steps.inference.shard import infer_shard
from steps.inference.tasks import ClassifyTask
from steps.io.local_storage import LocalStorage
from steps.models.loading import LoadedModel, load_model
from steps.planning.inputs import list_inputs
from tests.support.models import save_torchscript, save_trained_bundle

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(save_trained_bundle(tmp_path_factory.mktemp("model") / "model.pt", sample_dir)))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos the model never saw (another seed), with the same bad and unusual files."""
    directory = tmp_path_factory.mktemp("held-out")
    generate(directory, count=200, seed=7)
    return directory


def predict(  # noqa: PLR0917 - the tests' one call shape
    directory: Path,
    out: Path,
    model: LoadedModel,
    decode: str,
    devices: list[torch.device],
    worker_processes: bool | None = None,
) -> pd.DataFrame:
    source = LocalStorage(directory)
    infer_shard(
        name="all",
        keys=list_inputs(source),
        source=source,
        target=LocalStorage(out),
        task=ClassifyTask(model, 3),
        batch_size=16,
        chunk_size=48,
        threads=4,
        workers=2,
        decode=decode,
        devices=devices,
        worker_processes=worker_processes,
    )
    return load_predictions(str(out))


def test_tensor_decode_agrees_with_pillow_on_top1_and_on_every_reject(
    sample_dir: Path, held_out: Path, trained: LoadedModel, tmp_path: Path
) -> None:
    agree = total = 0
    for name, directory in (("sample", sample_dir), ("held-out", held_out)):
        pillow = predict(directory, tmp_path / f"{name}-cpu", trained, "cpu", [CPU])
        tensor = predict(directory, tmp_path / f"{name}-gpu", trained, "gpu", [CPU])
        assert list(pillow["key"]) == list(tensor["key"])
        assert pillow[["key", "status", "reason"]].equals(tensor[["key", "status", "reason"]])
        assert (pillow["status"] == "rejected").sum() == 3  # empty, truncated, text; CMYK and PNG are fine
        ok = pillow["status"] == "ok"
        agree += int((pillow["label"][ok] == tensor["label"][ok]).sum())
        total += int(ok.sum())
    assert total > 240
    assert agree / total >= 0.99, f"top-1 agreement {agree}/{total}"


def test_what_the_tensor_decoder_refuses_takes_the_pillow_path(sample_dir: Path, trained: LoadedModel) -> None:
    photo = next(path for path in sorted(sample_dir.glob("*.jpg")) if path.stat().st_size > 20_000).read_bytes()
    corrupt = photo[:2000] + bytes(range(256)) * 8 + photo[4048:]  # header and EOI intact
    png = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(png, "PNG")
    files = {"photo.jpg": photo, "corrupt.jpg": corrupt, "photo.png": png.getvalue(), "empty.jpg": b""}
    storage = LocalStorage(sample_dir.parent / "refused")
    for key, data in files.items():
        storage.write(key, data)
    with ThreadPoolExecutor(2) as pillow:
        out = list(device_batches(storage, sorted(files), DeviceDecoder(trained, CPU, pillow), 8, 2))
    batches = [o for o in out if isinstance(o, Batch)]
    rejects = {o.key: o.reason for o in out if isinstance(o, Prepared)}
    expected = {key: prepare_item(key, data, trained) for key, data in files.items()}
    assert rejects == {k: p.reason for k, p in expected.items() if p.pixels is None}
    assert "empty.jpg" in rejects
    (batch,) = batches
    assert sorted(batch.keys) == sorted(k for k, p in expected.items() if p.pixels is not None)
    assert batch.pixels.shape == (len(batch.keys), 32, 32, 3) and batch.pixels.dtype == torch.uint8
    png_row = batch.pixels[batch.keys.index("photo.png")].numpy()
    assert (png_row == expected["photo.png"].pixels).all()  # the Pillow path's pixels, unchanged


def test_lanes_on_several_devices_commit_each_chunk_once_in_plan_order(
    sample_dir: Path, trained: LoadedModel, tmp_path: Path
) -> None:
    one = predict(sample_dir, tmp_path / "one", trained, "gpu", [CPU])
    out = tmp_path / "three"
    three = predict(sample_dir, out, trained, "gpu", [CPU, CPU, CPU])
    assert three.drop(columns=["top_k_scores", "score"]).equals(one.drop(columns=["top_k_scores", "score"]))
    parts = sorted(p.name for p in (out / "predictions" / "all").iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(2)]  # 54 images, chunks of 48

    (out / "_manifests" / "all.parquet").unlink()
    (out / "predictions" / "all" / "part-00000.parquet").unlink()
    resumed = predict(sample_dir, out, trained, "gpu", [CPU, CPU])
    assert resumed.drop(columns=["top_k_scores", "score"]).equals(one.drop(columns=["top_k_scores", "score"]))


def test_decode_choice() -> None:
    cuda = torch.device("cuda", 0)
    assert [decodes_on_device(d, CPU) for d in ("cpu", "gpu", "auto")] == [False, True, False]
    assert [decodes_on_device(d, cuda) for d in ("cpu", "gpu", "auto")] == [False, True, True]
    with pytest.raises(ValueError, match="decode must be one of"):
        decodes_on_device("nvjpeg", CPU)


class StopAfterReads(LocalStorage):
    """Input storage that sets ``stop`` (a spot notice) once ``reads`` objects have been read."""

    def __init__(self, root: Path, stop: threading.Event, reads: int) -> None:
        super().__init__(root)
        self.stop, self.left = stop, reads
        self.lock = threading.Lock()

    def read(self, key: str) -> bytes:
        with self.lock:
            self.left -= 1
            if self.left <= 0:
                self.stop.set()
        return super().read(key)


def test_a_spot_notice_keeps_committed_chunks_and_drops_work_ahead_in_other_lanes(
    sample_dir: Path, trained: LoadedModel, tmp_path: Path
) -> None:
    keys = list_inputs(LocalStorage(sample_dir))
    whole = predict(sample_dir, tmp_path / "whole", trained, "gpu", [CPU])
    stop = threading.Event()
    out = LocalStorage(tmp_path / "out")

    def run(source: LocalStorage, event: threading.Event | None) -> object:
        return infer_shard(
            name="all",
            keys=keys,
            source=source,
            target=out,
            task=ClassifyTask(trained, 3),
            batch_size=8,
            chunk_size=16,
            threads=2,
            workers=2,
            decode="gpu",
            devices=[CPU, CPU],
            stop=event,
        )

    with pytest.raises(SpotInterruption, match="stopped before chunk"):
        run(StopAfterReads(sample_dir, stop, reads=10), stop)  # noticed during chunk 0; lane 1 was on chunk 1
    parts = sorted(p.name for p in (tmp_path / "out" / "predictions" / "all").iterdir())
    assert parts and len(parts) < 4 and not out.exists("_manifests/all.parquet")
    resumed = run(LocalStorage(sample_dir), None)
    assert resumed.outcome.skipped_chunks == len(parts)
    after = load_predictions(str(tmp_path / "out"))
    assert after.drop(columns=["top_k_scores", "score"]).equals(whole.drop(columns=["top_k_scores", "score"]))


@pytest.mark.slow  # each spawned worker imports torch (~5-9 s of CPU); the thread lanes above are the fast case
def test_a_worker_process_per_device_predicts_what_thread_lanes_do(
    sample_dir: Path, trained: LoadedModel, tmp_path: Path
) -> None:
    """Several GPUs get a process each; two CPU "devices" as worker processes stand in for them here."""
    one = predict(sample_dir, tmp_path / "one", trained, "gpu", [CPU])
    processes = predict(sample_dir, tmp_path / "processes", trained, "gpu", [CPU, CPU], worker_processes=True)
    assert processes.drop(columns=["top_k_scores", "score"]).equals(one.drop(columns=["top_k_scores", "score"]))
    scores = (frame["score"].to_numpy(dtype=float) for frame in (processes, one))
    assert np.allclose(*scores, atol=1e-5, equal_nan=True)  # NaN: the rejects


def test_a_torchscript_model_crosses_to_a_worker_as_its_saved_bytes(tmp_path: Path) -> None:
    model = load_model(str(save_torchscript(tmp_path / "model.pt")))
    portable = pickle.loads(pickle.dumps(_portable(ClassifyTask(model, 3))))
    restored = _restored(portable)
    x = torch.rand(2, 3, model.input_size, model.input_size)
    assert torch.equal(restored.model.module(x), model.module(x)) and restored.model.class_names == model.class_names
    assert restored.top_k == 3
