"""Small models saved in every form InferFlow loads: TrainFlow bundles and TorchScript files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from steps.demo.sample_data import SOURCES
from steps.io.local_storage import LocalStorage
from steps.models.architectures import build_architecture
from steps.models.bundle import ModelBundle

CLASSES = sorted(SOURCES)


def save_bundle(path: Path, input_size: int = 32) -> Path:
    torch.manual_seed(0)
    model = build_architecture("small_cnn", len(CLASSES))
    ModelBundle("small_cnn", CLASSES, input_size, model.state_dict()).save(LocalStorage(path.parent), path.name)
    return path


def save_torchscript(path: Path, meta: dict | None = None) -> Path:
    torch.manual_seed(0)
    scripted = torch.jit.script(build_architecture("small_cnn", len(CLASSES)).eval())
    extra = {"spot_batch.json": json.dumps(meta)} if meta else {}
    torch.jit.save(scripted, str(path), _extra_files=extra)
    return path


def save_trained_bundle(path: Path, images: Path, input_size: int = 32, epochs: int = 40) -> Path:
    """A small CNN trained (deterministically, seconds on a CPU) on the labelled photos in
    ``images``: confident predictions, so comparisons of input pipelines are not decided by
    the near-ties of a random model's outputs."""
    from steps.inference.pipeline import prepare_image
    from steps.models.architectures import IMAGENET_MEAN, IMAGENET_STD
    from steps.models.loading import TRAINFLOW_CROP_FRACTION
    from steps.output.layout import LABELS_FILE

    rows = [line.split(",") for line in (images / LABELS_FILE).read_text().splitlines()[1:]]
    crops = [prepare_image((images / key).read_bytes(), input_size, TRAINFLOW_CROP_FRACTION) for key, _ in rows]
    pixels = np.stack(crops)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    y = torch.tensor([CLASSES.index(label.strip()) for _, label in rows])
    torch.manual_seed(0)
    model = build_architecture("small_cnn", len(CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    ModelBundle("small_cnn", CLASSES, input_size, model.state_dict()).save(LocalStorage(path.parent), path.name)
    return path
