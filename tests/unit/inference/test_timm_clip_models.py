"""``timm:`` and ``open_clip:``: tiny random-init models saved locally, as classifier and embedders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from steps.errors import ConfigError
from steps.inference.predictions import load_predictions
from steps.inference.tasks import CallableTask, ClassifyTask, load_task
from tests.support.flows import S3Server
from tests.support.inference import infer_directory

LABELS = ["cat", "dog", "fish"]
TIMM_ARCH = "test_convnext"  # timm's own ~0.2M-parameter test model: 160 px, head.fc, 64 features
CLIP_ARCH = "spot-batch-tiny-clip"
CLIP_WIDTH = 16
TINY_CLIP = {  # a ViT image tower on 32 px inputs and a 1-layer text tower: ~25k parameters
    "embed_dim": CLIP_WIDTH,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-way test_convnext state_dict saved with torch.save, with its class names next to it."""
    import timm  # here, not at import: the dev extras' imports would slow every worker's collection
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("timm") / "convnext.pth"
    torch.save(timm.create_model(TIMM_ARCH, pretrained=False, num_classes=len(LABELS)).state_dict(), path)
    path.with_name(path.name + ".classes.txt").write_text("\n".join(LABELS) + "\n")
    return path


@pytest.fixture(scope="module")
def headless_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_convnext without a classifier, as .safetensors."""
    import timm
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("timm") / "convnext.safetensors"
    save_file(timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP, registered with open_clip under CLIP_ARCH, its weights saved with torch.save."""
    import open_clip
    import torch

    directory = tmp_path_factory.mktemp("clip")
    (directory / f"{CLIP_ARCH}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(directory / f"{CLIP_ARCH}.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model(CLIP_ARCH).state_dict(), directory / "clip.pt")
    return directory / "clip.pt"


@pytest.fixture(scope="module")
def checkpoints(timm_checkpoint: Path, headless_checkpoint: Path, clip_checkpoint: Path) -> dict[str, Path]:
    return {
        "timm": timm_checkpoint,
        "timm_dir": timm_checkpoint.parent,
        "headless": headless_checkpoint,
        "clip": clip_checkpoint,
    }


def unit_vectors(out: Path, width: int) -> np.ndarray:
    rows = load_predictions(str(out))
    vectors = np.stack(rows.loc[rows["status"] == "ok", "embedding"].to_numpy()).astype(np.float32)
    assert vectors.shape == (51, width)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    return vectors


def test_timm_classifier_takes_labels_next_to_the_checkpoint_and_timms_preprocessing(
    timm_checkpoint: Path, sample_dir: Path, tmp_path: Path
) -> None:
    task = load_task(f"timm:{TIMM_ARCH}:{timm_checkpoint}", "classify", top_k=2, min_score=0)
    assert isinstance(task, ClassifyTask)
    model = task.model
    assert (model.input_size, model.resize, model.crop_fraction) == (160, "crop", 0.95)
    assert (model.mean, model.std, model.class_names, model.kind) == ((0.5,) * 3, (0.5,) * 3, LABELS, "timm")
    infer_directory(sample_dir, tmp_path / "out", task)
    rows = load_predictions(str(tmp_path / "out"))
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 51 and set(ok["label"]) <= set(LABELS)
    assert all(len(labels) == 2 for labels in ok["top_k_labels"])


def test_timm_embed_gives_unit_pre_logits_features_of_a_headless_safetensors_checkpoint(
    headless_checkpoint: Path, sample_dir: Path, tmp_path: Path
) -> None:
    task = load_task(f"timm:{TIMM_ARCH}:{headless_checkpoint}", "embed", top_k=1, min_score=0)
    assert isinstance(task, CallableTask)
    assert task.schema.field("embedding").type == pa.list_(pa.float16(), 64)
    infer_directory(sample_dir, tmp_path / "out", task)
    unit_vectors(tmp_path / "out", 64)


def test_timm_checkpoint_and_class_names_from_s3(timm_checkpoint: Path, s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket("timm-models")
    client = s3_server.client()
    for path in timm_checkpoint.parent.iterdir():
        client.put_object(Bucket="timm-models", Key=f"m/{path.name}", Body=path.read_bytes())
    task = load_task(f"timm:{TIMM_ARCH}:{bucket}/m/{timm_checkpoint.name}", "classify", top_k=1, min_score=0)
    assert isinstance(task, ClassifyTask) and task.model.class_names == LABELS


def test_open_clip_embed_gives_unit_image_embeddings_of_the_models_width(
    clip_checkpoint: Path, sample_dir: Path, tmp_path: Path
) -> None:
    task = load_task(f"open_clip:{CLIP_ARCH}:{clip_checkpoint}", "embed", top_k=1, min_score=0)
    assert isinstance(task, CallableTask)
    model = task.model
    assert (model.input_size, model.resize, model.kind) == (32, "crop", "open_clip")
    assert model.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # OpenAI's CLIP normalization
    assert task.schema.field("embedding").type == pa.list_(pa.float16(), CLIP_WIDTH)
    infer_directory(sample_dir, tmp_path / "out", task)
    unit_vectors(tmp_path / "out", CLIP_WIDTH)


@pytest.mark.parametrize(
    ("spec", "task", "message"),
    [
        ("timm:{timm_dir}/missing.pth", "classify", r"expected timm:<arch>:<checkpoint file or s3:// object>"),
        (f"timm:{TIMM_ARCH}:{{timm_dir}}/missing.pth", "classify", r"missing\.pth': expected an existing file"),
        ("timm:no_such_net:{timm}", "classify", r"expected an architecture timm\.list_models\(\) names"),
        ("timm:test_vit:{timm}", "classify", r"expected a state_dict for timm test_vit .*RuntimeError"),
        (f"timm:{TIMM_ARCH}:{{headless}}", "classify", r"expected a checkpoint with its classifier"),
        (f"timm:{TIMM_ARCH}:{{timm}}", "detect", r"expected a torchvision detector, not a timm: model"),
        (f"open_clip:{CLIP_ARCH}:{{clip}}", "classify", r"'classify': expected embed with an open_clip: model"),
        (f"open_clip:{CLIP_ARCH}:{{timm_dir}}/missing.pt", "embed", r"missing\.pt': expected an existing file"),
        ("open_clip:no-such-clip:{clip}", "embed", r"expected a model config open_clip\.list_models\(\) names"),
        (f"open_clip:{CLIP_ARCH}:{{timm}}", "embed", rf"expected the weights of OpenCLIP {CLIP_ARCH}"),
    ],
)
def test_unusable_timm_and_open_clip_models_are_named_in_one_line(
    spec: str, task: str, message: str, checkpoints: dict[str, Path]
) -> None:
    spec = spec.format(**checkpoints)
    with pytest.raises(ConfigError, match=message) as caught:
        load_task(spec, task, top_k=1, min_score=0)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "package", "extra"), [("timm:a:b.pth", "timm", "timm"), ("open_clip:a:b", "open_clip", "clip")]
)
def test_a_missing_extra_names_the_package_and_the_install(
    spec: str, package: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError
    expected = rf"--model '{spec}': expected the {package} package; pip install 'spot-batch\[{extra}\]'"
    with pytest.raises(ConfigError, match=expected):
        load_task(spec, "embed", top_k=1, min_score=0)
