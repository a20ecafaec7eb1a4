"""The inference data path: reads, decoding and batching overlapped with the model.

The pipeline keeps the accelerator busy by overlapping every stage:

    read (``threads`` I/O threads) → decode + resize + center-crop (``workers`` threads; Pillow
    releases the GIL) → uint8 batches, in pinned memory on CUDA → a bounded queue of ready
    batches, filled by a background thread → model on CUDA (AMP, channels-last) or CPU.

While the model runs batch *n*, the producer thread reads and decodes batch *n+1..n+depth*, and
keeps going across chunk boundaries while a finished chunk is committed. Batches cross to the
device as uint8 NHWC (a quarter of the bytes of float32) and are normalized there, where it is
nearly free; the NHWC layout is exactly channels-last once viewed as NCHW.

This is ``--decode cpu``; ``--decode gpu`` (``steps.inference.device_decode``) decodes on the
device instead and falls back to this module's Pillow path, ``prepare_item``, per image.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from steps.errors import RejectedInput
from steps.imaging.codec import center_crop, decode
from steps.imaging.placement import Placement, decode_side, place
from steps.io.concurrency import map_bounded
from steps.io.storage import Storage, read_input
from steps.models.loading import LoadedModel


class Preprocessing(Protocol):
    """What the input pipeline needs of a model (``LoadedModel``, ``CallableModel``)."""

    input_size: int
    resize: str  # steps.imaging.placement.RESIZE_MODES
    crop_fraction: float


def prepare_image(data: bytes, size: int, crop_fraction: float) -> np.ndarray:
    """Decode (at reduced JPEG scale when possible), resize, center-crop: ``size x size x 3`` uint8
    (see ``steps.imaging.codec.center_crop``)."""
    return prepare_placed(data, size, "crop", crop_fraction)[0]


def prepare_placed(data: bytes, size: int, resize: str, crop_fraction: float) -> tuple[np.ndarray, Placement]:
    """Any resize mode of ``steps.imaging.placement``: ``size x size x 3`` uint8, and where the
    original landed. Bilinear from the reduced-size decode; ``pad`` fills with black."""
    decoded = decode(data, max_side=decode_side(size, resize, crop_fraction))
    image = decoded.image.convert("RGB")
    if resize == "crop":
        box = center_crop(image.width, image.height, size, crop_fraction)
        placement = Placement(decoded.width, decoded.height, box.width, box.height, -box.left, -box.top, size)
    else:
        placement = place(decoded.width, decoded.height, size, resize, crop_fraction)
    image = image.resize(
        (placement.resized_width, placement.resized_height), Image.Resampling.BILINEAR, reducing_gap=2.0
    )
    if resize == "crop":
        return np.asarray(
            image.crop((-placement.left, -placement.top, size - placement.left, size - placement.top))
        ), placement
    canvas = Image.new("RGB", (size, size))
    canvas.paste(image, (placement.left, placement.top))
    return np.asarray(canvas), placement


@dataclass(frozen=True)
class Prepared:
    key: str
    pixels: np.ndarray | None  # None when rejected
    reason: str = ""
    placement: Placement | None = None  # where the original landed in ``pixels``


@dataclass(frozen=True)
class Batch:
    keys: list[str]
    pixels: torch.Tensor  # uint8, N x H x W x 3; on the CPU, or on the model's device (--decode gpu)
    ready: torch.cuda.Event | None = None  # recorded on the side stream that made ``pixels`` on CUDA
    placements: list[Placement] | None = None  # per image: where its original landed in ``pixels``

    def wait(self) -> None:
        """Order the current CUDA stream after the work that made ``pixels`` (no-op elsewhere)."""
        if self.ready is not None:
            stream = torch.cuda.current_stream(self.pixels.device)
            stream.wait_event(self.ready)
            self.pixels.record_stream(stream)  # the allocator must not reuse it while this stream reads it


@dataclass(frozen=True)
class ChunkEnd:
    """Every item of the chunk was emitted before this marker."""

    keys: Sequence[str]


def read_item(source: Storage, key: str) -> tuple[str, bytes | RejectedInput]:
    try:
        return key, read_input(source, key)
    except RejectedInput as err:
        return key, err


def prepare_item(key: str, data: bytes | RejectedInput, model: Preprocessing) -> Prepared:
    """The Pillow path for one image: its pixels, or the reason it is rejected."""
    try:
        if isinstance(data, RejectedInput):
            raise data
        pixels, placement = prepare_placed(data, model.input_size, model.resize, model.crop_fraction)
        return Prepared(key, pixels, placement=placement)
    except RejectedInput as err:
        return Prepared(key, None, str(err))


def prepared_items(
    source: Storage, keys: Sequence[str], model: Preprocessing, threads: int, workers: int
) -> Iterator[Prepared]:
    """Read on ``threads`` I/O threads, decode on ``workers`` threads; completion order."""
    reads = map_bounded(lambda key: read_item(source, key), keys, threads)
    return map_bounded(lambda item: prepare_item(*item, model), reads, workers)


def batched(items: Iterable[Prepared], batch_size: int, pin_memory: bool) -> Iterator[Batch | Prepared]:
    """Group good images into batches of ``batch_size`` (the last may be short); rejects pass through."""
    pending: list[Prepared] = []

    def collate() -> Batch:
        first = pending[0].pixels
        pixels = torch.empty((len(pending), *first.shape), dtype=torch.uint8, pin_memory=pin_memory)
        array = pixels.numpy()
        for row, item in enumerate(pending):
            array[row] = item.pixels
        return Batch([item.key for item in pending], pixels, placements=[item.placement for item in pending])

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


DECODE_CHOICES = ("cpu", "gpu", "auto")


def visible_devices() -> list[torch.device]:
    """Every GPU this task may use (``@resources(gpu=N)`` makes N visible), else the CPU."""
    if torch.cuda.is_available():
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return [torch.device("cpu")]


def first_device() -> torch.device:
    """Where a task loads its model first: the first lane's device."""
    return visible_devices()[0]


def decodes_on_device(decode: str, device: torch.device) -> bool:
    """``--decode``: ``cpu`` decodes with Pillow on CPU threads; ``gpu`` with torchvision on the
    model's device (CPU tensors where there is no GPU: the same code); ``auto`` is ``gpu`` on CUDA."""
    if decode not in DECODE_CHOICES:
        raise ValueError(f"decode must be one of {DECODE_CHOICES}, not {decode!r}")
    return decode == "gpu" or (decode == "auto" and device.type == "cuda")


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
        # bf16 keeps fp32's range (no overflow in logits) where the GPU has it (Ampere and later).
        self.amp_dtype = torch.bfloat16 if self.cuda and torch.cuda.is_bf16_supported() else torch.float16
        self.seconds = 0.0  # time in transfer + model + top-k, i.e. what the accelerator is busy with
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        # NHWC viewed as NCHW is channels-last; .float() keeps that layout.
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cuda):
            logits = self.module(x)
        probabilities = logits.float().softmax(dim=1)
        scores, indices = probabilities.topk(min(self.top_k, probabilities.shape[1]), dim=1)
        result = scores.cpu().numpy(), indices.cpu().numpy()
        self.seconds += time.perf_counter() - started
        return result
