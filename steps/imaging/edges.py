"""Sobel edge maps."""

from __future__ import annotations

import numpy as np
from PIL import Image


def sobel_edges(image: Image.Image) -> Image.Image:
    """Sobel gradient magnitude of the grayscale image, clipped to 0-255 (8-bit L)."""
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    padded = np.pad(gray, 1, mode="edge")
    # Separable Sobel: smooth [1,2,1] across, difference [-1,0,1] along.
    smooth_rows = padded[:-2] + 2 * padded[1:-1] + padded[2:]
    smooth_cols = padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]
    gx = smooth_rows[:, 2:] - smooth_rows[:, :-2]
    gy = smooth_cols[2:] - smooth_cols[:-2]
    magnitude = np.sqrt(gx * gx + gy * gy)
    return Image.fromarray(np.clip(magnitude, 0, 255).astype(np.uint8), "L")
