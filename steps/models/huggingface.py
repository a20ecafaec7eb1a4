"""``--model hf:<dir>``: a Hugging Face checkpoint saved with ``save_pretrained``, local or ``s3://``.

The directory holds ``config.json``, the weights and ``preprocessor_config.json`` (the image
processor). ``--task classify`` needs an ``...ForImageClassification`` checkpoint (labels from
``id2label``); ``--task embed`` takes any vision checkpoint's pooled features (``pooler_output``,
else the first token of a transformer, else the spatial mean). Input size, resize and mean/std
come from the image processor: ``size: {height, width}`` is a stretch to that square (ViT),
``size: {shortest_edge}`` with ``crop_size`` a centre crop (ConvNeXt, ResNet). Needs the ``hf``
extra (``pip install 'spot-batch[hf]'``); nothing is downloaded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from torch import nn

from steps.errors import ConfigError
from steps.io.storage import is_s3, open_storage
from steps.models.architectures import IMAGENET_MEAN, IMAGENET_STD
from steps.models.callable_model import CallableModel
from steps.models.embedding import Embedder, per_device
from steps.models.extras import import_extra
from steps.models.loading import LoadedModel

HF_PREFIX = "hf:"
PROCESSOR_FILE = "preprocessor_config.json"


def _local_directory(spec: str, location: str) -> Path:
    if not is_s3(location):
        return Path(location)
    storage = open_storage(location)
    local = Path(tempfile.mkdtemp(prefix="spot-batch-hf-"))
    for item in storage.list(""):
        (local / item.key).parent.mkdir(parents=True, exist_ok=True)
        (local / item.key).write_bytes(storage.read(item.key))
    return local


def _preprocessing(spec: str, directory: Path) -> dict:
    """input_size, resize, crop_fraction, mean and std from the image processor's config."""
    path = directory / PROCESSOR_FILE
    if not path.is_file():
        raise ConfigError("--model", spec, f"a {PROCESSOR_FILE} in the directory", "save the image processor too")
    config = json.loads(path.read_text())
    size, crop = config.get("size") or {}, config.get("crop_size") or {}
    mean = tuple(config.get("image_mean") or IMAGENET_MEAN)
    std = tuple(config.get("image_std") or IMAGENET_STD)
    if "shortest_edge" in size and config.get("do_center_crop", bool(crop)):
        side = int(crop.get("height", size["shortest_edge"]))
        return {
            "input_size": side,
            "resize": "crop",
            "crop_fraction": side / int(size["shortest_edge"]),
            "mean": mean,
            "std": std,
        }
    side = int(size.get("height") or size.get("shortest_edge") or 0)
    if side < 1 or size.get("width", side) != side:
        raise ConfigError(f"size in {PROCESSOR_FILE} of", spec, "a square size or a shortest edge", f"got {size}")
    return {"input_size": side, "resize": "stretch", "crop_fraction": 1.0, "mean": mean, "std": std}


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).logits


class PooledFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled
        hidden = out.last_hidden_state
        return hidden[:, 0] if hidden.dim() == 3 else hidden.mean(dim=(2, 3))


def load_hf(spec: str, task: str) -> LoadedModel | CallableModel:
    """``hf:<dir>`` as a classifier (``LoadedModel``) or, for ``embed``, a pooled-feature model."""
    location = spec.removeprefix(HF_PREFIX)
    directory = _local_directory(spec, location)
    if not (directory / "config.json").is_file():
        raise ConfigError("--model", spec, "a directory written by save_pretrained (config.json)", "check the path")
    settings = _preprocessing(spec, directory)
    transformers = import_extra(spec, "transformers", "hf")
    auto = transformers.AutoModelForImageClassification if task == "classify" else transformers.AutoModel
    try:
        model = auto.from_pretrained(str(directory), local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as err:
        detail = (str(err).splitlines() or [""])[0][:160]
        raise ConfigError("--model", spec, f"a checkpoint {auto.__name__} loads", detail) from err
    architecture = type(model).__name__
    if task == "classify":
        labels = model.config.id2label
        names = [str(labels[i]) for i in range(len(labels))]
        return LoadedModel(Logits(model), spec, "hf", architecture, names, **settings)
    return CallableModel(
        uri=spec, kind="hf", architecture=architecture, build=per_device(PooledFeatures(model), Embedder), **settings
    )
