"""``--format webdataset``: training-ready tar shards beside the resized images and edge maps.

Each committed chunk of a shard also becomes ``webdataset/<shard>/chunk-NNNNN-PPP.tar``
(steps/output/layout.py), holding per good sample::

    <id>.jpg        the resized image
    <id>.edges.png  its edge map
    <id>.json       {"key": input key, "label": labels.csv label or null,
                     "width", "height" (the original's), "input_bytes"}

in key order, where ``<id>`` is the shard and the key's position in it (for an input of tars, the
tar's position times ``TAR_STRIDE`` plus the row's position among the tar's rows). A chunk's tars are written
(each atomically, whole) before the chunk's ledger commit, and a retried chunk rewrites the same
bytes. A chunk's samples are split into parts at ``max_tar_bytes`` (default 1 GB); ``--chunk-size``
sets the usual size (≈ 60 KB a sample at ``--size 256``, so 256 samples ≈ 15 MB).

Beside them, ``chunk-NNNNN.json`` says what a chunk's tars hold (a digest of its samples' keys
and labels, and the part count). Before a shard is marked complete, and again on every rerun of a
complete shard, ``finish`` packs each chunk whose tars are missing or hold other samples (chunks
reused from a ``--format files`` run, another ``--chunk-size``, a changed labels.csv) and removes
every other file under the shard's ``webdataset/`` folder (parts and chunks of an earlier, larger
plan): the tars hold each good input of the shard exactly once.

The tar members are read back from the output, not handed over from the decoder, so the
per-image preprocessing stays one code path for every format (at the cost of two extra reads
per good image).
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from steps.io.concurrency import map_bounded
from steps.io.input_format import same_key
from steps.io.storage import Storage
from steps.output.layout import (
    LABELS_FILE,
    edges_key,
    resized_key,
    webdataset_directory,
    webdataset_index_key,
    webdataset_sample_id,
    webdataset_tar_key,
)
from steps.progress import log

FORMATS = ("files", "webdataset")
MAX_TAR_BYTES = 1_000_000_000
TAR_BLOCK = 512  # a member costs its header block plus its data rounded up to blocks
TAR_STRIDE = 1_000_000  # sample positions per input tar: more images than a tar ever holds


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
class ChunkTars:
    """What one chunk's tars hold: ``chunk-NNNNN.json`` beside them."""

    samples_sha256: str  # of the good samples' keys and labels, in order
    parts: int

    def keys(self, shard: str, chunk: int) -> list[str]:
        return [webdataset_index_key(shard, chunk)] + [webdataset_tar_key(shard, chunk, p) for p in range(self.parts)]


@dataclass
class WebDatasetPacker:
    """Packs each chunk of one shard into tars (call it with the chunk's manifest rows), then
    ``finish`` brings the shard's tars in line with its manifest."""

    target: Storage
    shard: str
    keys: Sequence[str]  # the shard's sorted keys: positions give sample ids and chunk indexes
    chunk_size: int  # planned keys a chunk
    labels: dict[str, str]
    threads: int
    max_tar_bytes: int = MAX_TAR_BYTES
    unit_of: Callable[[str], str] = same_key  # a row's planned key (its tar, for an input of tars)
    packed: dict[int, ChunkTars] = field(default_factory=dict)  # chunks this process wrote

    def position(self, key: str, ordinal: int) -> int:
        """A row's sample position: its key's in the plan, or its tar's (strided) plus ``ordinal``,
        the row's position among its chunk's sorted rows."""
        unit = self.unit_of(key)
        at = bisect.bisect_left(self.keys, unit)
        return at if unit == key else at * TAR_STRIDE + ordinal

    def chunk_index(self, key: str) -> int:
        return bisect.bisect_left(self.keys, self.unit_of(key)) // self.chunk_size

    def sample(self, item: tuple[int, dict]) -> list[tuple[str, bytes]]:
        ordinal, row = item
        sample_id = webdataset_sample_id(self.shard, self.position(row["key"], ordinal))
        meta = {k: row[k] for k in ("key", "width", "height", "input_bytes")}
        meta["label"] = self.labels.get(row["key"])
        return [
            (f"{sample_id}.jpg", self.target.read(resized_key(row["key"]))),
            (f"{sample_id}.edges.png", self.target.read(edges_key(row["key"]))),
            (f"{sample_id}.json", json.dumps(meta, sort_keys=True).encode()),
        ]

    def good_rows(self, chunk: pa.Table) -> list[tuple[int, dict]]:
        """The chunk's good rows with their positions among all its rows, in key order."""
        rows = sorted(chunk.to_pylist(), key=lambda r: r["key"])
        return [(ordinal, row) for ordinal, row in enumerate(rows) if row["status"] == "ok"]

    def digest(self, rows: Sequence[dict]) -> str:
        text = "\n".join(f"{r['key']}\t{self.labels.get(r['key']) or ''}" for _, r in rows)
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def __call__(self, chunk: pa.Table) -> list[str]:
        """Write the chunk's tars (its good rows, in key order) and their index; return the tar keys."""
        index = self.chunk_index(chunk.column("key")[0].as_py())
        rows = self.good_rows(chunk)
        samples = sorted(map_bounded(self.sample, rows, self.threads))
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
        tars = ChunkTars(self.digest(rows), len(parts))
        self.target.write(webdataset_index_key(self.shard, index), json.dumps(asdict(tars)).encode())
        self.packed[index] = tars
        return written

    def chunk_spans(self, manifest: pa.Table) -> list[range]:
        """The manifest's rows of each chunk (its rows are in plan order, every chunk has some)."""
        indexes = [self.chunk_index(key) for key in manifest.column("key").to_pylist()]
        if not indexes:
            return []
        starts = [row for row, index in enumerate(indexes) if row == 0 or index != indexes[row - 1]]
        return [range(start, stop) for start, stop in zip(starts, [*starts[1:], len(indexes)], strict=True)]

    def stored(self, index: int, present: set[str]) -> tuple[int, ChunkTars | None]:
        """Chunk ``index`` and what its stored index says its tars hold (None: no complete set)."""
        key = webdataset_index_key(self.shard, index)
        if key not in present:
            return index, None
        tars = ChunkTars(**json.loads(self.target.read(key)))
        return index, tars if set(tars.keys(self.shard, index)) <= present else None

    def finish(self, manifest: pa.Table) -> int:
        """Pack the chunks of ``manifest`` (the shard's rows, in key order) whose tars are missing
        or hold other samples; delete every other file of the shard's folder; return how many."""
        present = {o.key for o in self.target.list(webdataset_directory(self.shard) + "/")}
        ranges = self.chunk_spans(manifest)
        # The indexes of chunks this process did not pack, read in parallel (one GET each on S3).
        unread = [index for index in range(len(ranges)) if index not in self.packed]
        known = {**dict(map_bounded(lambda i: self.stored(i, present), unread, self.threads)), **self.packed}
        wanted, repacked = set(), 0
        for index, span in enumerate(ranges):
            chunk = manifest.slice(span.start, len(span))
            tars = known[index]
            if tars is None or tars.samples_sha256 != self.digest(self.good_rows(chunk)):
                self(chunk)
                tars, repacked = self.packed[index], repacked + 1
            wanted.update(tars.keys(self.shard, index))
        stray = sorted(present - wanted)
        list(map_bounded(self.target.delete, stray, self.threads))
        if repacked or stray:
            log(f"shard {self.shard}: packed {repacked} chunks' tars anew, removed {len(stray)} stale webdataset files")
        return len(stray)
