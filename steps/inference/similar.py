"""``spot-batch similar OUTPUT --key K [--k 10]``: exact nearest neighbours by cosine similarity.

Reads the output's Parquet parts one at a time (memory: one part, ~chunk_size vectors), so it
scales with the time to read the vectors, not with memory: 10^6 vectors of 512 float16 values
are ~1 GB to read and half a GFLOP to score, about a minute from S3 on one core. That is fine for
checking a run and for a few queries up to ~10^7 vectors. Beyond that, or for many queries, build
an approximate index (FAISS IVF-PQ or HNSW) from the same ``embedding`` column and query that.
Vectors are L2-normalised by ``--task embed``; others are normalised here.
"""

from __future__ import annotations

import heapq
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from steps.errors import ConfigError
from steps.inference.predictions import prediction_parts


@dataclass(frozen=True)
class Neighbour:
    key: str
    cosine: float


def _vectors(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_list(values.type):
        raise ConfigError("column", column, "a fixed-size list of numbers (an [N, D] model output)", "pick another")
    flat = values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = flat.reshape(len(values), values.type.list_size)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _read(storage, part: str, column: str) -> pa.Table:
    table = pq.read_table(io.BytesIO(storage.read(part)))
    if column not in table.column_names:
        raise ConfigError(
            "--column", column, f"a column of the output (it has {table.column_names[3:]})", "run with --task embed"
        )
    return table.filter(pc.equal(table.column("status"), "ok")).select(["key", column])


def similar(uri: str, key: str, k: int = 10, column: str = "embedding", threads: int = 16) -> list[Neighbour]:
    """The ``k`` keys whose ``column`` vectors are most cosine-similar to ``key``'s (itself excluded)."""
    storage, parts = prediction_parts(uri, threads)
    query = None
    for part in parts:  # first pass: find the query's vector (stops at its part)
        table = _read(storage, part, column)
        rows = np.flatnonzero(np.asarray(table.column("key").to_pylist()) == key)
        if len(rows):
            query = _vectors(table.slice(int(rows[0]), 1), column)[0]
            break
    if query is None:
        raise ConfigError("--key", key, f"a key predicted ok under {uri}", "check `spot-batch predictions OUTPUT`")
    best: list[tuple[float, str]] = []  # a min-heap of the k best so far
    for part in parts:
        table = _read(storage, part, column)
        scores = _vectors(table, column) @ query
        keys = table.column("key").to_pylist()
        for row in np.argsort(-scores)[: k + 1]:
            if keys[row] != key:
                item = (float(scores[row]), keys[row])
                heapq.heappush(best, item) if len(best) < k else heapq.heappushpop(best, item)
    return [Neighbour(name, score) for score, name in sorted(best, key=lambda item: (-item[0], item[1]))]
