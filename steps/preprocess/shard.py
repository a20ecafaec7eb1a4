"""Preprocess one shard: read each image, decode once, write a resized JPEG and an edge map.

Output layout under the output root:
    resized/<key stem>.jpg    edges/<key stem>.png
    _ledger/<shard>/chunk-NNNNN.parquet   committed chunks (one row per input key)
    _manifests/<shard>.parquet            the shard's completion marker, written last
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pyarrow as pa

from steps.errors import RejectedInput
from steps.io.concurrency import map_bounded
from steps.io.storage import Storage, read_input
from steps.layout import edges_key, key_stem, ledger_directory, resized_key
from steps.preprocess.image import preprocess_image
from steps.progress import Progress
from steps.sharding.ledger import ChunkLedger, ShardOutcome, run_chunked

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


def preprocess_one(source: Storage, target: Storage, key: str, size: int, taken_by: str | None = None) -> dict:
    started = time.perf_counter()
    row = {"key": key, "status": "ok", "reason": "", "input_bytes": 0, "width": 0, "height": 0}
    try:
        if taken_by:
            raise RejectedInput(f"output name {resized_key(key)} is taken by {taken_by}; rename one of the two")
        data = read_input(source, key)
        row["input_bytes"] = len(data)
        result = preprocess_image(data, size)
    except RejectedInput as err:
        row.update(status="rejected", reason=str(err))
    else:
        target.write(resized_key(key), result.resized_jpeg)
        target.write(edges_key(key), result.edges_png)
        row.update(width=result.width, height=result.height)
    row["milliseconds"] = (time.perf_counter() - started) * 1000
    return row


def preprocess_shard(
    *,
    name: str,
    keys: Sequence[str],
    source: Storage,
    target: Storage,
    size: int,
    threads: int,
    chunk_size: int = 256,
    stop: threading.Event | None = None,
    pack: Callable[[pa.Table], object] | None = None,
) -> ShardOutcome:
    """``pack`` (e.g. the WebDataset packer) sees each chunk's rows after its outputs are written
    and before the chunk is committed."""
    taken = output_name_owners(keys)

    def process_chunk(chunk_keys: Sequence[str], progress: Progress) -> pa.Table:
        rows = []
        for row in map_bounded(lambda k: preprocess_one(source, target, k, size, taken.get(k)), chunk_keys, threads):
            rows.append(row)
            progress.advance()
        rows.sort(key=lambda r: r["key"])
        table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        if pack is not None:
            pack(table)
        return table

    ledger = ChunkLedger(target, ledger_directory(name))
    return run_chunked(
        name=name,
        keys=keys,
        chunk_size=chunk_size,
        storage=target,
        ledger=ledger,
        process_chunk=process_chunk,
        stop=stop,
    )
