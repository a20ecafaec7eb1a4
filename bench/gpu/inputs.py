"""The device check's images, made on the spot: synthetic photos as JPEG files and as WebDataset tars.

The device machine has no package registry and no scikit-image, so the photos are drawn here
(smooth colour fields, shapes and sensor-like noise: they compress like photos) rather than
taken from the sample data.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from steps.preprocess.webdataset import tar_member


def synthetic_photo(rng: np.random.Generator, width: int, height: int, grain: int = 6) -> Image.Image:
    """Smooth colour gradients, a few rectangles and per-pixel noise: compresses like a photo."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b, c = rng.uniform(0.002, 0.02, 3)
    pixels = np.stack(
        [127 + 100 * np.sin(a * x + b * y), 127 + 100 * np.cos(b * x - c * y), 127 + 100 * np.sin(c * (x + y))], -1
    )
    for _ in range(6):
        left, top = rng.integers(0, width - 2), rng.integers(0, height - 2)
        pixels[top : top + height // 5, left : left + width // 5] = rng.uniform(0, 255, 3)
    pixels += rng.integers(-grain, grain + 1, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int = 90, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, **save)
    return buffer.getvalue()


def write_set(directory: Path, unique: list[bytes], count: int) -> list[str]:
    """``count`` files cycling through ``unique`` (decoding cost does not depend on repeats); the
    repeats are hard links, so writing 50k+ files costs no more disk than the unique ones."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = [f"{index:06d}.jpg" for index in range(count)]
    for index, key in enumerate(keys):
        if index < len(unique):
            (directory / key).write_bytes(unique[index])
        else:
            os.link(directory / keys[index % len(unique)], directory / key)
    return keys


def write_tars(directory: Path, unique: list[bytes], count: int, per_tar: int) -> list[str]:
    """``count`` images cycling through ``unique``, in WebDataset tars of ``per_tar`` images
    (``NNNNNN.jpg`` members, as img2dataset writes them); returns the tars' keys."""
    directory.mkdir(parents=True, exist_ok=True)
    tars = []
    for first in range(0, count, per_tar):
        name = f"shard-{first // per_tar:05d}.tar"
        with tarfile.open(directory / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(first, min(first + per_tar, count)):
                tar_member(tar, f"{index:06d}.jpg", unique[index % len(unique)])
        tars.append(name)
    return tars
