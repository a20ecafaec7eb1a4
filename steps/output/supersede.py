"""Files an earlier run left that the current plan no longer covers: found, removed, counted.

Two things make earlier files stale. Inputs removed since (or moved to another shard by a new
layout) leave their rows in old manifests and chunks and their derived files (resized images,
edge maps) behind. And a new layout (a one-shard ``all`` output that outgrew --shard-size,
another --prefix-width, fewer --max-shards) leaves whole shards that no current shard lines up
with: their manifests would count keys a second time.

``start`` retires the superseded shards (``retire_superseded``); a shard task cleans what its own
earlier attempts left (``remove_derived`` over ``ShardState.stale_keys``). A derived file is
removed only when no current input owns that name, and a superseded shard's key list is removed
last, so a crash midway leaves it to the next run. Every removal is counted for the run summary.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steps.io.concurrency import map_bounded
from steps.io.input_format import same_key
from steps.io.parquet import parquet_to_table
from steps.io.storage import Storage
from steps.output.layout import (
    MANIFEST_DIR,
    PLAN_DIR,
    manifest_key,
    manifest_shard_name,
    plan_keys_key,
    planned_shard_name,
)
from steps.planning.prefixes import PrefixCounts, range_name, shard_prefix
from steps.planning.store import read_shard_keys, stored_layout
from steps.progress import log

if TYPE_CHECKING:
    from steps.output.ledger import ChunkLedger


def no_directories(shard_name: str) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class ShardFiles:
    """Where a flow commits a shard's chunks, the files processing one input key writes, and
    other per-shard directories (e.g. WebDataset tars) that go when the shard is retired.

    The one declaration of a flow's chunk location: its shard tasks take their ledger from here
    (``ledger``), and ``start`` retires superseded shards' chunks from the same place."""

    chunk_directory: Callable[[str], str]
    derived: Callable[[str], tuple[str, ...]]
    shard_directories: Callable[[str], tuple[str, ...]] = no_directories
    chunk_stem: str = "chunk"  # chunk files are <chunk_directory>/<chunk_stem>-NNNNN.parquet
    manifest_columns: tuple[str, ...] | None = None  # what the manifest keeps of a chunk (None: all)

    def ledger(self, storage: Storage, shard_name: str, unit_of: Callable[[str], str] = same_key) -> ChunkLedger:
        """The committed chunks of one shard; ``unit_of`` maps a row key to its planned key."""
        # Imported here: the ledger needs Arrow, and flow files import this module in every task.
        from steps.output.ledger import ChunkLedger

        return ChunkLedger(
            storage,
            self.chunk_directory(shard_name),
            stem=self.chunk_stem,
            unit_of=unit_of,
            manifest_columns=self.manifest_columns,
        )


@dataclass(frozen=True)
class Retired:
    """What ``start`` removed of shards the current plan does not have."""

    shards: tuple[str, ...] = ()
    files: int = 0

    def describe(self) -> str:
        if not self.shards:
            return "no superseded shards"
        names = ", ".join(self.shards[:8]) + (", …" if len(self.shards) > 8 else "")
        return f"retired {len(self.shards)} superseded shards ({names}): {self.files} stale files removed"


def layout_misfit(
    width: int, starts: Sequence[str], counts: PrefixCounts, *, shard_size: int, max_shards: int, prefix_width: int
) -> str:
    """Why an output's stored layout cannot be kept for this run; empty when it can."""
    if prefix_width not in (0, width):
        return f"--prefix-width {prefix_width} differs from its width {width}"
    if width == 0:
        outgrown = counts.total > shard_size
        return f"its one shard would hold {counts.total} images, over {shard_size} per shard" if outgrown else ""
    shards = len(starts) if starts else len(counts.at_width(width))
    return f"its {shards} shards exceed --max-shards {max_shards}" if shards > max_shards else ""


def shard_name_of(key: str, width: int, starts: Sequence[str]) -> str:
    """The name of the shard that holds ``key`` under a layout (as the planner names it)."""
    prefix = shard_prefix(key, width)
    if not starts:
        return prefix or "all"
    return range_name(starts, bisect.bisect_right(starts, prefix) - 1, width)


def stored_shard_names(storage: Storage) -> set[str]:
    """Every shard an earlier run planned or completed in this output."""
    planned = {planned_shard_name(o.key) for o in storage.list(PLAN_DIR + "/")}
    finished = {manifest_shard_name(o.key) for o in storage.list(MANIFEST_DIR + "/")}
    return (planned | finished) - {None}


def recorded_keys(storage: Storage, name: str, files: ShardFiles) -> set[str]:
    """Keys any earlier run recorded for shard ``name``: planned, in committed chunks or the manifest."""
    keys = set(read_shard_keys(storage, name)) if storage.exists(plan_keys_key(name)) else set()
    records = [o.key for o in storage.list(files.chunk_directory(name) + "/") if o.key.endswith(".parquet")]
    if storage.exists(manifest_key(name)):
        records.append(manifest_key(name))
    for record in records:
        keys.update(parquet_to_table(storage.read(record), ["key"]).column("key").to_pylist())
    return keys


def remove_derived(
    storage: Storage,
    stale_keys: Iterable[str],
    current_keys: Iterable[str],
    files: ShardFiles,
    threads: int,
    *,
    unit_of: Callable[[str], str] = same_key,
) -> int:
    """Delete the derived files of ``stale_keys`` that no current key writes; return how many existed.
    ``unit_of`` maps a row key to its planned key: rows of a tar still planned keep their files."""
    current = set(current_keys)
    owned = {name for key in current for name in files.derived(key)}
    stale = (key for key in stale_keys if unit_of(key) not in current)
    doomed = sorted({name for key in stale for name in files.derived(key)} - owned)

    def delete(name: str) -> bool:
        existed = storage.exists(name)
        if existed:
            storage.delete(name)
        return existed

    return sum(map_bounded(delete, doomed, threads))


def retire_superseded(
    storage: Storage,
    shard_names: Iterable[str],
    files: ShardFiles,
    threads: int,
    unit_of: Callable[[str], str] = same_key,
) -> Retired:
    """Remove every stored shard the current plan (``shard_names``, already written) does not have;
    ``unit_of`` maps a recorded row key to its planned key (its tar, for an input of tars).

    A superseded shard's keys are looked up in the current shard that holds them now, one current
    key list at a time, so memory stays within one shard's keys whatever the output's size.
    """
    layout = stored_layout(storage)
    current = set(shard_names)
    stale = sorted(stored_shard_names(storage) - set(current))
    if layout is None or not stale:
        return Retired()
    width, starts = layout
    removed = 0
    for name in stale:
        by_current: dict[str, list[str]] = defaultdict(list)
        for key in recorded_keys(storage, name, files):
            by_current[shard_name_of(unit_of(key), width, starts)].append(key)
        for holder, keys in sorted(by_current.items()):
            now = read_shard_keys(storage, holder) if holder in current else []
            removed += remove_derived(storage, keys, now, files, threads, unit_of=unit_of)
        directories = (files.chunk_directory(name), *files.shard_directories(name))
        records = [o.key for directory in directories for o in storage.list(directory + "/")]
        records += [key for key in (manifest_key(name), plan_keys_key(name)) if storage.exists(key)]
        for record in records:  # the key list last: until it is gone, a later run retires this shard again
            storage.delete(record)
        removed += len(records)
    retired = Retired(tuple(stale), removed)
    log(retired.describe())
    return retired
