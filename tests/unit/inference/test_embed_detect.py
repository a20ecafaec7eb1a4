"""``--task embed`` (pooled features, L2-normalised float16, ``spot-batch similar``) and
``--task detect`` (boxes mapped back to the original upright image, EXIF rotation included)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torch import nn

from steps.errors import ConfigError
from steps.inference.files import INFER_FILES
from steps.inference.predictions import load_predictions, load_table
from steps.inference.shard import infer_shard
from steps.inference.similar import similar
from steps.inference.task_report import DIGEST_COLUMNS, shard_digest, task_sections
from steps.inference.tasks import DETECT_COLUMNS, CallableTask, load_task
from steps.io.local_storage import LocalStorage
from steps.io.parquet import parquet_to_table
from steps.models.architectures import build_architecture
from steps.models.detection import detection_model
from steps.models.embedding import without_head
from steps.output.layout import manifest_key
from steps.planning.inputs import list_inputs
from tests.support.flows import SPOT_BATCH
from tests.support.models import save_bundle


def digest_of(task: str, out: Path) -> dict | None:
    """The shard's digest as its task makes it: from the committed parts, read back one at a time."""
    parts = INFER_FILES.ledger(LocalStorage(out), "all").tables(DIGEST_COLUMNS)
    return shard_digest(task, (part for _, part in parts))


def run(source: Path, out: Path, task: CallableTask, decode: str = "cpu") -> None:
    infer_shard(
        name="all",
        keys=list_inputs(LocalStorage(source)),
        source=LocalStorage(source),
        target=LocalStorage(out),
        task=task,
        batch_size=8,
        chunk_size=16,
        threads=2,
        workers=2,
        prefetch_batches=2,
        decode=decode,
    )


