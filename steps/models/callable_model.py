"""A model InferFlow calls with pixels and per-image records, returning named outputs.

Every task but ``classify`` runs one: the user's own model (``python:``, ``steps.models.user``),
and the built-in ``embed``, ``detect`` and ``hf:`` models. ``build(device)`` gives the callable for
one device; it is called as ``fn(pixels, meta)`` with

* ``pixels``: float [N, 3, S, S] on the device, 0..1, then ``(x - mean) / std`` when given;
* ``meta``: N dicts: the original upright ``width``/``height`` and ``scale_x``, ``scale_y``,
  ``offset_x``, ``offset_y`` of the resize (input pixel = original pixel * scale + offset);

and returns ``{output name: [N] tensor | [N, D] tensor | list of N items}``
(``steps.inference.outputs`` turns that into Parquet columns).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

ModelFunction = Callable[[torch.Tensor, Sequence[dict]], Mapping[str, Any]]

NO_NORMALIZATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@dataclass
class CallableModel:
    uri: str  # what --model named
    kind: str  # "python", "embed", "detect", "hf"
    architecture: str
    build: Callable[[torch.device], ModelFunction]
    input_size: int = 224
    resize: str = "crop"  # steps.imaging.placement.RESIZE_MODES
    crop_fraction: float = 1.0
    mean: tuple[float, float, float] = NO_NORMALIZATION[0]
    std: tuple[float, float, float] = NO_NORMALIZATION[1]
    class_names: tuple[str, ...] = ()  # what label indices name, where the model has labels

    def identity(self) -> dict:
        """The ``model`` artifact: enough to tell which model produced a set of outputs."""
        return {
            "uri": self.uri,
            "type": self.kind,
            "architecture": self.architecture,
            "input_size": self.input_size,
            "resize": self.resize,
            "crop_fraction": self.crop_fraction,
            "mean": list(self.mean),
            "std": list(self.std),
        }
