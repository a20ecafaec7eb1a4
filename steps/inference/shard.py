"""One inference shard: the pipeline's predictions committed as exactly-once Parquet parts.

Each visible device (every GPU of a ``@resources(gpu=N)`` task, else the CPU) runs its own lane:
its own copy of the model, its own input stream and model thread, taking every N-th pending
chunk in turn. The task's main thread only commits: it takes the chunks' tables from the lanes
in plan order and hands them to ``run_chunked``, so exactly-once is the same with one device or
eight, and the next chunks are being predicted while one is written.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import cycle

import numpy as np
import pyarrow as pa
import torch

from steps.inference.pipeline import (
    Batch,
    ChunkEnd,
    Predictor,
    Prepared,
    batched,
    decodes_on_device,
    prepared_items,
    visible_devices,
)
from steps.inference.predictions import SCHEMA
from steps.io.concurrency import Prefetcher
from steps.io.storage import Storage
from steps.models.loading import LoadedModel, class_names_for
from steps.output.layout import PART_STEM, shard_directory
from steps.output.ledger import ShardOutcome, run_chunked, shard_state
from steps.output.supersede import ShardFiles
from steps.progress import Progress, ProgressCallback


def no_derived_files(key: str) -> tuple[str, ...]:
    """Predictions live only in the shard's parts: a removed key leaves no other file behind."""
    return ()


INFER_FILES = ShardFiles(chunk_directory=shard_directory, derived=no_derived_files, chunk_stem=PART_STEM)


@dataclass(frozen=True)
class InferOutcome:
    outcome: ShardOutcome
    model_seconds: float
    device: str  # the devices used, comma-separated


@dataclass(frozen=True)
class LaneSettings:
    source: Storage
    labels: list[str]
    batch_size: int
    threads: int
    workers: int
    prefetch_batches: int
    decode: str


def input_stream(
    settings: LaneSettings, model: LoadedModel, device: torch.device, chunks: Sequence[Sequence[str]]
) -> Iterator[Batch | Prepared | ChunkEnd]:
    """Every chunk's batches and rejects, then its ChunkEnd; decoded on ``device`` or by Pillow."""
    source, batch_size, threads, workers = settings.source, settings.batch_size, settings.threads, settings.workers
    if not decodes_on_device(settings.decode, device):
        for chunk_keys in chunks:
            items = prepared_items(source, chunk_keys, model, threads, workers)
            yield from batched(items, batch_size, pin_memory=device.type == "cuda")
            yield ChunkEnd(chunk_keys)
        return
    # Imported here: torchvision takes seconds to import, and every InferFlow step imports this module.
    from steps.inference.device_decode import DeviceDecoder, device_batches

    with ThreadPoolExecutor(workers, thread_name_prefix="spot-batch-pillow") as pillow:
        decoder = DeviceDecoder(model, device, pillow)
        for chunk_keys in chunks:
            yield from device_batches(source, chunk_keys, decoder, batch_size, threads)
            yield ChunkEnd(chunk_keys)


def lane_tables(
    settings: LaneSettings, model: LoadedModel, predictor: Predictor, chunks: Sequence[Sequence[str]]
) -> Iterator[pa.Table]:
    """One device's share of the shard: a table per chunk of ``chunks``, in order."""
    ready = Prefetcher(input_stream(settings, model, predictor.device, chunks), settings.prefetch_batches)
    try:
        for chunk_keys in chunks:
            rows: dict[str, dict] = {}
            for item in ready:
                if isinstance(item, ChunkEnd):
                    break
                if isinstance(item, Prepared):
                    rows[item.key] = rejected_row(item)
                    continue
                item.wait()
                scores, indices = predictor(item.pixels)
                for key, row_scores, row_indices in zip(item.keys, scores, indices, strict=True):
                    rows[key] = prediction_row(key, row_scores, [settings.labels[i] for i in row_indices])
            yield pa.Table.from_pylist([rows[key] for key in chunk_keys], schema=SCHEMA)
    finally:
        ready.close()


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
    decode: str = "cpu",
    devices: Sequence[torch.device] | None = None,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> InferOutcome:
    """Predict every key of a shard into ``predictions/<name>/part-NNNNN.parquet``.

    Committed parts are skipped, a complete shard (manifest present) is skipped whole, and ``stop``
    ends the shard after the chunk in flight is committed (see ``steps.output.ledger.run_chunked``).
    ``decode`` is ``--decode`` (see ``decodes_on_device``); ``devices`` default to every visible one.
    """
    devices = list(devices or visible_devices())
    settings = LaneSettings(source, class_names_for(model), batch_size, threads, workers, prefetch_batches, decode)
    # Predictor moves its module to its device: every lane after the first gets its own copy.
    models = [model] + [replace(model, module=copy.deepcopy(model.module)) for _ in devices[1:]]
    predictors = [Predictor(m, device, top_k) for m, device in zip(models, devices, strict=True)]
    ledger = INFER_FILES.ledger(target, name)
    state = shard_state(target, ledger, name, keys, chunk_size)
    pending = state.pending(keys, chunk_size)
    lanes = [
        Prefetcher(lane_tables(settings, m, predictor, pending[lane :: len(devices)]), depth=1)
        for lane, (m, predictor) in enumerate(zip(models, predictors, strict=True))
    ]
    turns = cycle(lanes)  # run_chunked asks for the pending chunks in plan order: chunk j is lane j % N's

    def process_chunk(chunk_keys: Sequence[str], progress: Progress) -> pa.Table:
        table = next(next(turns))
        if table.column("key").to_pylist() != list(chunk_keys):
            raise RuntimeError(f"shard {name}: a lane produced a chunk out of plan order")
        progress.advance(table.num_rows)
        return table

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
            on_progress=on_progress,
        )
    finally:
        for lane in lanes:
            lane.close()
    return InferOutcome(outcome, sum(p.seconds for p in predictors), ",".join(str(d) for d in devices))


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
