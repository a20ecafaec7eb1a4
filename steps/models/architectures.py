"""Model architectures by name: a small CNN for laptops and tests, and torchvision's."""

from __future__ import annotations

import torch
from torch import nn

from steps.errors import ConfigError

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