def test_embed_writes_unit_float16_vectors_and_similar_finds_a_duplicate(sample_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "images"
    shutil.copytree(sample_dir, source)
    first = sorted(p for p in source.iterdir() if p.suffix == ".jpg")[0]
    shutil.copy(first, source / "copy-of-first.jpg")  # an exact duplicate: its nearest neighbour
    task = load_task(str(save_bundle(tmp_path / "model.pt")), "embed", top_k=1, min_score=0)
    assert isinstance(task, CallableTask)
    assert task.schema.field("embedding").type == pa.list_(pa.float16(), 64)  # small_cnn's pooled width

    run(source, tmp_path / "out", task)
    rows = load_predictions(str(tmp_path / "out"))
    ok = rows[rows["status"] == "ok"]
    vectors = np.stack(ok["embedding"].to_numpy()).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    assert rows.loc[rows["status"] == "rejected", "embedding"].isna().all()

    neighbours = similar(str(tmp_path / "out"), "copy-of-first.jpg", k=3)
    assert neighbours[0].key == first.name and neighbours[0].cosine > 0.999
    assert len(neighbours) == 3 and neighbours[0].cosine >= neighbours[1].cosine >= neighbours[2].cosine
    # exact: the same ranking as all pairs at once
    by_key = dict(zip(ok["key"], vectors, strict=True))
    query = by_key["copy-of-first.jpg"]
    expected = sorted((k for k in by_key if k != "copy-of-first.jpg"), key=lambda k: -float(by_key[k] @ query))[:3]
    assert [n.key for n in neighbours] == expected

    shown = subprocess.run(
        [SPOT_BATCH, "similar", str(tmp_path / "out"), "--key", "copy-of-first.jpg", "--k", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.splitlines()[0].split() == ["1", f"{neighbours[0].cosine:.4f}", first.name]
    with pytest.raises(ConfigError, match="expected a key predicted ok"):
        similar(str(tmp_path / "out"), "no-such-key.jpg")

    # The manifest keeps each row's key and status, not its vector: embeddings are stored once.
    manifest = parquet_to_table((tmp_path / "out" / manifest_key("all")).read_bytes())
    assert manifest.column_names == ["key", "status", "reason"] and manifest.num_rows == len(rows)

    # The report card: norms, and a sample's nearest neighbours in its shard as thumbnails,
    # found over the shard's parts one at a time: the same as all pairs at once.
    assert len(list((tmp_path / "out" / "predictions" / "all").iterdir())) > 2
    digest = digest_of("embed", tmp_path / "out")
    assert digest["norms"][0] == len(ok) and abs(digest["norms"][2] - 1) < 2e-3
    for query, found in digest["neighbours"]:
        nearest = sorted((k for k in by_key if k != query), key=lambda k: -float(by_key[k] @ by_key[query]))
        assert [key for key, _ in found] == nearest[:4]
    sections = task_sections([digest], LocalStorage(source))
    assert sections[0].rows[0][0] == len(ok)
    query, neighbours = digest["neighbours"][0]
    assert len(neighbours) == 4 and sections[1].title == f"Nearest neighbours of {query} (within its shard)"
    assert [caption for caption, _ in sections[1].images][1:] == [f"cosine {s:.3f}" for _, s in neighbours]


def test_embed_takes_the_features_before_a_torchvision_head() -> None:
    model = without_head(build_architecture("resnet18", 10).eval(), "resnet18")
    with torch.inference_mode():
        assert model(torch.zeros((1, 3, 64, 64))).shape == (1, 512)


BACKGROUND, RECTANGLE = (20, 20, 20), (250, 250, 250)
UPRIGHT = (400, 300)  # width, height of the image as people see it
BOX = (100, 50, 200, 120)  # x0, y0, x1, y1 of the bright rectangle, in upright pixels


def photo(orientation: int) -> bytes:
    """A JPEG that shows the bright rectangle at BOX once upright; stored rotated when EXIF says 6."""
    image = Image.new("RGB", UPRIGHT, BACKGROUND)
    image.paste(RECTANGLE, BOX)
    exif = Image.Exif()
    if orientation == 6:  # stored turned 90° anticlockwise: viewers turn it clockwise
        image = image.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


class BrightRectangle(nn.Module):
    """Stands in for a detector: finds the bright pixels' bounding box in its input's pixels,
    plus a weak false detection that ``--min-score`` must drop."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        found = []
        for image in images:
            ys, xs = torch.nonzero(image.mean(dim=0) > 0.5, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            found.append(
                {
                    "boxes": torch.stack([box, torch.tensor([0.0, 0.0, 5.0, 5.0])]),
                    "labels": torch.tensor([1, 2]),
                    "scores": torch.tensor([0.9, 0.1]),
                }
            )
        return found


@pytest.mark.parametrize("decode", ["cpu", "gpu"])  # Pillow's letterbox, and the tensor path's (on CPU tensors)
def test_detect_boxes_are_in_the_original_upright_image(tmp_path: Path, decode: str) -> None:
    source = tmp_path / "images"
    source.mkdir()
    (source / "upright.jpg").write_bytes(photo(1))
    (source / "rotated.jpg").write_bytes(photo(6))
    (source / "broken.jpg").write_bytes(b"not an image")
    model = detection_model(
        BrightRectangle(),
        "stand-in",
        "BrightRectangle",
        class_names=["bg", "box", "noise"],
        min_score=0.5,
        input_size=128,
    )
    run(source, tmp_path / "out", CallableTask(model, DETECT_COLUMNS), decode)

    table = load_table(str(tmp_path / "out"))
    assert {f.name: f.type for f in table.schema}["boxes"] == pa.list_(pa.list_(pa.float32(), 4))
    rows = table.to_pandas().set_index("key")
    for key in ("upright.jpg", "rotated.jpg"):
        boxes = rows.at[key, "boxes"]
        assert len(boxes) == 1, key  # the 0.1 detection is below --min-score
        np.testing.assert_allclose(boxes[0], BOX, atol=4, err_msg=key)  # 1 input pixel = 3.1 original pixels
        assert list(rows.at[key, "labels"]) == ["box"]
        assert rows.at[key, "scores"][0] == pytest.approx(0.9)
    assert rows.at["broken.jpg", "status"] == "rejected"

    # The report card: counts by label, and thumbnails with the boxes drawn where they belong.
    digest = digest_of("detect", tmp_path / "out")
    assert digest["counts"] == {"box": 2} and digest["images"] == 2
    sections = task_sections([digest], LocalStorage(source))
    assert sections[0].rows == [["box", 2]]
    drawn = Image.open(io.BytesIO(sections[-1].images[0][1])).convert("RGB")
    scale = drawn.width / UPRIGHT[0]
    x0, y0 = round(BOX[0] * scale), round(BOX[1] * scale)
    red = np.asarray(drawn)[y0 - 2 : y0 + 3, x0 - 2 : x0 + 3].reshape(-1, 3)
    assert any(r > 180 and g < 120 for r, g, _ in red)  # the box's red outline at its top-left corner


def test_detect_needs_a_torchvision_detection_architecture(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="torchvision:<detection architecture>:<weights file>"):
        load_task("torchvision:fasterrcnn_mobilenet:w.pth", "detect", top_k=1, min_score=0.5)
