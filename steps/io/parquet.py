"""Arrow tables to and from Parquet bytes (manifests, chunks and prediction parts)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq


def table_to_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def parquet_to_table(data: bytes) -> pa.Table:
    # Start no Arrow thread pool: reading a Python file object (or read_table's dataset scanner)
    # starts Arrow's I/O threads, which can abort a Metaflow task process at exit ("terminate
    # called without an active exception") after its work is done: a failed attempt for nothing.
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
