"""Shared helpers for the bench scripts: machine info, timing, tables, test images, loopback S3.

The scripts are run directly (``.venv/bin/python bench/preprocess.py``), so they import this
module as ``common``. They run from a checkout, whose root this module puts on ``sys.path`` so the
benches share the tests' loopback-only environment (``tests/support/offline.py``).
"""

from __future__ import annotations

import io
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from steps.demo.sample_data import SOURCES, load_source
from tests.support.offline import LOOPBACK_ONLY_ENV


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the host's total)."""
    return len(os.sched_getaffinity(0))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_machine_info(title: str) -> None:
    """What the figures were measured on; printed first by every bench."""
    jpeg = f"libjpeg-turbo {features.version('jpg')}" if features.check_feature("libjpeg_turbo") else "libjpeg"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"== {title}")
    print(f"cpu:      {cpu_model()}, {usable_cores()} usable cores ({os.cpu_count()} logical), load avg {load}")
    print(f"python:   {platform.python_version()} on {platform.system()} {platform.release()}")
    print(
        f"packages: Pillow {_version('pillow')} ({jpeg}), numpy {_version('numpy')}, torch {_version('torch')}, "
        f"torchvision {_version('torchvision')}"
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (pastes straight into docs/performance.md)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row, texts in zip(rows, cells, strict=True):
        aligned = (t.ljust(w) if isinstance(v, str) else t.rjust(w) for v, t, w in zip(row, texts, widths, strict=True))
        print("| " + " | ".join(aligned) + " |")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def best_seconds(
    runs: Sequence[Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """The fastest of ``repeats`` timed calls of each of ``runs``, taken in turns (a, b, a, b, ...)
    so a burst of other load on a shared machine cannot favour one of them; load only adds time.
    ``clock``: wall time by default; ``time.process_time`` counts this process's CPU (all its threads).
    """
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for index, run in enumerate(runs):
            started = clock()
            run()
            best[index] = min(best[index], clock() - started)
    return best


def camera_jpegs(count: int, grain: int = 6, min_mp: float = 2.0, max_mp: float = 12.0, seed: int = 0) -> list[bytes]:
    """``count`` camera-size JPEGs (``min_mp``-``max_mp`` megapixels, 4:3, either orientation).

    Made from the sample-data source photos (``steps.demo.sample_data.SOURCES``) upscaled with bicubic
    filtering, plus uniform per-pixel noise of +-``grain`` levels like a sensor's: a plain upscale (``grain``
    0) compresses several times better than a camera image, and its entropy decoding, which no
    reduced-size decode can skip, is correspondingly cheaper.
    """
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    photos = [load_source(name) for name in SOURCES.values()]
    images = []
    for index in range(count):
        megapixels = rng.uniform(min_mp, max_mp)
        long_side = round((megapixels * 1e6 * 4 / 3) ** 0.5)
        short_side = round(long_side * 3 / 4)
        size = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
        big = np.asarray(photos[index % len(photos)].resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
        if grain:
            big = big + noise.integers(-grain, grain + 1, size=big.shape, dtype=np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92)
        images.append(buffer.getvalue())
    return images


# Held out from tuning: none of these photos is in ``SOURCES`` (what ``camera_jpegs`` and the
# sample data use), and the noise, quality, subsampling and orientation are drawn differently.
HELD_OUT_PHOTOS = ("hubble_deep_field.jpg", "ihc.png", "motorcycle_right.png", "color.png")
HELD_OUT_SEED = 2025


def held_out_camera_jpegs(count: int, mean_mp: float = 8.7, seed: int = HELD_OUT_SEED) -> list[bytes]:
    """``count`` camera-size JPEGs that the preprocessing code was not tuned on, deterministic per ``seed``.

    Like a camera's files: ``mean_mp`` megapixels on average (uniform over +-43%, i.e. 5-12.4 MP
    at 8.7, evenly spread), 4:3 (phones) or 3:2 (system cameras), quality 85-95, chroma 4:2:0 or 4:2:2, a third
    stored sideways with EXIF orientation 6 or 8. The noise is a sensor's: Gaussian with variance
    read^2 + gain x signal (shot noise; read noise and gain, i.e. ISO, drawn per image), mostly
    shared by the three channels (luma) with a smaller per-channel part (chroma), added after a
    bicubic upscale of a random crop of one of ``HELD_OUT_PHOTOS``.
    """
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    photos = [load_source(name) for name in HELD_OUT_PHOTOS]
    # Gaussian noise from random bytes through a quantile table: ~10x cheaper than standard_normal
    # in float32 on 10^8 values per set, and 256 levels are plenty to set a JPEG's entropy.
    gaussian = np.array([NormalDist().inv_cdf((q + 0.5) / 256) for q in range(256)], dtype=np.float32)
    images = []
    # Evenly spread sizes in a shuffled order: the mean is ``mean_mp`` for any ``count``.
    sizes = [mean_mp * (0.57 + 0.86 * (i + 0.5) / count) for i in range(count)]
    rng.shuffle(sizes)
    for index, megapixels in enumerate(sizes):
        aspect = rng.choice((4 / 3, 3 / 2))
        long_side = round((megapixels * 1e6 * aspect) ** 0.5)
        size = (long_side, round(long_side / aspect))
        photo = photos[index % len(photos)]
        scale = rng.uniform(0.7, 1.0)  # a random crop, so no two files share their pixels
        crop_w, crop_h = round(photo.width * scale), round(photo.height * scale)
        left, top = rng.randint(0, photo.width - crop_w), rng.randint(0, photo.height - crop_h)
        pixels = np.asarray(photo.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.BICUBIC))
        read, gain = rng.uniform(1.0, 2.5), rng.uniform(0.02, 0.12)
        # Per level of the green channel (16 steps) x random byte: that level's sigma x the byte's
        # Gaussian quantile, looked up flat (one gather per pixel and channel).
        sigma = np.sqrt(read * read + gain * (np.arange(16, dtype=np.float32) * 16 + 8))
        luma_table = np.round(0.9 * sigma[:, None] * gaussian).astype(np.int8).ravel()
        chroma_table = np.round(0.45 * sigma[:, None] * gaussian).astype(np.int8).ravel()
        level = (pixels[..., 1] >> 4).astype(np.uint16) << 8
        height, width = level.shape
        luma = np.take(luma_table, level | np.frombuffer(noise.bytes(height * width), np.uint8).reshape(height, width))
        chroma_bytes = np.frombuffer(noise.bytes(pixels.size), np.uint8).reshape(pixels.shape)
        noisy = pixels + np.take(chroma_table, level[..., None] | chroma_bytes).astype(np.int16)
        noisy += luma[..., None]
        image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        orientation = rng.choice((1, 1, 1, 1, 6, 8))
        if orientation != 1:  # stored rotated and tagged, as a camera held sideways writes it
            image = image.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        subsampling = rng.choice(("4:2:0", "4:2:2"))
        image.save(buffer, "JPEG", quality=rng.randint(85, 95), subsampling=subsampling, exif=exif.tobytes())
        images.append(buffer.getvalue())
    return images


def megapixels(data: bytes) -> float:
    with Image.open(io.BytesIO(data)) as image:
        return image.width * image.height / 1e6


@contextmanager
def s3_server(latency_ms: float = 0.0) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 in its own process (see ``bench/s3server.py``); yields its endpoint.

    Its own process, so the server's Python does not compete for the bench's GIL, as a real
    S3 endpoint would not.
    """
    script = Path(__file__).with_name("s3server.py")
    env = {**os.environ, **LOOPBACK_ONLY_ENV}
    process = subprocess.Popen(
        [sys.executable, str(script), "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        if not endpoint.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"S3 server did not start (said {endpoint!r})")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)
