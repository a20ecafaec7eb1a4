"""One inference shard: the pipeline's predictions committed as exactly-once Parquet parts.

Each visible device (every GPU of a ``@resources(gpu=N)`` task, else the CPU) runs its own lane:
its own copy of the model, its own input stream and model thread, taking every N-th pending
chunk in turn. The task's main thread only commits: it takes the chunks' tables from the lanes
in plan order and hands them to ``run_chunked``, so exactly-once is the same with one device or
eight, and the next chunks are being predicted while one is written.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import cycle

import pyarrow as pa
import pyarrow.compute as pc
import torch

from steps.inference.files import INFER_FILES
from steps.inference.pipeline import (
    Batch,
    ChunkEnd,
    Prepared,
    Preprocessing,
    batched,
    decodes_on_device,
    prepared_items,
    visible_devices,
)
from steps.inference.tasks import ClassifyTask, InferTask, Runner
from steps.io.concurrency import Prefetcher
from steps.io.input_format import IMAGE_OBJECTS, InputFormat
from steps.io.storage import Storage
from steps.output.ledger import ShardOutcome, open_shard, run_chunked
from steps.progress import Progress, ProgressCallback


@dataclass(frozen=True)
class InferOutcome:
    outcome: ShardOutcome
    model_seconds: float
    device: str  # the devices used, comma-separated


@dataclass(frozen=True)
class LaneSettings:
    source: Storage
    batch_size: int
    threads: int
    workers: int
    prefetch_batches: int
    decode: str
    inputs: InputFormat = IMAGE_OBJECTS


def input_stream(
    settings: LaneSettings, model: Preprocessing, device: torch.device, chunks: Sequence[Sequence[str]]
) -> Iterator[Batch | Prepared | ChunkEnd]:
    """Every chunk's batches and rejects, then its ChunkEnd with the chunk's row keys; decoded on
    ``device`` or by Pillow. A chunk's inputs come from ``settings.inputs`` (objects, or a tar's images)."""
    batch_size, threads, workers = settings.batch_size, settings.threads, settings.workers
    inputs = settings.inputs.chunks(settings.source, chunks)
    if not decodes_on_device(settings.decode, device):
        for source, row_keys in inputs:
            items = prepared_items(source, row_keys, model, threads, workers)
            yield from batched(items, batch_size, pin_memory=device.type == "cuda")
            yield ChunkEnd(row_keys)
        return
    # Imported here: torchvision takes seconds to import, and every InferFlow step imports this module.
    from steps.inference.device_decode import DeviceDecoder, device_batches

    with ThreadPoolExecutor(workers, thread_name_prefix="spot-batch-pillow") as pillow:
        decoder = DeviceDecoder(model, device, pillow)
        for source, row_keys in inputs:
            yield from device_batches(source, row_keys, decoder, batch_size, threads)
            yield ChunkEnd(row_keys)


def lane_tables(
    settings: LaneSettings, task: InferTask, runner: Runner, chunks: Sequence[Sequence[str]]
) -> Iterator[pa.Table]:
    """One device's share of the shard: a table per chunk of ``chunks``, rows in the chunk's key order."""
    ready = Prefetcher(input_stream(settings, task.model, runner.device, chunks), settings.prefetch_batches)
    try:
        for _ in chunks:
            tables: list[pa.Table] = []
            rejects: list[Prepared] = []
            for item in ready:
                if isinstance(item, ChunkEnd):
                    end = item
                    break
                if isinstance(item, Prepared):
                    rejects.append(item)
                    continue
                item.wait()
                tables.append(runner(item))
            tables.append(task.rejected(rejects))
            table = pa.concat_tables(tables)
            # Rows in the chunk's row-key order (a tar chunk's rows are its members, known once read).
            yield table.take(pc.index_in(pa.array(end.keys, pa.string()), value_set=table.column("key")))
    finally:
        ready.close()


def infer_shard(
    *,
    name: str,
    keys: Sequence[str],
    source: Storage,
    target: Storage,
    task: InferTask,
    batch_size: int,
    chunk_size: int,
    threads: int,
    workers: int,
    prefetch_batches: int = 4,
    decode: str = "cpu",
    devices: Sequence[torch.device] | None = None,
    worker_processes: bool | None = None,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    inputs: InputFormat = IMAGE_OBJECTS,
    images: int | None = None,
) -> InferOutcome:
    """Predict every key of a shard into ``predictions/<name>/part-NNNNN.parquet``.

    Committed parts are skipped, a complete shard (manifest present) is skipped whole, and ``stop``
    ends the shard after the chunk in flight is committed (see ``steps.output.ledger.run_chunked``).
    ``decode`` is ``--decode`` (see ``decodes_on_device``); ``devices`` default to every visible one.
    ``inputs`` says what ``keys`` are (images, or tars: one chunk each); ``images``: the rows expected.
    ``worker_processes`` runs each device's lane in a process of its own (``steps.inference.lanes``);
    by default it does so for a classifier on two or more GPUs.
    """
    devices = list(devices or visible_devices())
    settings = LaneSettings(source, batch_size, threads, workers, prefetch_batches, decode, inputs)
    chunk_size = inputs.chunk_size(chunk_size)
    ledger = INFER_FILES.ledger(target, name, unit_of=inputs.unit_of)
    shard = open_shard(target, ledger, name, keys, chunk_size, images=images)
    pending = shard.pending()
    if worker_processes is None:
        # A python: model's factory may live in a file a spawned process cannot import: classifiers only.
        worker_processes = (
            isinstance(task, ClassifyTask) and len(devices) > 1 and all(device.type == "cuda" for device in devices)
        )
    if worker_processes:
        from steps.inference.lanes import ProcessLane

        lanes = [
            ProcessLane(settings, task, device, pending[lane :: len(devices)]) for lane, device in enumerate(devices)
        ]
        runners = []
    else:
        runners = task.runners(devices)
        lanes = [
            Prefetcher(lane_tables(settings, task, runner, pending[lane :: len(devices)]), depth=1)
            for lane, runner in enumerate(runners)
        ]
    turns = cycle(lanes)  # run_chunked asks for the pending chunks in plan order: chunk j is lane j % N's

    def process_chunk(chunk_keys: Sequence[str], progress: Progress) -> pa.Table:
        table = next(next(turns))
        if ledger.units(table.column("key").to_pylist()) != list(chunk_keys):
            raise RuntimeError(f"shard {name}: a lane produced a chunk out of plan order")
        progress.advance(table.num_rows)
        return table

    try:
        outcome = run_chunked(shard, process_chunk, stop=stop, on_progress=on_progress)
    finally:
        for lane in lanes:
            lane.close()
    busy = [lane.model_seconds for lane in lanes] if worker_processes else [r.seconds for r in runners]
    return InferOutcome(outcome, sum(busy), ",".join(str(d) for d in devices))
