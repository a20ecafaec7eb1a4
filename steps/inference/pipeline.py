"""The inference data path: reads, decoding and batching overlapped with the model.

The pipeline keeps the accelerator busy by overlapping every stage:

    read (``threads`` I/O threads) → decode + resize + center-crop (``workers`` threads; Pillow
    releases the GIL) → uint8 batches, in pinned memory on CUDA → a bounded queue of ready
    batches, filled by a background thread → model on CUDA (AMP, channels-last) or CPU.

While the model runs batch *n*, the producer thread reads and decodes batch *n+1..n+depth*, and
keeps going across chunk boundaries while a finished chunk is committed. Batches cross to the
device as uint8 NHWC (a quarter of the bytes of float32) and are normalized there, where it is
nearly free; the NHWC layout is exactly channels-last once viewed as NCHW.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from steps.errors import RejectedInput
from steps.imaging.codec import decode
from steps.io.concurrency import map_bounded
from steps.io.storage import Storage, read_input
from steps.models.loading import LoadedModel


def prepare_image(data: bytes, size: int, crop_fraction: float) -> np.ndarray:
    """Decode (at reduced JPEG scale when possible), resize, center-crop: ``size x size x 3`` uint8.

    The shorter side is resized to ``size / crop_fraction`` and the centre ``size`` square is
    kept: 0.875 is the ImageNet evaluation transform (256 → 224), 1.0 TrainFlow's (the whole
    centred square, as ``ImageOps.fit``).
    """
    side = round(size / crop_fraction)
    image = decode(data, max_side=side).image.convert("RGB")
    scale = side / min(image.size)
    width, height = max(side, round(image.width * scale)), max(side, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


@dataclass(frozen=True)
class Prepared:
    key: str
    pixels: np.ndarray | None  # None when rejected
    reason: str = ""


@dataclass(frozen=True)
class Batch:
    keys: list[str]
    pixels: torch.Tensor  # uint8, N x H x W x 3


@dataclass(frozen=True)
class ChunkEnd:
    """Every item of the chunk was emitted before this marker."""

    keys: Sequence[str]


def prepared_items(
    source: Storage, keys: Sequence[str], model: LoadedModel, threads: int, workers: int
) -> Iterator[Prepared]:
    """Read on ``threads`` I/O threads, decode on ``workers`` threads; completion order."""

    def read(key: str) -> tuple[str, bytes | RejectedInput]:
        try:
            return key, read_input(source, key)
        except RejectedInput as err:
            return key, err

    def prepare(item: tuple[str, bytes | RejectedInput]) -> Prepared:
        key, data = item
        try:
            if isinstance(data, RejectedInput):
                raise data
            return Prepared(key, prepare_image(data, model.input_size, model.crop_fraction))
        except RejectedInput as err:
            return Prepared(key, None, str(err))

    return map_bounded(prepare, map_bounded(read, keys, threads), workers)


def batched(items: Iterable[Prepared], batch_size: int, pin_memory: bool) -> Iterator[Batch | Prepared]:
    """Group good images into batches of ``batch_size`` (the last may be short); rejects pass through."""
    pending: list[Prepared] = []

    def collate() -> Batch:
        first = pending[0].pixels
        pixels = torch.empty((len(pending), *first.shape), dtype=torch.uint8, pin_memory=pin_memory)
        array = pixels.numpy()
        for row, item in enumerate(pending):
            array[row] = item.pixels
        return Batch([item.key for item in pending], pixels)

    for item in items:
        if item.pixels is None:
            yield item
            continue
        pending.append(item)
        if len(pending) == batch_size:
            yield collate()
            pending = []
    if pending:
        yield collate()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """The model on its device: uint8 NHWC batch in, top-k class indices and probabilities out."""

    def __init__(self, model: LoadedModel, device: torch.device, top_k: int) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        memory_format = torch.channels_last if self.cuda else torch.contiguous_format
        self.module = model.module.to(device=device, memory_format=memory_format).eval()
        self.mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(model.std, device=device).view(1, 3, 1, 1) * 255
        self.top_k = top_k
        self.seconds = 0.0  # time in transfer + model + top-k, i.e. what the accelerator is busy with
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        # NHWC viewed as NCHW is channels-last; .float() keeps that layout.
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.cuda):
            logits = self.module(x)
        probabilities = logits.float().softmax(dim=1)
        scores, indices = probabilities.topk(min(self.top_k, probabilities.shape[1]), dim=1)
        result = scores.cpu().numpy(), indices.cpu().numpy()
        self.seconds += time.perf_counter() - started
        return result
