"""Sobel edge maps of uint8 image tensors, on their device.

The same arithmetic as ``steps.imaging.edges.sobel_edges`` (Pillow's integer luma, edge padding,
separable float32 Sobel, clip, truncate to uint8), written as tensor slices, so on the same
pixels both give the same edge map, on CPU or CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def luma(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) uint8 → (H, W) int32 gray, as Pillow's ``convert("L")`` (ITU-R 601-2, fixed point)."""
    if image.shape[0] == 1:
        return image[0].to(torch.int32)
    rgb = image.to(torch.int32)
    return (rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16


def sobel_edges(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the gray image, clipped to 0-255: (1, H, W) uint8."""
    gray = luma(image).to(torch.float32)
    padded = F.pad(gray[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    smooth_rows = padded[:-2] + 2 * padded[1:-1] + padded[2:]
    smooth_cols = padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]
    gx = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    gy = smooth_cols[2:] - smooth_cols[:-2]
    magnitude = torch.sqrt(gx * gx + gy * gy)
    return magnitude.clamp(0, 255).to(torch.uint8)[None]
