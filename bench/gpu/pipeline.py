"""Pipeline rows: ``infer_shard`` end to end from files and from tar shards, and ``preprocess_shard``.

Each end-to-end row is timed from the first committed chunk to the last, so model construction,
the class-name probe and the pipeline fill stay outside the figure.
"""

from __future__ import annotations

import io
import os
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch

from gpu.inputs import jpeg_bytes, synthetic_photo, write_set, write_tars
from gpu.model import classifier
from gpu.settings import CheckSettings
from gpu.table import Rows, images_per_second
from steps.inference.shard import infer_shard
from steps.inference.tasks import ClassifyTask
from steps.io.input_format import IMAGE_OBJECTS, TAR_SHARDS, InputFormat
from steps.io.local_storage import LocalStorage
from steps.preprocess.shard import preprocess_shard


class TimedTarget(LocalStorage):
    """An output directory that notes when each prediction part (one chunk) is committed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.committed: list[float] = []

    def write(self, key: str, data: bytes) -> None:
        super().write(key, data)
        if "/part-" in key:
            self.committed.append(time.perf_counter())


def end_to_end(settings: CheckSettings, device: torch.device, scratch: Path, rows: Rows, reference: float) -> None:
    """ImageNet-size photos as JPEG files (in page cache) with ``--decode cpu`` and ``gpu``, then the
    same images as WebDataset tars on local disk, read by the project's tar input (one read per tar,
    members sliced from memory), with ``--decode gpu``."""
    rng = np.random.default_rng(0)
    unique = [jpeg_bytes(synthetic_photo(rng, 500, 375)) for _ in range(settings.unique)]
    photos = LocalStorage(scratch / "photos")
    photo_keys = write_set(photos.root, unique, settings.images)
    tars = LocalStorage(scratch / "tars")
    tar_keys = write_tars(tars.root, unique, settings.images, settings.tar_images)
    cores = len(os.sched_getaffinity(0))

    def seconds_after_first_chunk(
        source: LocalStorage, keys: list[str], inputs: InputFormat, decode: str, out: str
    ) -> float:
        output = TimedTarget(scratch / out)
        model = classifier(settings.architecture)  # built before the clock starts
        with redirect_stdout(io.StringIO()):
            infer_shard(
                name="bench",
                keys=keys,
                source=source,
                target=output,
                task=ClassifyTask(model, 5),
                batch_size=settings.batch_size,
                chunk_size=settings.chunk_size,
                threads=16,
                workers=cores,
                decode=decode,
                devices=[device],
                inputs=inputs,
            )
        return output.committed[-1] - output.committed[0]

    runs = (
        ("", photos, photo_keys, IMAGE_OBJECTS, "cpu", f"Pillow, {cores} threads", settings.chunk_size),
        ("", photos, photo_keys, IMAGE_OBJECTS, "gpu", f"decode_jpeg on {device.type}", settings.chunk_size),
        (" from tar shards", tars, tar_keys, TAR_SHARDS, "gpu", f"decode_jpeg on {device.type}", settings.tar_images),
    )
    for index, (what, source, keys, inputs, decode, how, first_chunk) in enumerate(runs):
        warm_keys = keys[: 2 * settings.chunk_size if inputs is IMAGE_OBJECTS else 2]
        seconds_after_first_chunk(source, warm_keys, inputs, decode, f"warm-{index}")  # cudnn autotuning, nvJPEG
        seconds = seconds_after_first_chunk(source, keys, inputs, decode, f"out-{index}")
        timed = settings.images - first_chunk
        rows.append(
            (
                f"end to end{what}: --decode {decode} ({how}), {timed:,} timed",
                images_per_second(timed / seconds),
                f"{timed / seconds / reference:.2f} of Predictor model-only",
            )
        )


def preprocess_rate(
    source: LocalStorage, keys: list[str], output: Path, threads: int, device: torch.device | None
) -> float:
    """images/s of ``preprocess_shard`` over ``keys`` (``device`` None: the CPU path), after a warm-up."""

    def shard(name: str, subset: list[str]) -> None:
        target = LocalStorage(output / name)
        preprocess_shard(name=name, keys=subset, source=source, target=target, size=256, threads=threads, device=device)

    with redirect_stdout(io.StringIO()):
        shard("warm", keys[:8])
        started = time.perf_counter()
        shard("bench", keys)
        return len(keys) / (time.perf_counter() - started)


def preprocessing(settings: CheckSettings, device: torch.device, scratch: Path, rows: Rows) -> None:
    """Camera-size JPEGs to ``--size 256``: the tensor path on ``device`` against the CPU path."""
    rng = np.random.default_rng(1)
    width, height = settings.camera
    photos = (synthetic_photo(rng, width, height, grain=6) for _ in range(settings.camera_unique))
    unique = [jpeg_bytes(photo, quality=92) for photo in photos]
    source = LocalStorage(scratch / "camera")
    keys = write_set(source.root, unique, settings.camera_images)
    cores = len(os.sched_getaffinity(0))
    on_cpu = preprocess_rate(source, keys, scratch / "pre-cpu", cores, None)
    on_device = preprocess_rate(source, keys, scratch / "pre-device", max(cores, 16), device)
    rows.append((f"preprocessing {width}x{height} JPEGs: CPU path, {cores} threads", images_per_second(on_cpu), ""))
    rows.append(
        (
            f"preprocessing {width}x{height} JPEGs: tensor path on {device.type}",
            images_per_second(on_device),
            f"{on_device / on_cpu:.1f}x the CPU path (target >= 10x)",
        )
    )
