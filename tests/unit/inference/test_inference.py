"""The inference library without Metaflow: model loading, the batching pipeline, chunked output."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from steps.errors import ConfigError
from steps.inference.pipeline import Batch, Prepared, batched, prepare_image
from steps.inference.predictions import load_labels, load_predictions
from steps.inference.shard import infer_shard
from steps.inference.tasks import ClassifyTask
from steps.io.concurrency import Prefetcher
from steps.io.local_storage import LocalStorage
from steps.models.architectures import build_architecture
from steps.models.loading import class_names_for, load_model
from steps.planning.inputs import list_inputs
from tests.support.models import CLASSES, save_bundle, save_torchscript

# TorchScript is deprecated upstream but still what many teams export; we load it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("fraction", [1.0, 0.875])
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (20, 20)])
def test_prepare_image_gives_a_square_of_the_input_size(size: tuple[int, int], fraction: float) -> None:
    pixels = prepare_image(jpeg(*size), 32, fraction)
    assert pixels.shape == (32, 32, 3)
    assert pixels.dtype == np.uint8
    assert abs(int(pixels[16, 16, 0]) - 200) < 8


def item(key: str, good: bool = True) -> Prepared:
    return Prepared(key, np.full((4, 4, 3), len(key), np.uint8) if good else None, "" if good else "bad")


def test_batched_groups_good_images_and_passes_rejects_through() -> None:
    items = [item("a"), item("bb", good=False), item("ccc"), item("dddd"), item("eeeee"), item("ffffff")]
    out = list(batched(items, batch_size=2, pin_memory=False))
    assert [type(o).__name__ for o in out] == ["Prepared", "Batch", "Batch", "Batch"]
    assert out[0].key == "bb"
    first = out[1]
    assert isinstance(first, Batch) and first.keys == ["a", "ccc"]
    assert first.pixels.shape == (2, 4, 4, 3) and first.pixels.dtype == torch.uint8
    assert int(first.pixels[1, 0, 0, 0]) == 3
    assert [o.keys for o in out[2:]] == [["dddd", "eeeee"], ["ffffff"]]  # the last batch is short


def test_prefetcher_overlaps_production_with_consumption() -> None:
    def slow_source():
        for index in range(6):
            time.sleep(0.05)  # reading + decoding
            yield index

    started = time.perf_counter()
    consumed = []
    for value in Prefetcher(slow_source(), depth=2):
        time.sleep(0.05)  # the model
        consumed.append(value)
    elapsed = time.perf_counter() - started
    assert consumed == list(range(6))
    assert elapsed < 0.5, f"no overlap: {elapsed:.2f} s (sequential would be 0.6 s)"


def test_prefetcher_reraises_producer_errors_and_close_unblocks_a_full_queue() -> None:
    def failing():
        yield 1
        raise OSError("S3 went away")

    prefetcher = Prefetcher(failing(), depth=1)
    assert next(prefetcher) == 1
    with pytest.raises(OSError, match="S3 went away"):
        next(prefetcher)

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield 0
        finally:
            closed.set()

    blocked = Prefetcher(endless(), depth=1)
    next(blocked)
    blocked.close()
    assert closed.is_set()


def test_load_model_forms(tmp_path: Path) -> None:
    bundle = load_model(str(save_bundle(tmp_path / "model.pt")))
    assert (bundle.kind, bundle.architecture, bundle.input_size) == ("bundle", "small_cnn", 32)
    assert bundle.class_names == CLASSES
    assert bundle.crop_fraction == 1.0

    script = load_model(str(save_torchscript(tmp_path / "plain.pt")))
    assert script.kind == "torchscript" and script.input_size == 224
    assert class_names_for(script) == [str(i) for i in range(len(CLASSES))]

    meta = {"classes": CLASSES, "input_size": 48, "crop_fraction": 0.9}
    with_meta = load_model(str(save_torchscript(tmp_path / "meta.pt", meta)))
    assert (with_meta.class_names, with_meta.input_size, with_meta.crop_fraction) == (CLASSES, 48, 0.9)
    (tmp_path / "meta.pt.classes.txt").write_text("\n".join(f"x{c}" for c in CLASSES))
    assert load_model(str(tmp_path / "meta.pt")).class_names == [f"x{c}" for c in CLASSES]  # sidecar wins

    weights = tmp_path / "squeezenet.pth"
    torch.save(build_architecture("squeezenet1_1", 1000).state_dict(), weights)
    vision = load_model(f"torchvision:squeezenet1_1:{weights}")
    assert vision.kind == "torchvision" and vision.class_names[0] == "tench" and len(vision.class_names) == 1000


def test_bad_models_are_one_line_config_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    weights = tmp_path / "small.pth"
    torch.save(build_architecture("small_cnn", 3).state_dict(), weights)
    (tmp_path / "wrong.pt.classes.txt").write_text("a\nb\n")
    wrong_classes = str(save_torchscript(tmp_path / "wrong.pt"))
    cases = {
        str(tmp_path / "missing.pt"): "expected an existing file",
        str(text): "spot-batch-model/1 bundle",
        f"torchvision:resnet999:{weights}": "did you mean",
        f"torchvision:resnet18:{weights}": "a state_dict for torchvision resnet18",
        "torchvision:resnet18": "torchvision:<arch>:<weights file>",
        "http://example.com/model.pt": "use a local path or s3:// URI",
    }
    for spec, expected in cases.items():
        with pytest.raises(ConfigError, match=expected) as info:
            load_model(spec)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="6 names, one per model output"):
        class_names_for(load_model(wrong_classes))


def test_infer_shard_writes_every_key_once_and_resumes_missing_parts(sample_dir: Path, tmp_path: Path) -> None:
    source, target = LocalStorage(sample_dir), LocalStorage(tmp_path / "out")
    keys = list_inputs(source)
    model = load_model(str(save_bundle(tmp_path / "model.pt")))

    def run() -> object:
        return infer_shard(
            name="all",
            keys=keys,
            source=source,
            target=target,
            task=ClassifyTask(model, 3),
            batch_size=8,
            chunk_size=16,
            threads=4,
            workers=2,
            prefetch_batches=2,
        )

    first = run()
    assert first.outcome.chunks == 4 and first.device == "cpu" and first.model_seconds > 0
    before = load_predictions(target.uri)
    assert list(before["key"]) == sorted(keys)
    rejected = before[before["status"] == "rejected"]
    assert len(rejected) == 3 and all(rejected["reason"] != "") and rejected["label"].isna().all()
    ok = before[before["status"] == "ok"]
    assert ok["top_k_labels"].map(len).eq(3).all() and ok["label"].isin(CLASSES).all()
    assert (ok["label"] == ok["top_k_labels"].map(lambda labels: labels[0])).all()
    assert set(load_labels(source)["key"]) <= set(keys)

    target.delete("_manifests/all.parquet")
    target.delete("predictions/all/part-00002.parquet")
    resumed = run()
    assert resumed.outcome.skipped_chunks == 3
    after = load_predictions(target.uri)
    assert after.drop(columns=["top_k_scores", "score"]).equals(before.drop(columns=["top_k_scores", "score"]))
    assert np.allclose(after["score"].fillna(0), before["score"].fillna(0), atol=1e-5)

    assert run().outcome.skipped  # manifest present: the whole shard is skipped


def test_empty_or_truncated_weights_are_one_line_config_errors(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pth"
    torch.save(build_architecture("resnet18", 1000).state_dict(), whole)
    empty, truncated = tmp_path / "empty.pth", tmp_path / "truncated.pth"
    empty.write_bytes(b"")
    truncated.write_bytes(whole.read_bytes()[:100])
    for weights, detail in ((empty, "the 0-byte file ends early"), (truncated, "")):
        with pytest.raises(ConfigError, match="a state_dict for torchvision resnet18") as info:
            load_model(f"torchvision:resnet18:{weights}")
        message = str(info.value)
        assert "\n" not in message and detail in message and message.endswith(")"), message


def test_classify_rows_are_the_top_k_of_the_predictor(tmp_path: Path) -> None:
    from steps.inference.pipeline import Predictor
    from steps.inference.predictions import SCHEMA
    from steps.inference.tasks import ClassifyRunner

    model = load_model(str(save_bundle(tmp_path / "model.pt")))
    pixels = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    keys = [f"k{i}" for i in range(5)]
    table = ClassifyRunner(model, torch.device("cpu"), 3, CLASSES)(Batch(keys, pixels))
    scores, indices = Predictor(model, torch.device("cpu"), 3)(pixels)
    expected = [
        {
            "key": key,
            "status": "ok",
            "reason": "",
            "label": CLASSES[row[0]],
            "score": float(top[0]),
            "top_k_labels": [CLASSES[i] for i in row],
            "top_k_scores": [float(s) for s in top],
        }
        for key, top, row in zip(keys, scores, indices, strict=True)
    ]
    assert table.equals(pa.Table.from_pylist(expected, schema=SCHEMA))
