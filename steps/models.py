"""The self-describing model bundle TrainFlow writes and InferFlow reads, and architectures.

A bundle is one file (``torch.save`` of a plain dict, loaded with ``weights_only=True``):
weights + architecture name + class names + input size + normalization. Everything needed to
rebuild and run the model offline, with no pickled code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch
from torch import nn

from steps.errors import ConfigError
from steps.storage import Storage

BUNDLE_FORMAT = "spot-batch-model/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_CNN = "small_cnn"


class SmallCNN(nn.Module):
    """A few conv blocks: fast enough to train on a CPU in seconds, good enough for sample data."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = 3
        for out in (width, width * 2, width * 4):
            blocks += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def torchvision_architectures() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_architecture(name: str, num_classes: int) -> nn.Module:
    """``small_cnn`` or any torchvision classification architecture, randomly initialised."""
    if name == SMALL_CNN:
        return SmallCNN(num_classes)
    import difflib

    import torchvision.models

    known = torchvision_architectures()
    if name not in known:
        close = difflib.get_close_matches(name, [SMALL_CNN, *known], n=3)
        raise ConfigError(
            "architecture",
            name,
            f"{SMALL_CNN} or a torchvision classification model",
            f"did you mean {', '.join(close) or 'resnet18'}?",
        )
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


@dataclass
class ModelBundle:
    architecture: str
    class_names: list[str]
    input_size: int
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    extra: dict[str, str] = field(default_factory=dict)  # provenance: flow, run id, metrics

    def build(self) -> nn.Module:
        model = build_architecture(self.architecture, len(self.class_names))
        model.load_state_dict(self.state_dict)
        return model.eval()

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "format": BUNDLE_FORMAT,
                "architecture": self.architecture,
                "class_names": list(self.class_names),
                "input_size": self.input_size,
                "mean": list(self.mean),
                "std": list(self.std),
                "extra": dict(self.extra),
                "state_dict": self.state_dict,
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "model") -> ModelBundle:
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(
                "model file",
                source,
                f"a {BUNDLE_FORMAT} bundle written by TrainFlow",
                f"check the path ({err.__class__.__name__})",
            ) from err
        if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
            raise ConfigError(
                "model file",
                source,
                f"a {BUNDLE_FORMAT} bundle written by TrainFlow",
                "pass a TrainFlow model URI, a TorchScript file or torchvision:<arch>:<weights>",
            )
        return cls(
            architecture=payload["architecture"],
            class_names=list(payload["class_names"]),
            input_size=int(payload["input_size"]),
            state_dict=payload["state_dict"],
            mean=tuple(payload["mean"]),
            std=tuple(payload["std"]),
            extra=dict(payload.get("extra", {})),
        )

    def save(self, storage: Storage, key: str) -> None:
        storage.write(key, self.to_bytes())
