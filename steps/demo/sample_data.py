"""Bundled sample data: realistic photographs named by their sha256, plus deliberately bad files.

    spot-batch sample-data DIR --count 240

Images are derived from the real photographs that scikit-image ships (astronaut, cat, coffee,
rocket, motorcycle, ...) with random crops, scales, flips, colour jitter and EXIF orientation
tags, so they exercise decoding like camera images do, and the source photo is a learnable label.
``DIR/labels.csv`` lists ``key,label`` for every good image. The bad files (zero-byte, truncated,
text) have no label; a CMYK JPEG and a PNG are valid inputs in unusual formats.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from steps.output.layout import LABELS_FILE

# Source photo → label. Colour photographs of clearly different scenes.
SOURCES = {
    "astronaut": "astronaut.png",
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "retina": "retina.jpg",
}


# EXIF orientation → the transpose that, applied by a viewer, shows the stored pixels upright.
_STORE_ROTATED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


@dataclass(frozen=True)
class SampleFile:
    key: str
    label: str | None  # None for deliberately bad files


def load_source(filename: str) -> Image.Image:
    import skimage.data

    path = Path(skimage.data.__file__).parent / filename
    return Image.open(path).convert("RGB")


def variant(photo: Image.Image, rng: random.Random) -> tuple[Image.Image, int]:
    """A random crop/scale/flip/jitter of ``photo`` and the EXIF orientation to store it with."""
    w, h = photo.size
    scale = rng.uniform(0.45, 1.0)
    cw, ch = int(w * scale), int(h * scale * rng.uniform(0.8, 1.2))
    ch = min(ch, h)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = photo.crop((left, top, left + cw, top + ch))
    long_side = rng.randint(224, 640)
    ratio = long_side / max(image.size)
    image = image.resize(
        (max(1, round(image.width * ratio)), max(1, round(image.height * ratio))), Image.Resampling.BICUBIC
    )
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.8, 1.2))
    orientation = rng.choice([1, 1, 1, 1, 6, 8, 3])
    if orientation != 1:
        # Store the pixels rotated and tag them, as a camera held sideways does.
        image = image.transpose(_STORE_ROTATED[orientation])
    return image, orientation


def encode_jpeg(image: Image.Image, quality: int, orientation: int = 1) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def sha_name(data: bytes, extension: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}.{extension}"


def generate(directory: Path, count: int, seed: int = 0) -> list[SampleFile]:
    """Write ``count`` good images plus the bad/unusual files; return what was written."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    photos = {label: load_source(name) for label, name in SOURCES.items()}
    labels = sorted(photos)
    written: list[SampleFile] = []

    def put(data: bytes, extension: str, label: str | None) -> None:
        key = sha_name(data, extension)
        (directory / key).write_bytes(data)
        written.append(SampleFile(key, label))

    for index in range(count):
        label = labels[index % len(labels)]
        image, orientation = variant(photos[label], rng)
        put(encode_jpeg(image, rng.randint(82, 95), orientation), "jpg", label)

    extra, _ = variant(photos["cat"], rng)
    cmyk = io.BytesIO()
    extra.convert("CMYK").save(cmyk, "JPEG", quality=90)
    put(cmyk.getvalue(), "jpg", "cat")
    rgba = extra.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full((extra.height, extra.width), 200, np.uint8)))
    png = io.BytesIO()
    rgba.save(png, "PNG")
    put(png.getvalue(), "png", "cat")
    gray, _ = variant(photos["coffee"], rng)
    put(encode_jpeg(gray.convert("L"), 90), "jpg", "coffee")

    good = encode_jpeg(extra, 90)
    put(b"", "jpg", None)  # zero-byte upload
    put(good[: len(good) // 2], "jpg", None)  # interrupted upload
    put(b"This is a README that ended up in the image bucket.\n", "jpg", None)

    with (directory / LABELS_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "label"])
        writer.writerows(sorted((s.key, s.label) for s in written if s.label is not None))
    return written
