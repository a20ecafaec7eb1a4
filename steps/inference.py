"""Batched inference over one shard, written as exactly-once Parquet chunks.

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

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image

from steps.errors import ConfigError, RejectedInput
from steps.imaging import decode
from steps.ledger import ChunkLedger, ShardOutcome, run_chunked, shard_state
from steps.model_loading import LoadedModel
from steps.predictions import PART_STEM, SCHEMA, Scores, score, shard_directory
from steps.preprocess import thumbnail_jpeg
from steps.progress import Progress
from steps.report import (
    Chart,
    Images,
    Report,
    ShardStats,
    Table,
    bar_chart_png,
    rejects_table,
    shard_table,
    summarize,
    throughput_chart,
    totals_table,
)
from steps.storage import Storage, map_bounded, read_input

T = TypeVar("T")
SAMPLE_IMAGES = 6


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


class Prefetcher(Generic[T]):
    """Iterate ``source`` on a background thread, keeping up to ``depth`` items ready.

    The thread starts on the first ``next()``; an exception in it is re-raised to the consumer;
    ``close()`` stops it even when the queue is full.
    """

    _DONE = object()

    def __init__(self, source: Iterable[T], depth: int) -> None:
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, item: object) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(err)
        finally:
            close = getattr(self._source, "close", None)  # a generator: shut its thread pools now
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="spot-batch-prefetch", daemon=True)
            self._thread.start()
        item = self._queue.get()
        if item is self._DONE:
            self._queue.put(item)  # stay exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()


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


def class_names_for(model: LoadedModel) -> list[str]:
    """The model's labels, checked against its real output width with one blank image (CPU)."""
    size = model.input_size
    try:
        with torch.inference_mode():
            logits = model.module(torch.zeros((1, 3, size, size)))
    except RuntimeError as err:
        logits = err
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        detail = str(logits).splitlines()[0][:160] if isinstance(logits, RuntimeError) else type(logits).__name__
        raise ConfigError(
            "--model",
            model.uri,
            f"a classifier mapping 1x3x{size}x{size} images to 1xN scores",
            f"export the model with that input size (or set input_size in its metadata); got {detail}",
        )
    outputs = logits.shape[1]
    if model.class_names and len(model.class_names) != outputs:
        raise ConfigError(
            "class names of",
            model.uri,
            f"{outputs} names, one per model output (got {len(model.class_names)})",
            "fix the classes file or pass the matching model",
        )
    return model.class_names or [str(i) for i in range(outputs)]


@dataclass(frozen=True)
class InferOutcome:
    outcome: ShardOutcome
    model_seconds: float
    device: str


def infer_shard(
    *,
    name: str,
    keys: Sequence[str],
    source: Storage,
    target: Storage,
    model: LoadedModel,
    batch_size: int,
    chunk_size: int,
    top_k: int,
    threads: int,
    workers: int,
    prefetch_batches: int = 4,
    device: torch.device | None = None,
    stop: threading.Event | None = None,
) -> InferOutcome:
    """Predict every key of a shard into ``predictions/<name>/part-NNNNN.parquet``.

    Committed parts are skipped, a complete shard (manifest present) is skipped whole, and ``stop``
    ends the shard after the chunk in flight is committed (see ``steps.ledger.run_chunked``).
    """
    device = device or pick_device()
    labels = class_names_for(model)
    predictor = Predictor(model, device, top_k)
    ledger = ChunkLedger(target, shard_directory(name), stem=PART_STEM)
    state = shard_state(target, ledger, name, keys, chunk_size)
    pending = state.pending(keys, chunk_size)

    def stream() -> Iterator[Batch | Prepared | ChunkEnd]:
        for chunk_keys in pending:
            items = prepared_items(source, chunk_keys, model, threads, workers)
            yield from batched(items, batch_size, pin_memory=predictor.cuda)
            yield ChunkEnd(chunk_keys)

    ready = Prefetcher(stream(), prefetch_batches)

    def process_chunk(chunk_keys: Sequence[str], progress: Progress) -> pa.Table:
        rows: dict[str, dict] = {}
        for item in ready:
            if isinstance(item, ChunkEnd):
                break
            if isinstance(item, Prepared):
                rows[item.key] = rejected_row(item)
                progress.advance()
                continue
            scores, indices = predictor(item.pixels)
            for key, row_scores, row_indices in zip(item.keys, scores, indices, strict=True):
                rows[key] = prediction_row(key, row_scores, [labels[i] for i in row_indices])
            progress.advance(len(item.keys))
        return pa.Table.from_pylist([rows[key] for key in chunk_keys], schema=SCHEMA)

    try:
        outcome = run_chunked(
            name=name,
            keys=keys,
            chunk_size=chunk_size,
            storage=target,
            ledger=ledger,
            process_chunk=process_chunk,
            stop=stop,
            state=state,
        )
    finally:
        ready.close()
    return InferOutcome(outcome, predictor.seconds, str(device))


