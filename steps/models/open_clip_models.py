"""``--model open_clip:<arch>:<checkpoint>``: an OpenCLIP model's image embeddings (``--task embed``).

``<arch>`` is a model config ``open_clip.list_models()`` names (``ViT-B-32``, ``ViT-L-14``, ...);
the checkpoint is a local or ``s3://`` file of the whole CLIP model's weights (``.pt``/``.bin``
from ``torch.save``, or ``.safetensors``), e.g. ``open_clip_pytorch_model.bin`` copied from the
model's Hugging Face page. The model is ``open_clip.create_model(arch, pretrained=<that file>)``
(a file path is never a pretrained tag, so nothing is downloaded); its ``encode_image`` output,
L2-normalised, as float16, is the embedding. Preprocessing is the model's
``visual.preprocess_cfg``: size, mean/std, and resize mode ``shortest`` (the centre square),
``longest`` (letterboxed) or ``squash`` (stretched). CLIP image towers have no classifier head:
``--task classify`` is refused. Needs the ``clip`` extra (``pip install 'spot-batch[clip]'``).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import nn

from steps.errors import ConfigError
from steps.models.callable_model import CallableModel
from steps.models.embedding import Embedder, per_device
from steps.models.extras import import_extra
from steps.models.loading import local_file

OPEN_CLIP_PREFIX = "open_clip:"

OPEN_CLIP_FORM = "open_clip:<arch>:<checkpoint file or s3:// object>"

RESIZE_OF_RESIZE_MODE = {"shortest": "crop", "longest": "pad", "squash": "stretch"}


class ImageFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


def _preprocessing(spec: str, visual: nn.Module) -> dict:
    """input_size, resize, crop_fraction, mean and std from the image tower's preprocess config."""
    config = getattr(visual, "preprocess_cfg", None) or {}
    size = config.get("size", visual.image_size)
    height, width = (size, size) if isinstance(size, int) else size
    if height != width:
        raise ConfigError("image size of --model", spec, "a square input", f"got {height}x{width}")
    return {
        "input_size": int(height),
        "resize": RESIZE_OF_RESIZE_MODE.get(config.get("resize_mode", "shortest"), "crop"),
        "crop_fraction": 1.0,  # OpenCLIP resizes the shorter side to the input size itself
        "mean": tuple(float(v) for v in config.get("mean", visual.image_mean)),
        "std": tuple(float(v) for v in config.get("std", visual.image_std)),
    }


def _build(open_clip: ModuleType, arch: str, checkpoint: str) -> nn.Module:
    path = local_file(checkpoint, "checkpoint file")
    try:
        return open_clip.create_model(arch, pretrained=str(path)).eval()
    except Exception as err:  # torch, safetensors and open_clip raise many types for a file that does not fit
        detail = (str(err).strip().splitlines() or [""])[0][:160]
        raise ConfigError(
            "checkpoint file",
            checkpoint,
            f"the weights of OpenCLIP {arch} (torch.save or .safetensors)",
            f"pass the checkpoint of that model ({type(err).__name__}: {detail})",
        ) from err


def load_open_clip(spec: str, task: str) -> CallableModel:
    """``open_clip:<arch>:<checkpoint>`` as an image embedder; ``task`` must be ``embed``."""
    arch, _, checkpoint = spec.removeprefix(OPEN_CLIP_PREFIX).partition(":")
    if not arch or not checkpoint:
        raise ConfigError("--model", spec, OPEN_CLIP_FORM, "e.g. --model open_clip:ViT-B-32:/models/vit-b-32.bin")
    if task != "embed":
        raise ConfigError("--task", task, "embed with an open_clip: model (no classifier head)", "pass --task embed")
    open_clip = import_extra(spec, "open_clip", "clip")
    if arch not in open_clip.list_models():
        raise ConfigError("--model", spec, "a model config open_clip.list_models() names", f"check {arch!r}")
    model = _build(open_clip, arch, checkpoint)
    return CallableModel(
        uri=spec,
        kind="open_clip",
        architecture=arch,
        build=per_device(ImageFeatures(model), Embedder),
        **_preprocessing(spec, model.visual),
    )
