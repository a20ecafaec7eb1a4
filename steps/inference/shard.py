"""One inference shard: the pipeline's predictions committed as exactly-once Parquet parts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from steps.inference.pipeline import Batch, ChunkEnd, Predictor, Prepared, batched, pick_device, prepared_items
from steps.inference.predictions import SCHEMA
from steps.io.concurrency import Prefetcher
from steps.io.storage import Storage
from steps.layout import PART_STEM, shard_directory
from steps.models.loading import LoadedModel, class_names_for
from steps.progress import Progress, ProgressCallback
from steps.sharding.ledger import ChunkLedger, ShardOutcome, run_chunked, shard_state


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
    on_progress: ProgressCallback | None = None,
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
            on_progress=on_progress,
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
