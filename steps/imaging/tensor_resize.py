"""Resize uint8 image tensors on their device, with the geometry of the Pillow path.

Antialiased resampling (``antialias=True``) is what makes a tensor resize match Pillow's
filters when shrinking; without it a 4000 px photo shrunk to 256 px aliases badly. On CUDA
torchvision resizes uint8 through a float copy and rounds back; on CPU it has a native uint8
kernel. Both take (C, H, W) or (N, C, H, W).
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from steps.imaging.codec import center_crop, fit_within
from steps.imaging.placement import Placement


def resize_and_center_crop(image: torch.Tensor, size: int, crop_fraction: float) -> torch.Tensor:
    """(C, H, W) uint8 → (C, size, size) uint8: bilinear, as ``steps.inference.pipeline.prepare_image``."""
    box = center_crop(image.shape[-1], image.shape[-2], size, crop_fraction)
    resized = F.resize(image, [box.height, box.width], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return resized[..., box.top : box.top + size, box.left : box.left + size]


def resize_and_place(image: torch.Tensor, placement: Placement) -> torch.Tensor:
    """(C, H, W) uint8 → (C, size, size) uint8 as ``placement`` says (``pad``: black around; any mode)."""
    height, width, size = placement.resized_height, placement.resized_width, placement.size
    resized = F.resize(image, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=True)
    canvas = torch.zeros((image.shape[0], size, size), dtype=image.dtype, device=image.device)
    top, left = max(placement.top, 0), max(placement.left, 0)
    rows, columns = min(size - top, height + min(placement.top, 0)), min(size - left, width + min(placement.left, 0))
    canvas[:, top : top + rows, left : left + columns] = resized[
        :, top - placement.top : top - placement.top + rows, left - placement.left : left - placement.left + columns
    ]
    return canvas


def resize_to_fit(image: torch.Tensor, box: int) -> torch.Tensor:
    """Fit within ``box`` x ``box``, never upscaling. Bicubic: the nearest antialiased tensor
    filter to the Pillow path's LANCZOS (``steps.imaging.codec.resize_to_fit``)."""
    width, height = fit_within(image.shape[-1], image.shape[-2], box)
    if (width, height) == (image.shape[-1], image.shape[-2]):
        return image
    return F.resize(image, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)
