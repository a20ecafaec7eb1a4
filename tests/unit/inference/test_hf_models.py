"""``hf:<dir>``: tiny random-init Hugging Face checkpoints saved locally, as classifier and embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from steps.errors import ConfigError
from steps.inference.predictions import load_predictions
from steps.inference.tasks import CallableTask, ClassifyTask, load_task
from tests.support.inference import infer_directory

transformers = pytest.importorskip("transformers", reason="the hf extra: pip install 'spot-batch[hf]'")

LABELS = ["cat", "dog", "fish"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer ViT on 32 px images, as ``save_pretrained`` writes it, with its image processor."""
    import torch

    directory = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    transformers.ViTForImageClassification(config).save_pretrained(directory)
    processor = transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3
    )
    processor.save_pretrained(directory)
    return directory


def test_hf_classifier_takes_labels_and_preprocessing_from_the_checkpoint(
    checkpoint: Path, sample_dir: Path, tmp_path: Path
) -> None:
    task = load_task(f"hf:{checkpoint}", "classify", top_k=2, min_score=0)
    assert isinstance(task, ClassifyTask)
    model = task.model
    assert (model.input_size, model.resize, model.mean, model.std) == (32, "stretch", (0.5,) * 3, (0.25,) * 3)
    assert model.class_names == LABELS and model.kind == "hf"
    infer_directory(sample_dir, tmp_path / "out", task)
    rows = load_predictions(str(tmp_path / "out"))
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 51 and set(ok["label"]) <= set(LABELS)


def test_hf_embed_gives_unit_vectors_of_the_hidden_size(checkpoint: Path, sample_dir: Path, tmp_path: Path) -> None:
    task = load_task(f"hf:{checkpoint}", "embed", top_k=1, min_score=0)
    assert isinstance(task, CallableTask)
    assert task.schema.field("embedding").type == pa.list_(pa.float16(), 16)
    infer_directory(sample_dir, tmp_path / "out", task)
    rows = load_predictions(str(tmp_path / "out"))
    vectors = np.stack(rows.loc[rows["status"] == "ok", "embedding"].to_numpy()).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)


def test_hf_without_an_image_processor_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"expected a preprocessor_config\.json in the directory"):
        load_task(f"hf:{tmp_path}", "classify", top_k=1, min_score=0)
