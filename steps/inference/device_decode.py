"""The inference input pipeline with decoding on the model's device (``--decode gpu``).

    read + JPEG header (``threads`` I/O threads) → batched ``decode_jpeg`` on the device →
    antialiased resize + center-crop there → uint8 NHWC batch already on the device

A CPU task on the Pillow path spends nearly all its time decoding; here the CPU threads only
read bytes and scan headers. What the tensor decoder cannot take or refuses (PNG, WebP, CMYK,
12-bit, truncated or corrupt data) goes through the Pillow path, ``prepare_item``, on ``workers``
threads, so it is decoded, or rejected with the same reason, exactly as with ``--decode cpu``.

On CUDA the device work runs on a side stream, so it overlaps the model's kernels on the main
stream; each batch carries an event the consumer waits on (``Batch.wait``). On CPU the same code
runs on CPU tensors, which is how it is tested.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice

import torch

from steps.errors import RejectedInput
from steps.imaging.jpeg_header import JpegHeader, read_jpeg_header
from steps.imaging.placement import Placement, place
from steps.imaging.tensor_decode import RGB, decode_jpegs, device_takes
from steps.imaging.tensor_resize import resize_and_center_crop, resize_and_place
from steps.inference.pipeline import Batch, Prepared, Preprocessing, prepare_item, read_item
from steps.io.concurrency import map_bounded
from steps.io.storage import Storage

# Images per decode_jpeg call: bounds the full-size decoded pixels held on the device at once
# (64 12-MP photos are 2.3 GB) while keeping nvJPEG's batched decoder busy.
DECODE_SLICE = 64


@dataclass(frozen=True)
class Read:
    key: str
    data: bytes | RejectedInput
    header: JpegHeader | None  # None: the Pillow path decodes or rejects it


def read_with_header(source: Storage, key: str) -> Read:
    key, data = read_item(source, key)
    return Read(key, data, None if isinstance(data, RejectedInput) else read_jpeg_header(data))


class DeviceDecoder:
    """Turns groups of reads into batches on ``device``, with a Pillow pool for what it refuses."""

    def __init__(self, model: Preprocessing, device: torch.device, pillow: ThreadPoolExecutor) -> None:
        self.model = model
        self.device = device
        self.pillow = pillow
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def _pillow(self, read: Read) -> Future[Prepared]:
        return self.pillow.submit(prepare_item, read.key, read.data, self.model)

    def _on_device(self, reads: list[Read]) -> tuple[list[str], list[torch.Tensor], list[Placement], list[Read]]:
        """Keys, (size, size, 3) inputs and placements of what the device decoded, and the reads it refused."""
        keys, crops, placements, refused = [], [], [], []
        model = self.model
        for start in range(0, len(reads), DECODE_SLICE):
            part = reads[start : start + DECODE_SLICE]
            images = decode_jpegs([r.data for r in part], [r.header for r in part], self.device, RGB)
            for read, image in zip(part, images, strict=True):
                if image is None:
                    refused.append(read)
                    continue
                placement = place(image.shape[-1], image.shape[-2], model.input_size, model.resize, model.crop_fraction)
                if model.resize == "crop":
                    crop = resize_and_center_crop(image, model.input_size, model.crop_fraction)
                else:
                    crop = resize_and_place(image, placement)
                keys.append(read.key)
                crops.append(crop.permute(1, 2, 0))
                placements.append(placement)
        return keys, crops, placements, refused

    def __call__(self, group: Sequence[Read]) -> Iterator[Batch | Prepared]:
        """One batch of every image of ``group`` that decodes (either way), then each reject."""
        # Pillow starts on what the device cannot take before the device decodes the rest.
        pending = [self._pillow(r) for r in group if not device_takes(r.header, self.device)]
        with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
            keys, crops, placements, refused = self._on_device(
                [r for r in group if device_takes(r.header, self.device)]
            )
            pending += [self._pillow(r) for r in refused]
            rejects = []
            for future in pending:
                prepared = future.result()
                if prepared.pixels is None:
                    rejects.append(prepared)
                else:
                    keys.append(prepared.key)
                    crops.append(torch.tensor(prepared.pixels, device=self.device))
                    placements.append(prepared.placement)
            batch = Batch(keys, torch.stack(crops), self._record(), placements) if crops else None
        if batch is not None:
            yield batch
        yield from rejects

    def _record(self) -> torch.cuda.Event | None:
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event


def device_batches(
    source: Storage,
    keys: Sequence[str],
    decoder: DeviceDecoder,
    batch_size: int,
    threads: int,
) -> Iterator[Batch | Prepared]:
    """Batches of up to ``batch_size`` images decoded on the decoder's device; rejects pass through."""
    reads = map_bounded(lambda key: read_with_header(source, key), keys, threads)
    while group := list(islice(reads, batch_size)):
        yield from decoder(group)
