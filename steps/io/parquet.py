"""Arrow tables to and from Parquet bytes (manifests, chunks and prediction parts).

Arrow is imported where it is used: flow files import modules that import this one, and
Metaflow imports a flow file in every task and card refresh, most of which read no Parquet.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def table_to_parquet(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def parquet_to_table(data: bytes, columns: Sequence[str] | None = None) -> pa.Table:
    """The table in ``data``; with ``columns``, only those of them it has."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Start no Arrow thread pool: reading a Python file object (or read_table's dataset scanner)
    # starts Arrow's I/O threads, which can abort a Metaflow task process at exit ("terminate
    # called without an active exception") after its work is done: a failed attempt for nothing.
    file = pq.ParquetFile(pa.BufferReader(data))
    if columns is not None:
        columns = [name for name in columns if name in file.schema_arrow.names]
    return file.read(columns=columns, use_threads=False)
