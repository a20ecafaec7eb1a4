"""The device check's sizes: ``FULL`` on a GPU (<= 8 minutes on an H100/H200), ``SMOKE`` anywhere,
tiny, to prove the script runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckSettings:
    smoke: bool
    architecture: str  # a torchvision classifier, random weights
    batch_size: int
    seconds: float  # per model-only row
    images: int  # end to end, as JPEG files and again as tars
    chunk_size: int  # images per committed chunk from files (a tar is one chunk)
    tar_images: int
    unique: int  # distinct JPEGs the images cycle through
    camera: tuple[int, int]  # preprocessing: camera-size JPEGs
    camera_unique: int
    camera_images: int


# End to end: 14 chunks of 4,096 images, 53,248 timed from files (from the first committed chunk to
# the last); tars of 1,000 images (one chunk each), 56,344 timed.
FULL = CheckSettings(
    smoke=False,
    architecture="resnet50",
    batch_size=256,
    seconds=3.0,
    images=57_344,
    chunk_size=4096,
    tar_images=1000,
    unique=256,
    camera=(3264, 2448),
    camera_unique=16,
    camera_images=512,
)
SMOKE = CheckSettings(
    smoke=True,
    architecture="resnet18",
    batch_size=4,
    seconds=0.2,
    images=16,
    chunk_size=4,
    tar_images=5,
    unique=8,
    camera=(640, 480),
    camera_unique=2,
    camera_images=8,
)
