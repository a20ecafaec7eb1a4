"""Preprocessing on a device (``--device cuda``): decode, resize, edges and JPEG encode there.

    read + JPEG header (``threads`` I/O threads) → per batch on the device: batched decode_jpeg,
    antialiased resize, Sobel edges, batched encode_jpeg → on CPU threads: PNG encode of the
    edge map (no device PNG encoder exists), writes, manifest rows

The device stage runs on a background thread (``Prefetcher``), so batch *n+1* is on the device
while the CPU threads encode and write batch *n*. Whatever the tensor decoder cannot take or
refuses goes through the Pillow path (``preprocess_data``) on the CPU threads, so it is written,
or rejected with the same reason, exactly as with ``--device cpu``. On CPU tensors the same code
runs, which is how it is tested; the outputs are the Pillow path's within a tested tolerance
(bicubic instead of LANCZOS resampling, a full-size rather than a reduced-size decode).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, islice

import numpy as np
import torch
from PIL import Image
from torchvision.io import encode_jpeg

from steps.errors import RejectedInput
from steps.imaging.codec import JPEG_QUALITY, encode
from steps.imaging.jpeg_header import JpegHeader, read_jpeg_header
from steps.imaging.tensor_decode import AS_STORED, decode_jpegs, device_takes
from steps.imaging.tensor_edges import sobel_edges
from steps.imaging.tensor_resize import resize_to_fit
from steps.io.concurrency import Prefetcher, map_bounded
from steps.io.storage import Storage, read_input
from steps.preprocess.rows import preprocess_data, rejected_row, result_row, taken_reason, write_outputs

# Images per device batch: enough for nvJPEG's batched decoder, few enough that the full-size
# decoded pixels of camera photos (36 MB each at 12 MP) stay small next to the device's memory.
DEVICE_BATCH = 32


@dataclass(frozen=True)
class Fetched:
    """One key after reading: its bytes and header, or why it is rejected before decoding."""

    key: str
    started: float
    data: bytes | None = None
    header: JpegHeader | None = None  # None: the Pillow path decodes or rejects it
    reason: str = ""


@dataclass(frozen=True)
class MadeOnDevice:
    key: str
    started: float
    input_bytes: int
    width: int
    height: int
    resized: bytes | np.ndarray  # a JPEG encoded on the device, or gray pixels (H x W) for a CPU thread
    edges: np.ndarray  # uint8 H x W


def fetch(source: Storage, key: str, taken_by: str | None) -> Fetched:
    started = time.perf_counter()
    if taken_by:
        return Fetched(key, started, reason=taken_reason(key, taken_by))
    try:
        data = read_input(source, key)
    except RejectedInput as err:
        return Fetched(key, started, reason=str(err))
    return Fetched(key, started, data, read_jpeg_header(data))


def on_device(group: Sequence[Fetched], size: int, device: torch.device) -> list[MadeOnDevice | Fetched]:
    """Outputs made on ``device`` for what it decodes; the other reads, for the Pillow path."""
    jpegs = [f for f in group if device_takes(f.header, device)]
    images = decode_jpegs([f.data for f in jpegs], [f.header for f in jpegs], device, AS_STORED)
    left = [f for f in group if not device_takes(f.header, device)]
    left += [f for f, image in zip(jpegs, images, strict=True) if image is None]
    decoded = [(f, image) for f, image in zip(jpegs, images, strict=True) if image is not None]
    if not decoded:
        return left
    resized = [resize_to_fit(image, size).contiguous() for _, image in decoded]
    edges = [sobel_edges(image) for image in resized]
    # The device encoder takes three channels only (CUDA's refuses one), so gray images, which
    # are rare, go back as pixels and are encoded as gray on a CPU thread, as the Pillow path does.
    colour = [image for image in resized if image.shape[0] == 3]
    encoded = iter(encode_jpeg(colour, quality=JPEG_QUALITY) if colour else [])
    # One copy back for all edge maps, not one synchronising copy per image.
    flat = torch.cat([e.flatten() for e in edges]).cpu().numpy()
    offsets = np.cumsum([0] + [e.numel() for e in edges])
    made: list[MadeOnDevice | Fetched] = []
    for index, ((fetched, _), image) in enumerate(zip(decoded, resized, strict=True)):
        width, height = fetched.header.upright_size
        edge_map = flat[offsets[index] : offsets[index + 1]].reshape(image.shape[-2:])
        output = next(encoded).cpu().numpy().tobytes() if image.shape[0] == 3 else image[0].cpu().numpy()
        made.append(MadeOnDevice(fetched.key, fetched.started, len(fetched.data), width, height, output, edge_map))
    return made + left


def finish(target: Storage, item: MadeOnDevice | Fetched, size: int) -> dict:
    """On a CPU thread: write a device result, or run the Pillow path; the manifest row."""
    if isinstance(item, MadeOnDevice):
        resized = (
            item.resized if isinstance(item.resized, bytes) else encode(Image.fromarray(item.resized, "L"), "JPEG")
        )
        write_outputs(target, item.key, resized, encode(Image.fromarray(item.edges, "L"), "PNG"))
        return result_row(item.key, item.started, input_bytes=item.input_bytes, width=item.width, height=item.height)
    if item.data is None:
        return rejected_row(item.key, item.reason, item.started)
    return preprocess_data(target, item.key, item.data, size, item.started)


def device_rows(
    source: Storage,
    target: Storage,
    keys: Sequence[str],
    *,
    taken: Mapping[str, str],
    size: int,
    threads: int,
    device: torch.device,
) -> Iterator[dict]:
    """Every key's manifest row (completion order), its outputs written, decoded on ``device``."""
    fetched = map_bounded(lambda key: fetch(source, key, taken.get(key)), keys, threads)

    def device_stage() -> Iterator[list[MadeOnDevice | Fetched]]:
        while group := list(islice(fetched, DEVICE_BATCH)):
            yield on_device(group, size, device)

    made = Prefetcher(device_stage(), depth=2)
    try:
        items: Iterable[MadeOnDevice | Fetched] = chain.from_iterable(made)
        yield from map_bounded(lambda item: finish(target, item, size), items, threads)
    finally:
        made.close()
