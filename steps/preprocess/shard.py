"""Preprocess one shard: read each image, decode once, write a resized JPEG and an edge map.

Output layout under the output root:
    resized/<key stem>.jpg    edges/<key stem>.png
    _ledger/<shard>/chunk-NNNNN.parquet   committed chunks (one row per input key)
    _manifests/<shard>.parquet            the shard's completion marker, written last
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import pyarrow as pa

from steps.io.concurrency import map_bounded
from steps.io.input_format import IMAGE_OBJECTS, InputFormat
from steps.io.storage import Storage
from steps.output.layout import key_stem
from steps.output.ledger import ShardOutcome, open_shard, run_chunked
from steps.output.supersede import remove_derived
from steps.preprocess.files import PREPROCESS_FILES
from steps.preprocess.rows import preprocess_one
from steps.preprocess.webdataset import WebDatasetPacker
from steps.progress import Progress, ProgressCallback, log

if TYPE_CHECKING:
    import torch

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("input_bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("milliseconds", pa.float32()),
    ]
)


PREPROCESS_DEVICES = ("cpu", "cuda")


def tensor_device(choice: str) -> torch.device | None:
    """``--device``: ``cpu`` is None (the Pillow path on CPU threads); ``cuda`` the task's first
    GPU, or, where none is visible, the same tensor code on CPU tensors (said in the log)."""
    if choice == "cpu":
        return None
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    log("--device cuda: no CUDA device is visible to this task; the tensor path runs on CPU tensors")
    return torch.device("cpu")


def output_name_owners(keys: Sequence[str]) -> dict[str, str]:
    """Keys whose output name is already taken by an earlier key of the (sorted) shard → that key.

    ``a.jpg`` and ``a.png`` would both write ``resized/a.jpg``; the first keeps it, the second is
    rejected with a reason rather than silently overwriting it.
    """
    first: dict[str, str] = {}
    taken = {}
    for key in keys:
        owner = first.setdefault(key_stem(key), key)
        if owner != key:
            taken[key] = owner
    return taken


def preprocess_shard(
    *,
    name: str,
    keys: Sequence[str],
    source: Storage,
    target: Storage,
    size: int,
    threads: int,
    chunk_size: int = 256,
    device: torch.device | None = None,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    pack: WebDatasetPacker | None = None,
    inputs: InputFormat = IMAGE_OBJECTS,
    images: int | None = None,
) -> ShardOutcome:
    """Preprocess every key; ``device`` None is the Pillow path on CPU threads, a device the
    tensor path on it (``steps.preprocess.device``: CUDA, or CPU tensors where there is none).
    ``pack`` (``--format webdataset``) sees each chunk's rows after its outputs are written and
    before the chunk is committed, then finishes the shard's tars before it is marked complete.
    ``inputs`` says what ``keys`` are (images, or tars: one chunk each); ``images``: the rows expected."""
    taken = output_name_owners(keys)
    chunk_size = inputs.chunk_size(chunk_size)
    if device is not None:
        # Imported here: the Pillow path (and every PreprocessFlow task) stays free of torch.
        from steps.preprocess.device import device_rows

    def chunk_rows(chunk_keys: Sequence[str]) -> Iterator[dict]:
        # run_chunked asks for the pending chunks in plan order: the next readable one is this one.
        chunk_source, row_keys = next(readable)
        if ledger.units(row_keys) != list(chunk_keys):
            raise RuntimeError(f"shard {name}: inputs read out of plan order")
        if device is not None:
            return device_rows(chunk_source, target, row_keys, taken=taken, size=size, threads=threads, device=device)
        return map_bounded(lambda k: preprocess_one(chunk_source, target, k, size, taken.get(k)), row_keys, threads)

    def process_chunk(chunk_keys: Sequence[str], progress: Progress) -> pa.Table:
        rows = []
        for row in chunk_rows(chunk_keys):
            rows.append(row)
            progress.advance()
        rows.sort(key=lambda r: r["key"])
        table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        if pack is not None:
            pack(table)
        return table

    ledger = PREPROCESS_FILES.ledger(target, name, unit_of=inputs.unit_of)
    shard = open_shard(target, ledger, name, keys, chunk_size, images=images)
    readable = inputs.chunks(source, shard.pending())
    # Before any chunk runs: a removed key's files go only where no current key writes them.
    removed = remove_derived(target, shard.state.stale_keys, keys, PREPROCESS_FILES, threads, unit_of=inputs.unit_of)
    try:
        outcome = run_chunked(
            shard, process_chunk, stop=stop, on_progress=on_progress, finish=pack.finish if pack is not None else None
        )
    finally:
        readable.close()
    return replace(outcome, stale_files=outcome.stale_files + removed)
