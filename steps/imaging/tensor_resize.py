"""Resize uint8 image tensors on their device, with the geometry of the Pillow path.

Antialiased resampling (``antialias=True``) is what makes a tensor resize match Pillow's
filters when shrinking; without it a 4000 px photo shrunk to 256 px aliases badly. On CUDA
torchvision resizes uint8 through a float copy and rounds back; on CPU it has a native uint8
kernel. Both take (C, H, W) or (N, C, H, W).

CUDA's antialiased kernel keeps the filter taps of a tile of outputs in shared memory, which grows
with the downscale factor: past ~47x bicubic or ~94x bilinear it fails with "Too much shared
memory required" (pytorch#103589), e.g. panoramas at 256 px, or any image over ~6,000 px into a
64-px model. So a larger shrink first averages whole blocks of pixels (an integer ``avg_pool2d``,
itself a box antialias) and leaves the filter a factor it handles, on every device alike.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from steps.imaging.codec import center_crop, fit_within
from steps.imaging.placement import Placement

# Source pixels the filter may reach on each side of an output pixel. At 64 (129 taps an axis) the
# CUDA kernel needs ~34 KB of shared memory, within the 48 KB every NVIDIA GPU gives a block.
MAX_FILTER_SUPPORT = 64
_SUPPORT_PER_SCALE = {InterpolationMode.BILINEAR: 1, InterpolationMode.BICUBIC: 2}


def _block_mean(image: torch.Tensor, block_height: int, block_width: int) -> torch.Tensor:
    """The rounded mean of each ``block_height`` x ``block_width`` block (a partial last block is dropped)."""
    batch = image if image.dim() == 4 else image[None]
    pooled = torch.nn.functional.avg_pool2d(batch.float(), (block_height, block_width))
    pooled = pooled.round_().clamp_(0, 255).to(torch.uint8)
    return pooled if image.dim() == 4 else pooled[0]


def antialiased_resize(image: torch.Tensor, height: int, width: int, interpolation: InterpolationMode) -> torch.Tensor:
    """``F.resize(image, [height, width], antialias=True)``, for any downscale factor on any device."""
    largest_scale = MAX_FILTER_SUPPORT / _SUPPORT_PER_SCALE[interpolation]
    block_height = math.ceil(image.shape[-2] / height / largest_scale)
    block_width = math.ceil(image.shape[-1] / width / largest_scale)
    if block_height > 1 or block_width > 1:
        image = _block_mean(image, block_height, block_width)
    return F.resize(image, [height, width], interpolation=interpolation, antialias=True)


def resize_and_center_crop(image: torch.Tensor, size: int, crop_fraction: float) -> torch.Tensor:
    """(C, H, W) uint8 → (C, size, size) uint8: bilinear, as ``steps.inference.pipeline.prepare_image``."""
    box = center_crop(image.shape[-1], image.shape[-2], size, crop_fraction)
    resized = antialiased_resize(image, box.height, box.width, InterpolationMode.BILINEAR)
    return resized[..., box.top : box.top + size, box.left : box.left + size]


def resize_and_place(image: torch.Tensor, placement: Placement) -> torch.Tensor:
    """(C, H, W) uint8 → (C, size, size) uint8 as ``placement`` says (``pad``: black around; any mode)."""
    height, width, size = placement.resized_height, placement.resized_width, placement.size
    resized = antialiased_resize(image, height, width, InterpolationMode.BILINEAR)
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
    return antialiased_resize(image, height, width, InterpolationMode.BICUBIC)