def prediction_row(key: str, scores: np.ndarray, labels: list[str]) -> dict:
    return {
        "key": key,
        "status": "ok",
        "reason": "",
        "label": labels[0],
        "score": float(scores[0]),
        "top_k_labels": labels,
        "top_k_scores": [float(s) for s in scores],
    }


def rejected_row(item: Prepared) -> dict:
    return {
        "key": item.key,
        "status": "rejected",
        "reason": item.reason,
        "label": None,
        "score": None,
        "top_k_labels": [],
        "top_k_scores": [],
    }


# ---------------------------------------------------------------------------------------------
# Run summary and card


def inference_summary(
    stats: Sequence[ShardStats],
    model_seconds: Sequence[float],
    devices: Sequence[str],
    seconds: float,
    scores: dict | None,
) -> dict:
    """The ``summary`` artifact. ``gpu_seconds`` is what a GPU was held for (task time of shards
    processed on CUDA, what spot instances bill); ``model_seconds`` is how much of it the model
    was busy (transfer + forward + top-k), so their ratio is the GPU utilisation."""
    summary = {("predicted" if k == "processed" else k): v for k, v in summarize(stats, seconds).items()}
    gpu_seconds = sum(s.seconds for s, d in zip(stats, devices, strict=True) if not s.skipped and d.startswith("cuda"))
    summary.update(
        model_seconds=round(sum(model_seconds), 2),
        gpu_seconds=round(gpu_seconds, 2),
        devices=", ".join(sorted(set(devices))),
    )
    if scores is not None:
        summary.update(scores)
    return summary


def inference_headline(summary: dict, output: str) -> str:
    """One human sentence for the end of a run."""
    skipped = summary["skipped_shards"]
    reuse = f"; {skipped} of {summary['shards']} shards were already complete and skipped" if skipped else ""
    scored = (
        f", accuracy {summary['accuracy']:.1%} on {summary['labelled']} labelled images"
        if summary.get("accuracy") is not None
        else ""
    )
    return (
        f"Predicted {summary['images']} images in {summary['seconds']:.1f} s ({summary['images_per_second']:.1f} "
        f"images/s this run; model busy {summary['model_seconds']:.1f} s on {summary['devices'] or 'no device'}, "
        f"{summary['gpu_seconds']:.1f} GPU-seconds): {summary['predicted']} predicted, {summary['rejected']} "
        f"rejected{scored}, {summary['shards']} shards{reuse}. Output: {output}"
    )


@dataclass(frozen=True)
class Sample:
    """One prediction shown on the card."""

    key: str
    label: str
    score: float
    truth: str | None


def shard_scores(
    manifest: pa.Table, labels: pd.DataFrame | None, sample_keys: Sequence[str]
) -> tuple[Scores, list[Sample]]:
    """What the join needs from a shard's predictions, so it never loads all of them."""
    predictions = manifest.select(["key", "status", "label", "score"]).to_pandas(use_threads=False)
    truth = {} if labels is None else dict(zip(labels["key"], labels["truth"], strict=True))
    by_key = predictions.set_index("key")
    samples = [Sample(k, by_key.at[k, "label"], float(by_key.at[k, "score"]), truth.get(k)) for k in sample_keys]
    return score(predictions, labels), samples


def build_report(
    stats: Sequence[ShardStats],
    summary: dict,
    *,
    model: dict,
    scores: Scores,
    samples: Sequence[Sample],
    source: Storage,
    output: str,
) -> Report:
    """The card: totals, model, throughput, label histogram, sample predictions, shards, rejects."""
    report = Report("InferFlow", inference_headline(summary, output))
    report.sections.append(totals_table(summary))
    report.sections.append(Table("Model", ["field", "value"], [[k, v] for k, v in model.items()]))
    if any(not s.skipped for s in stats):
        report.sections.append(throughput_chart(stats))
    counts = scores.label_counts.most_common(40)
    if counts:
        chart = bar_chart_png([c[0] for c in counts], [c[1] for c in counts], "images", "images per predicted label")
        report.sections.append(Chart("Predicted labels", chart))
    if samples:
        report.sections.append(
            Images(
                "Sample predictions (predicted label, score; truth)",
                [
                    (f"{s.label} {s.score:.2f}; {s.truth or '?'}", thumbnail_jpeg(source.read(s.key)))
                    for s in samples[:SAMPLE_IMAGES]
                ],
            )
        )
    report.sections.append(shard_table(stats))
    report.sections.append(rejects_table(stats))
    return report
