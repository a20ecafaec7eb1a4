"""``--format webdataset``: training-ready tar shards beside the resized images and edge maps.

Each committed chunk of a shard also becomes ``webdataset/<shard>/chunk-NNNNN-PPP.tar``
(steps/layout.py), holding per good sample::

    <id>.jpg        the resized image
    <id>.edges.png  its edge map
    <id>.json       {"key": input key, "label": labels.csv label or null,
                     "width", "height" (the original's), "input_bytes"}

in key order, where ``<id>`` is the shard and the key's position in it. A chunk's tars are written
(each atomically, whole) before the chunk's ledger commit, so a committed chunk always has them
and a retried chunk rewrites the same bytes: exactly once, like the chunks. A chunk's samples
are split into parts at ``max_tar_bytes`` (default 1 GB); ``--chunk-size`` sets the usual size
(≈ 60 KB a sample at ``--size 256``, so 256 samples ≈ 15 MB).

The tar members are read back from the output, not handed over from the decoder, so the
per-image preprocessing stays one code path for every format (at the cost of two extra reads
per good image).
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from steps.io.concurrency import map_bounded
from steps.io.storage import Storage
from steps.layout import LABELS_FILE, edges_key, resized_key, webdataset_sample_id, webdataset_tar_key

FORMATS = ("files", "webdataset")
MAX_TAR_BYTES = 1_000_000_000
TAR_BLOCK = 512  # a member costs its header block plus its data rounded up to blocks


def read_label_map(source: Storage) -> dict[str, str]:
    """key → label from the input's labels.csv ({} without one): the samples' ``label``."""
    if not source.exists(LABELS_FILE):
        return {}
    rows = csv.DictReader(io.StringIO(source.read(LABELS_FILE).decode("utf-8-sig")))
    return {row["key"].strip(): (row.get("label") or "").strip() for row in rows if row.get("key")}


def tar_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add ``name`` with fixed metadata (mtime 0, root, 0644), so the tar bytes depend only on data."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "root", "root"
    archive.addfile(info, io.BytesIO(data))


def member_bytes(data: bytes) -> int:
    return TAR_BLOCK + -(-len(data) // TAR_BLOCK) * TAR_BLOCK


@dataclass(frozen=True)
class WebDatasetPacker:
    """Packs each chunk of one shard into tars; call it with the chunk's manifest rows."""

    target: Storage
    shard: str
    keys: Sequence[str]  # the shard's sorted keys: positions give sample ids and chunk indexes
    chunk_size: int
    labels: dict[str, str]
    threads: int
    max_tar_bytes: int = MAX_TAR_BYTES

    def sample(self, row: dict) -> list[tuple[str, bytes]]:
        sample_id = webdataset_sample_id(self.shard, bisect.bisect_left(self.keys, row["key"]))
        meta = {k: row[k] for k in ("key", "width", "height", "input_bytes")}
        meta["label"] = self.labels.get(row["key"])
        return [
            (f"{sample_id}.jpg", self.target.read(resized_key(row["key"]))),
            (f"{sample_id}.edges.png", self.target.read(edges_key(row["key"]))),
            (f"{sample_id}.json", json.dumps(meta, sort_keys=True).encode()),
        ]

    def __call__(self, chunk: pa.Table) -> list[str]:
        """Write the chunk's tars (its good rows, in key order); return their keys."""
        rows = sorted((r for r in chunk.to_pylist() if r["status"] == "ok"), key=lambda r: r["key"])
        samples = sorted(map_bounded(self.sample, rows, self.threads))
        index = bisect.bisect_left(self.keys, chunk.column("key")[0].as_py()) // self.chunk_size
        parts, size = [[]], 0
        for members in samples:
            grow = sum(member_bytes(data) for _, data in members)
            if parts[-1] and size + grow > self.max_tar_bytes:
                parts.append([])
                size = 0
            parts[-1].append(members)
            size += grow
        written = []
        for part, part_samples in enumerate(parts):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
                for name, data in (m for members in part_samples for m in members):
                    tar_member(archive, name, data)
            key = webdataset_tar_key(self.shard, index, part)
            self.target.write(key, buffer.getvalue())
            written.append(key)
        return written
