"""Exactly-once output for a shard: fixed chunks, each committed atomically, a marker last.

A shard's sorted key list is cut into fixed chunks (chunk ``i`` is always keys[i*c:(i+1)*c]),
so a retried task recomputes exactly the chunks whose file is missing: no holes, no row
twice. A chunk file is its own commit record (it is written atomically, in one piece), and
the shard's manifest is written only after every chunk is committed: its presence means the
shard is complete and a rerun skips it.

A chunk or manifest counts only if it holds exactly the keys the current plan expects, so a
rerun over an input that has changed since (images added or removed) redoes the affected
chunks instead of trusting stale files, and removes chunk files the new plan no longer has.

The plan's keys are units of input: one image each, or one WebDataset tar each
(``steps.io.tar_reader``), whose rows are its images. ``unit_of`` maps a row's key to its unit,
and a chunk counts when its rows' units, in order, are exactly its planned keys.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from steps.errors import SpotInterruption
from steps.io.input_format import same_key
from steps.io.parquet import parquet_to_table, table_to_parquet
from steps.io.storage import Storage
from steps.output.layout import manifest_key
from steps.progress import Progress, ProgressCallback, log


def chunk_ranges(count: int, chunk_size: int) -> list[range]:
    return [range(start, min(start + chunk_size, count)) for start in range(0, count, chunk_size)]


class ChunkLedger:
    """Committed chunks of one shard, as files ``<directory>/<stem>-<index>.parquet``; ``unit_of``
    maps a row key to the planned key it comes from (``same_key``, or a row's tar).

    ``manifest_columns`` are the columns of a chunk the shard's manifest keeps (None: all of
    them), so a shard whose chunks are its outputs (predictions, embeddings) holds and writes
    only each row's key, status and small fields a second time."""

    def __init__(
        self,
        storage: Storage,
        directory: str,
        stem: str = "chunk",
        unit_of: Callable[[str], str] = same_key,
        manifest_columns: Sequence[str] | None = None,
    ) -> None:
        self.storage = storage
        self.directory = directory.rstrip("/")
        self.stem = stem
        self.unit_of = unit_of
        self.manifest_columns = manifest_columns
        self._pattern = re.compile(rf"{re.escape(stem)}-(\d+)\.parquet$")

    def chunk_key(self, index: int) -> str:
        return f"{self.directory}/{self.stem}-{index:05d}.parquet"

    def committed(self) -> set[int]:
        found = set()
        for obj in self.storage.list(self.directory + "/"):
            match = self._pattern.search(obj.key)
            if match:
                found.add(int(match.group(1)))
        return found

    def units(self, row_keys: Iterable[str]) -> list[str]:
        """The planned keys ``row_keys`` come from, in order of first appearance."""
        return list(dict.fromkeys(map(self.unit_of, row_keys)))

    def unplanned(self, row_keys: Iterable[str], keys: Sequence[str]) -> set[str]:
        """The row keys whose unit is not among ``keys``."""
        planned = set(keys)
        return {key for key in row_keys if self.unit_of(key) not in planned}

    def reusable(self, keys: Sequence[str], chunk_size: int) -> tuple[dict[int, pa.Table], set[str]]:
        """Committed chunks that hold exactly the keys the current plan gives them, and the keys
        of the other committed chunks that the plan no longer has (their derived files are stale)."""
        ranges = chunk_ranges(len(keys), chunk_size)
        tables, recorded = {}, set()
        for index, table in self.tables(self.manifest_columns):
            chunk = table.column("key").to_pylist()
            if index < len(ranges) and self.units(chunk) == list(keys[ranges[index].start : ranges[index].stop]):
                tables[index] = table
            else:
                recorded.update(chunk)
        return tables, self.unplanned(recorded, keys)

    def tables(self, columns: Sequence[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """Each committed chunk with its index, in order, read one at a time (only ``columns``, where given)."""
        for index in sorted(self.committed()):
            yield index, parquet_to_table(self.storage.read(self.chunk_key(index)), columns)

    def manifest_rows(self, table: pa.Table) -> pa.Table:
        """The part of a chunk the manifest keeps."""
        if self.manifest_columns is None:
            return table
        return table.select([name for name in table.column_names if name in self.manifest_columns])

    def remove_beyond(self, count: int) -> int:
        """Delete chunk files at index ``count`` and above (left by a larger, earlier plan); return how many."""
        beyond = [index for index in self.committed() if index >= count]
        for index in beyond:
            self.storage.delete(self.chunk_key(index))
        return len(beyond)

    def commit(self, index: int, table: pa.Table) -> None:
        self.storage.write(self.chunk_key(index), table_to_parquet(table))


@dataclass(frozen=True)
class ShardOutcome:
    name: str
    manifest: pa.Table  # one row per key of the shard
    chunks: int
    skipped_chunks: int
    seconds: float
    skipped: bool = False  # complete in an earlier run, so nothing was done now
    reused_images: int = 0  # images of the reused chunks: not processed by this attempt
    stale_files: int = 0  # files of earlier runs removed because the plan no longer has their keys
    chunk_size: int = 0  # images a chunk holds at most: what a killed attempt could lose in flight


def stored_manifest(storage: Storage, name: str) -> pa.Table | None:
    if not storage.exists(manifest_key(name)):
        return None
    return parquet_to_table(storage.read(manifest_key(name)))


@dataclass(frozen=True)
class ShardState:
    """What an earlier attempt or run left of a shard: its manifest if complete, else the
    committed chunks that still match the plan (by index), and the keys earlier runs recorded
    here that the plan no longer has (removed inputs: their derived files are stale)."""

    complete: pa.Table | None
    reused: dict[int, pa.Table]
    stale_keys: frozenset[str] = frozenset()
    stale_files: int = 0  # an outdated manifest, removed

    def pending(self, keys: Sequence[str], chunk_size: int) -> list[Sequence[str]]:
        """The key lists of the chunks still to do, in order."""
        if self.complete is not None:
            return []
        ranges = chunk_ranges(len(keys), chunk_size)
        return [keys[r.start : r.stop] for i, r in enumerate(ranges) if i not in self.reused]


@dataclass(frozen=True)
class ChunkedShard:
    """One shard as ``run_chunked`` works through it: its plan (``keys`` cut into chunks of
    ``chunk_size``), where it commits, and what earlier attempts or runs left of it (``state``)."""

    name: str
    keys: Sequence[str]
    chunk_size: int
    storage: Storage
    ledger: ChunkLedger
    state: ShardState
    images: int | None = None  # rows the shard is expected to give, where a key is not one image

    def pending(self) -> list[Sequence[str]]:
        """The key lists of the chunks still to do, in order."""
        return self.state.pending(self.keys, self.chunk_size)


def open_shard(
    storage: Storage, ledger: ChunkLedger, name: str, keys: Sequence[str], chunk_size: int, *, images: int | None = None
) -> ChunkedShard:
    """The shard with what is stored of it; a manifest that does not cover exactly ``keys`` is removed."""
    return ChunkedShard(
        name, keys, chunk_size, storage, ledger, _stored_state(storage, ledger, name, keys, chunk_size), images
    )


def _stored_state(storage: Storage, ledger: ChunkLedger, name: str, keys: Sequence[str], chunk_size: int) -> ShardState:
    manifest = stored_manifest(storage, name)
    if manifest is not None and ledger.units(manifest.column("key").to_pylist()) == list(keys):
        return ShardState(manifest, {})
    reused, stale = ledger.reusable(keys, chunk_size)
    if manifest is None:
        return ShardState(None, reused, frozenset(stale))
    log(f"shard {name}: the input changed since this shard was completed; processing it again")
    stale |= ledger.unplanned(manifest.column("key").to_pylist(), keys)
    storage.delete(manifest_key(name))
    return ShardState(None, reused, frozenset(stale), stale_files=1)


def rejected_reasons(table: pa.Table) -> list[str]:
    """The reasons of a chunk's rejected rows (plain Python: see ``summary.shard_stats``)."""
    if "status" not in table.column_names:
        return []
    statuses, reasons = table.column("status").to_pylist(), table.column("reason").to_pylist()
    return [reason for status, reason in zip(statuses, reasons, strict=True) if status != "ok"]


def run_chunked(
    shard: ChunkedShard,
    process_chunk: Callable[[Sequence[str], Progress], pa.Table],
    *,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    finish: Callable[[pa.Table], int] | None = None,
) -> ShardOutcome:
    """Process a shard chunk by chunk, skipping committed chunks; write the manifest last.

    ``process_chunk`` returns one row per key. ``stop`` (set on a spot interruption notice)
    ends the loop after the chunk in flight is committed, raising SpotInterruption so the task
    exits non-zero, is retried, and resumes from the next chunk. ``on_progress`` gets
    ``ShardProgress`` snapshots at a bounded rate (see ``steps.progress``). ``finish`` brings
    per-shard extras (WebDataset tars) in line with the shard's manifest, before the manifest is
    written or, for a shard complete earlier, on its stored one; it returns how many stale files
    it removed.
    """
    name, keys, chunk_size, storage, ledger, state = (
        shard.name,
        shard.keys,
        shard.chunk_size,
        shard.storage,
        shard.ledger,
        shard.state,
    )
    ranges = chunk_ranges(len(keys), chunk_size)
    progress = Progress(name, len(keys) if shard.images is None else shard.images, len(ranges), on_progress)
    if state.complete is not None:
        log(f"shard {name}: complete in an earlier run (manifest exists), skipping")
        progress.complete_earlier()
        stale_files = finish(state.complete) if finish is not None else 0
        return ShardOutcome(
            name, state.complete, 0, 0, 0.0, skipped=True, stale_files=stale_files, chunk_size=chunk_size
        )
    log(f"shard {name}: {progress.total} images in {len(ranges)} chunks of up to {chunk_size}")
    tables = dict(state.reused)
    reused = len(tables)
    for index in sorted(tables):
        progress.reused(tables[index].num_rows, rejected_reasons(tables[index]))
    if reused:
        log(f"shard {name}: resuming, {reused}/{len(ranges)} chunks already committed")
    progress.update_now()
    for index, span in enumerate(ranges):
        if index in tables:
            continue
        if stop is not None and stop.is_set():
            raise SpotInterruption(f"shard {name}: stopped before chunk {index}; committed chunks are kept")
        chunk_keys = keys[span.start : span.stop]
        table = process_chunk(chunk_keys, progress)
        if ledger.units(table.column("key").to_pylist()) != list(chunk_keys):
            raise RuntimeError(
                f"chunk {index} of shard {name} produced {table.num_rows} rows for {len(chunk_keys)} keys, "
                "not rows of exactly its keys in order"
            )
        ledger.commit(index, table)
        tables[index] = ledger.manifest_rows(table)
        progress.committed(rejected_reasons(table))
    stale_files = state.stale_files + ledger.remove_beyond(len(ranges))
    manifest = pa.concat_tables(tables[i] for i in range(len(ranges))) if ranges else pa.table({"key": []})
    if finish is not None:
        stale_files += finish(manifest)
    storage.write(manifest_key(name), table_to_parquet(manifest))
    progress.finish(f"{reused} chunks reused")
    reused_images = sum(state.reused[i].num_rows for i in state.reused if i < len(ranges))
    return ShardOutcome(
        name,
        manifest,
        len(ranges),
        reused,
        progress.elapsed_s,
        reused_images=reused_images,
        stale_files=stale_files,
        chunk_size=chunk_size,
    )
