"""InferFlow's shard from WebDataset tars: the same predictions as from the images as objects,
a truncated tar's damage reported, a part lost and redone exactly once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steps.inference.predictions import load_predictions
from steps.inference.shard import infer_shard
from steps.inference.tasks import ClassifyTask
from steps.io.input_format import TAR_SHARDS
from steps.io.local_storage import LocalStorage
from steps.models.loading import load_model
from steps.planning.inputs import list_inputs
from tests.support.models import save_bundle
from tests.support.tars import images_to_tars

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def test_tars_predict_like_objects_and_resume_exactly_once(sample_dir: Path, tmp_path: Path) -> None:
    images = LocalStorage(sample_dir)
    keys = list_inputs(images)
    tars = tmp_path / "tars"
    paths = images_to_tars({k: images.read(k) for k in keys}, tars, 16, {})
    whole = paths[0].read_bytes()
    (tars / "zz-cut.tar").write_bytes(whole[: len(whole) // 2])  # truncated halfway
    model = load_model(str(save_bundle(tmp_path / "model.pt")))
    settings = {"task": ClassifyTask(model, 3), "batch_size": 8, "chunk_size": 16, "threads": 2, "workers": 2}

    infer_shard(name="all", keys=keys, source=images, target=LocalStorage(tmp_path / "objects"), **settings)
    tar_keys = sorted(p.name for p in tars.glob("*.tar"))
    target = LocalStorage(tmp_path / "from-tars")

    def run() -> object:
        return infer_shard(
            name="all", keys=tar_keys, source=LocalStorage(tars), target=target, inputs=TAR_SHARDS, **settings
        )

    first = run()
    assert first.outcome.chunks == len(tar_keys) == len(paths) + 1
    objects = load_predictions(str(tmp_path / "objects")).set_index("key")
    from_tars = load_predictions(target.uri)
    assert from_tars["key"].is_unique
    in_tars = from_tars[~from_tars["key"].str.startswith("zz-cut.tar")].copy()
    in_tars["object"] = in_tars["key"].str.split("/").str[1]
    # Every image and every bad file with an image extension, under <tar>/<member>, predicted alike.
    assert set(in_tars["object"]) == {k for k in keys if k.rsplit(".", 1)[-1].lower() in ("jpg", "jpeg", "png", "webp")}
    same = objects.loc[in_tars["object"]]
    assert list(same["status"]) == list(in_tars["status"]) and list(same["label"]) == list(in_tars["label"])
    assert np.allclose(same["score"].fillna(0), in_tars["score"].fillna(0), atol=1e-5)

    cut = from_tars[from_tars["key"].str.startswith("zz-cut.tar/")]
    assert (cut["status"] == "ok").sum() >= 1 and list(cut["reason"])[-1].startswith("truncated tar:")

    target.delete("_manifests/all.parquet")
    target.delete("predictions/all/part-00001.parquet")
    again = run()
    assert again.outcome.skipped_chunks == len(tar_keys) - 1 and again.outcome.reused_images == len(from_tars) - len(
        from_tars[from_tars["key"].str.startswith(tar_keys[1] + "/")]
    )
    assert (
        load_predictions(target.uri)
        .drop(columns=["score", "top_k_scores"])
        .equals(from_tars.drop(columns=["score", "top_k_scores"]))
    )
