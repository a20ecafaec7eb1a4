"""Small models saved in every form InferFlow loads: TrainFlow bundles and TorchScript files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steps.demo.sample_data import SOURCES
from steps.io.storage import LocalStorage
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
