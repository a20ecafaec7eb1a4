"""``--task embed``: a classifier's pooled penultimate features, L2-normalised, as float16.

The model is any form ``steps.models.loading`` takes (a TrainFlow bundle,
``torchvision:<arch>:<weights>``, TorchScript). Its last ``nn.Linear`` (the classification head:
``fc`` of a ResNet, ``classifier[-1]`` of a MobileNet or EfficientNet, ``heads.head`` of a ViT)
becomes the identity, so the model returns the pooled features that fed it. A TorchScript file
cannot be edited: its output is taken as the embedding (export it without the head). A feature
map that is still spatial (N, C, H, W) is average-pooled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from steps.errors import ConfigError
from steps.models.callable_model import CallableModel, ModelFunction
from steps.models.loading import LoadedModel

EMBEDDING = "embedding"


def without_head(module: nn.Module, uri: str) -> nn.Module:
    """``module`` with its last Linear layer replaced by the identity (TorchScript: unchanged)."""
    if isinstance(module, torch.jit.ScriptModule):
        return module
    linear = [name for name, layer in module.named_modules() if isinstance(layer, nn.Linear)]
    if not linear:
        raise ConfigError("--model", uri, "a classifier with a final nn.Linear head for --task embed", "pass one")
    parent_name, _, child = linear[-1].rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, nn.Identity())
    return module


class Embedder:
    def __init__(self, module: nn.Module, device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.module = module.to(device=device, memory_format=torch.channels_last if cuda else torch.contiguous_format)

    def __call__(self, pixels: torch.Tensor, meta: Sequence[dict]) -> dict[str, torch.Tensor]:
        features = self.module(pixels)
        if features.dim() == 4:
            features = features.mean(dim=(2, 3))
        features = torch.flatten(features, 1).float()
        return {EMBEDDING: nn.functional.normalize(features, dim=1).half()}


def per_device(module: nn.Module, make: Callable[[nn.Module, torch.device], ModelFunction]) -> Callable:
    """A ``build(device)``: the first device asked gets ``module`` itself, later ones a copy."""
    built: dict[str, ModelFunction] = {}

    def build(device: torch.device) -> ModelFunction:
        if str(device) not in built:
            built[str(device)] = make(module if not built else copy.deepcopy(module), device)
        return built[str(device)]

    return build


def embedding_model(loaded: LoadedModel) -> CallableModel:
    """The embedder of ``loaded``, with the classifier's own preprocessing."""
    module = without_head(loaded.module, loaded.uri).eval()
    return CallableModel(
        uri=loaded.uri,
        kind="embed",
        architecture=loaded.architecture,
        build=per_device(module, Embedder),
        input_size=loaded.input_size,
        resize="crop",
        crop_fraction=loaded.crop_fraction,
        mean=loaded.mean,
        std=loaded.std,
    )
