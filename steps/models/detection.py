"""``--task detect``: torchvision detectors with local weights, boxes in the original's pixels.

``--model torchvision:<arch>:<weights file>`` with a detection architecture
(``fasterrcnn_mobilenet_v3_large_fpn``, ``fasterrcnn_resnet50_fpn``, ``retinanet_resnet50_fpn``,
``ssdlite320_mobilenet_v3_large``, ...). Labels are COCO's 91 category names, or the sidecar
``<weights file>.classes.txt`` (which also sets the number of classes, background first).

Images are letterboxed (``resize = "pad"``), never cropped, to ``DETECT_INPUT_SIZE``; the detector
returns boxes in those input pixels, and ``Detector`` maps them back through each image's
placement: x0, y0, x1, y1 in the original upright image (after EXIF orientation), clipped to it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Sequence

import torch
from torch import nn

from steps.errors import ConfigError, not_tensors
from steps.models.callable_model import CallableModel
from steps.models.embedding import per_device

DETECT_INPUT_SIZE = 640


class Detector:
    """A torchvision-style detector (list of [3, S, S] in, one dict of boxes/labels/scores per
    image out) whose boxes come back in original-image pixels, above ``min_score``."""

    def __init__(self, module: nn.Module, device: torch.device, class_names: Sequence[str], min_score: float) -> None:
        self.module = module.to(device).eval()
        self.class_names = list(class_names)
        self.min_score = min_score

    def _name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)

    def __call__(self, pixels: torch.Tensor, meta: Sequence[dict]) -> dict[str, list]:
        found = self.module(list(pixels.float()))
        boxes, labels, scores = [], [], []
        for detections, record in zip(found, meta, strict=True):
            keep = detections["scores"] >= self.min_score
            box = detections["boxes"][keep].float()
            scale = box.new_tensor([record["scale_x"], record["scale_y"]] * 2)
            offset = box.new_tensor([record["offset_x"], record["offset_y"]] * 2)
            limit = box.new_tensor([record["width"], record["height"]] * 2)
            boxes.append(torch.minimum(((box - offset) / scale).clamp(min=0), limit))
            labels.append([self._name(int(i)) for i in detections["labels"][keep].tolist()])
            scores.append(detections["scores"][keep].float())
        return {"boxes": boxes, "labels": labels, "scores": scores}


def detection_model(
    module: nn.Module, uri: str, architecture: str, *, class_names: Sequence[str], min_score: float, input_size: int
) -> CallableModel:
    def make(on_device: nn.Module, device: torch.device) -> Detector:
        return Detector(on_device, device, class_names, min_score)

    return CallableModel(
        uri=uri,
        kind="detect",
        architecture=architecture,
        build=per_device(module, make),
        input_size=input_size,
        resize="pad",
        class_names=tuple(class_names),
    )


def detection_architectures() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def load_detector(spec: str, min_score: float, input_size: int = DETECT_INPUT_SIZE) -> CallableModel:
    """``torchvision:<detection arch>:<weights file>``, loaded on the CPU."""
    import difflib

    import torchvision.models
    from torchvision.models._meta import _COCO_CATEGORIES

    from steps.models.loading import TORCHVISION_PREFIX, read_required, sidecar_classes

    arch, _, weights_uri = spec.removeprefix(TORCHVISION_PREFIX).partition(":")
    known = detection_architectures()
    if not spec.startswith(TORCHVISION_PREFIX) or arch not in known or not weights_uri:
        close = ", ".join(difflib.get_close_matches(arch, known, n=3)) or "fasterrcnn_mobilenet_v3_large_fpn"
        raise ConfigError(
            "--model", spec, "torchvision:<detection architecture>:<weights file> for --task detect", f"e.g. {close}"
        )
    classes = sidecar_classes(weights_uri) or list(_COCO_CATEGORIES)
    module = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=len(classes))
    try:
        state = torch.load(
            io.BytesIO(read_required(weights_uri, "weights file")), map_location="cpu", weights_only=True
        )
        module.load_state_dict(state)
    except pickle.UnpicklingError as err:
        raise not_tensors("weights file", weights_uri) from err
    except (RuntimeError, TypeError, AttributeError, zipfile.BadZipFile) as err:
        raise ConfigError(
            "weights file",
            weights_uri,
            f"a state_dict for torchvision {arch} with {len(classes)} classes",
            f"save it with torch.save(model.state_dict(), PATH) ({str(err).splitlines()[0][:160]})",
        ) from err
    transform = getattr(module, "transform", None)
    if transform is not None and hasattr(transform, "min_size"):  # R-CNN/RetinaNet: no upscaling to 800 px
        transform.min_size, transform.max_size = (input_size,), input_size
    return detection_model(module, spec, arch, class_names=classes, min_score=min_score, input_size=input_size)
