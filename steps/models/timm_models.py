"""``--model timm:<arch>:<checkpoint>``: a timm architecture with a local or ``s3://`` checkpoint.

``<arch>`` is a name ``timm.list_models()`` gives, optionally with a pretrained tag
(``convnext_tiny.fb_in22k``), which picks that tag's input size, crop and mean/std. The checkpoint
is a state_dict saved with ``torch.save`` or as a ``.safetensors`` file (timm's own training
checkpoints too: their EMA, else ``state_dict``, entry). The model is
``timm.create_model(arch, pretrained=False, num_classes=N)``, N the checkpoint's classifier
outputs (0 for a headless checkpoint, which can only embed).

``--task classify``: labels from ``<checkpoint>.classes.txt`` (one per line), else the output
indices ``"0"``, ``"1"``, ... ``--task embed``: the pre-logits features,
``forward_head(forward_features(x), pre_logits=True)``, L2-normalised, as float16.

Preprocessing is ``timm.data.resolve_data_config``'s: input size, mean/std and, for crop mode
``center``, ``crop_pct``; crop modes ``squash`` and ``border`` become a stretch and a letterbox of
the whole image (timm's small crop margin is not applied). Needs the ``timm`` extra
(``pip install 'spot-batch[timm]'``); nothing is downloaded.
"""

from __future__ import annotations

import pickle
from types import ModuleType

import torch
from torch import nn

from steps.errors import ConfigError, not_tensors
from steps.models.callable_model import CallableModel
from steps.models.embedding import Embedder, per_device
from steps.models.extras import import_extra
from steps.models.loading import LoadedModel, local_file, sidecar_classes

TIMM_PREFIX = "timm:"

TIMM_FORM = "timm:<arch>:<checkpoint file or s3:// object>"

RESIZE_OF_CROP_MODE = {"center": "crop", "squash": "stretch", "border": "pad"}


class PreLogits(nn.Module):
    """The features a timm model's classifier would see: pooled, after any pre-logits layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)


def _preprocessing(spec: str, data_config: dict) -> dict:
    """input_size, resize, crop_fraction, mean and std from timm's data config."""
    _, height, width = data_config["input_size"]
    if height != width:
        raise ConfigError("input size of --model", spec, "a square input", f"got {height}x{width}; pick another tag")
    resize = RESIZE_OF_CROP_MODE.get(data_config.get("crop_mode", "center"), "crop")
    return {
        "input_size": int(height),
        "resize": resize,
        "crop_fraction": float(data_config["crop_pct"]) if resize == "crop" else 1.0,
        "mean": tuple(float(v) for v in data_config["mean"]),
        "std": tuple(float(v) for v in data_config["std"]),
    }


def _head_outputs(timm: ModuleType, arch: str, state: dict[str, torch.Tensor]) -> int:
    """How many classes the checkpoint's classifier has; 0 when it has none."""
    head = timm.models.get_pretrained_cfg_value(arch, "classifier")
    name = head[0] if isinstance(head, tuple | list) else head  # distilled models have two heads
    weight = state.get(f"{name}.weight") if name else None
    return int(weight.shape[0]) if weight is not None else 0


def _build(timm: ModuleType, arch: str, checkpoint: str) -> nn.Module:
    path = local_file(checkpoint, "checkpoint file")
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
        model = timm.create_model(arch, pretrained=False, num_classes=_head_outputs(timm, arch, state))
        model.load_state_dict(state)
    except pickle.UnpicklingError as err:
        raise not_tensors("checkpoint file", checkpoint) from err
    except Exception as err:  # torch, safetensors and timm raise many types for a file that does not fit
        detail = (str(err).strip().splitlines() or [""])[0][:160]
        raise ConfigError(
            "checkpoint file",
            checkpoint,
            f"a state_dict for timm {arch} (torch.save or .safetensors)",
            f"pass the weights of that architecture ({type(err).__name__}: {detail})",
        ) from err
    return model.eval()


def load_timm(spec: str, task: str) -> LoadedModel | CallableModel:
    """``timm:<arch>:<checkpoint>`` as a classifier (``LoadedModel``) or, for ``embed``, a
    pre-logits feature model."""
    arch, _, checkpoint = spec.removeprefix(TIMM_PREFIX).partition(":")
    if not arch or not checkpoint:
        raise ConfigError("--model", spec, TIMM_FORM, "e.g. --model timm:convnext_tiny:/models/convnext_tiny.pth")
    timm = import_extra(spec, "timm", "timm")
    if not timm.is_model(arch):
        raise ConfigError("--model", spec, "an architecture timm.list_models() names", f"check {arch!r}")
    model = _build(timm, arch, checkpoint)
    settings = _preprocessing(spec, timm.data.resolve_data_config({}, model=model))
    if task == "classify":
        if not model.num_classes:
            raise ConfigError(
                "--model", spec, "a checkpoint with its classifier for --task classify", "pass one, or --task embed"
            )
        classes = sidecar_classes(checkpoint) or []
        return LoadedModel(model, spec, "timm", arch, classes, **settings)
    return CallableModel(
        uri=spec, kind="timm", architecture=arch, build=per_device(PreLogits(model), Embedder), **settings
    )
