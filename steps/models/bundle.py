"""TrainFlow's model bundle: architecture, class names, input size and weights in one file."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch
from torch import nn

from steps.errors import ConfigError
from steps.io.storage import Storage
from steps.models.architectures import IMAGENET_MEAN, IMAGENET_STD, build_architecture

BUNDLE_FORMAT = "spot-batch-model/1"


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
