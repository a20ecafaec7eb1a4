"""Shard planning: split the keyspace by the hex prefix of sha256-named objects.

Images named by their sha256 digest are spread uniformly over hex prefixes, so the first ``w``
characters of the name cut the set into up to 16**w shards of near-equal size. Shard count is
the main cost lever on a batch cluster: each task pays a fixed start-up cost (container pull,
scheduling, ~50 submits/s per account on AWS Batch), so 65,536 one-image-prefix jobs spend hours
just being submitted, while 256 shards of ~1,300 images finish 250k images in minutes. The
planner therefore picks the smallest width whose shards hold no more than a target number of
images, within the foreach fan-out limit.

The layout is chosen from key *counts* per prefix alone (``PrefixCounts``, 65,536 counters), so
a 10^8-key plan needs no key in memory: ``steps.planning.spill`` streams the keys into the
chosen shards. The plan is a pure function of the set of keys: same input, same shards, same
output names.
"""

from __future__ import annotations

import hashlib
import math
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from steps.errors import ConfigError
from steps.output.layout import key_stem, object_stem

_SHA256_NAME = re.compile(r"^[0-9a-fA-F]{64}$")


MAX_WIDTH = 4  # 65,536 shards: beyond this, per-task overhead dominates any dataset.
_CELLS = 16**MAX_WIDTH


def shard_prefix(key: str, width: int) -> str:
    """First ``width`` hex characters of a sha256-named key; other names hash their ``key_stem``.

    Hashing keeps non-digest names (``IMG_0001.jpg``) planned deterministically and spread
    evenly instead of dropped or piled into one shard; hashing the stem, not the whole key,
    puts keys that would share an output name (``a.jpg``, ``a.png``) in the same shard, where
    the collision is detected.
    """
    if width == 0:
        return ""
    stem = object_stem(key)
    digest = (
        stem.lower()
        if _SHA256_NAME.match(stem)
        else hashlib.sha256(key_stem(key).encode(errors="surrogateescape")).hexdigest()
    )
    return digest[:width]


def cell_of(key: str) -> int:
    """The key's prefix at ``MAX_WIDTH`` as a number: the finest unit a shard is built from."""
    return int(shard_prefix(key, MAX_WIDTH), 16)


class PrefixCounts:
    """How many keys fall on each ``MAX_WIDTH`` prefix: 512 KB whatever the dataset size."""

    def __init__(self) -> None:
        self.cells = array("q", bytes(8 * _CELLS))
        self.total = 0

    def add(self, cell: int, count: int = 1) -> None:
        self.cells[cell] += count
        self.total += count

    def at_width(self, width: int) -> list[tuple[str, int]]:
        """``(prefix, count)`` of each non-empty prefix at ``width``, sorted."""
        if width == 0:
            return [("", self.total)] if self.total else []
        span = 16 ** (MAX_WIDTH - width)
        groups = [(f"{p:0{width}x}", sum(self.cells[p * span : (p + 1) * span])) for p in range(16**width)]
        return [(prefix, count) for prefix, count in groups if count]


@dataclass(frozen=True)
class ShardRange:
    """One unit of fan-out: the keys whose ``MAX_WIDTH`` cell lies in ``first..last``.

    ``name`` is the stable identifier used in output paths: ``all`` (width 0), a prefix (``3a``)
    or a packed range of prefixes (``3a-41``).
    """

    name: str
    first: int
    last: int
    images: int

    def holds(self, cell: int) -> bool:
        return self.first <= cell <= self.last


@dataclass(frozen=True)
class ShardLayout:
    width: int
    ranges: tuple[ShardRange, ...]
    target_size: int
    reason: str
    # First prefix of each packed range, covering the whole keyspace; empty: one prefix per shard.
    starts: tuple[str, ...] = ()

    @property
    def images(self) -> int:
        return sum(r.images for r in self.ranges)


def _cells(prefix: str, width: int) -> tuple[int, int]:
    """First and last ``MAX_WIDTH`` cell of a prefix at ``width`` (width 0: every cell)."""
    span = 16 ** (MAX_WIDTH - width)
    first = int(prefix, 16) * span if width else 0
    return first, first + span - 1


def range_name(starts: Sequence[str], index: int, width: int) -> str:
    """``"3a-41"``: the prefixes from ``starts[index]`` up to the next start."""
    end = int(starts[index + 1], 16) - 1 if index + 1 < len(starts) else 16**width - 1
    return f"{starts[index]}-{end:0{width}x}"


def pack_starts(groups: Sequence[tuple[str, int]], max_shards: int, width: int) -> tuple[str, ...]:
    """Cut the sorted ``(prefix, count)`` groups into at most ``max_shards`` contiguous ranges of
    near-equal size: a range starts at the first group past each 1/max_shards quantile of the
    keys. The first starts at ``00…``, so the ranges cover every prefix, including ones empty today."""
    total = sum(count for _, count in groups)
    starts = ["0" * width]
    done = 0
    quantile = 1
    for prefix, count in groups:
        if done >= quantile * total / max_shards and prefix > starts[-1]:
            starts.append(prefix)
            while done >= quantile * total / max_shards:
                quantile += 1
        done += count
    return tuple(starts)


def _prefix_ranges(groups: Sequence[tuple[str, int]], width: int) -> tuple[ShardRange, ...]:
    return tuple(ShardRange(prefix or "all", *_cells(prefix, width), count) for prefix, count in groups)


def _packed_ranges(counts: PrefixCounts, width: int, starts: Sequence[str]) -> tuple[ShardRange, ...]:
    span = 16 ** (MAX_WIDTH - width)
    firsts = [int(s, 16) * span for s in starts] + [_CELLS]
    ranges = []
    for i in range(len(starts)):
        images = sum(counts.cells[firsts[i] : firsts[i + 1]])
        if images:
            ranges.append(ShardRange(range_name(starts, i, width), firsts[i], firsts[i + 1] - 1, images))
    return tuple(ranges)


def choose_width(count: int, target_size: int) -> int:
    """Smallest width whose average shard holds at most ``target_size`` keys."""
    if count <= target_size:
        return 0
    return min(MAX_WIDTH, math.ceil(math.log(count / target_size, 16)))


def plan_layout(
    counts: PrefixCounts, target_size: int, max_shards: int, width: int = 0, starts: Sequence[str] = ()
) -> ShardLayout:
    """Choose the shards for keys counted in ``counts``; ``width`` 0 chooses it from the count.

    When the chosen width gives more prefixes than the target needs shards (the smallest width
    averages between 1/16 of the target and the target), contiguous prefixes are packed into as
    many ranges as the target needs, at most ``max_shards`` (and the reason says so): 3 shards of
    ~20 images for 54 images at ``--shard-size 20``, not 16 of ~3, and a fan-out of 100 tasks
    under ``--max-shards 100``, not a fall back to 16. ``starts`` reuses the ranges of an earlier plan,
    so a rerun's shards line up with it. A forced width that gives more than ``max_shards`` shards
    is an error.
    """
    if target_size < 1:
        raise ConfigError("shard size", target_size, "at least 1 image per shard", "pass --shard-size 1500")
    if max_shards < 1:
        raise ConfigError("--max-shards", max_shards, "at least 1", "pass --max-shards 100")
    if not 0 <= width <= MAX_WIDTH:
        raise ConfigError(
            "--prefix-width", width, f"0 (auto) to {MAX_WIDTH}", "pass --prefix-width 0 to choose it from the data"
        )
    if starts:
        ranges = _packed_ranges(counts, width, starts)
        return ShardLayout(
            width, ranges, target_size, f"prefix ranges of the earlier run ({len(starts)})", tuple(starts)
        )
    if width:
        groups = counts.at_width(width)
        if len(groups) > max_shards:
            raise ConfigError(
                "--prefix-width",
                width,
                f"at most {max_shards} shards (it gives {len(groups)})",
                f"pass --prefix-width 0, or raise both --max-shards {len(groups)} and Metaflow's "
                f"`run --max-num-splits {len(groups)}`",
            )
        return ShardLayout(width, _prefix_ranges(groups, width), target_size, f"prefix width {width} set by the user")

    wanted = choose_width(counts.total, target_size)
    groups = counts.at_width(wanted)
    # The target needs this many shards; one per prefix would give up to 16 times as many small ones.
    needed = math.ceil(counts.total / target_size)
    if len(groups) <= min(needed, max_shards):
        return ShardLayout(
            wanted,
            _prefix_ranges(groups, wanted),
            target_size,
            f"prefix width {wanted} keeps shards at or under ~{target_size} images",
        )
    # As many ranges as the target needs (so shards do not shrink below it), at most max_shards,
    # cut at a width fine enough (16+ prefixes a range) that they come out near-equal.
    shards = min(max_shards, needed)
    wanted = max(wanted, min(MAX_WIDTH, math.ceil(math.log(shards, 16)) + 1))
    groups = counts.at_width(wanted)
    packed = pack_starts(groups, shards, wanted)
    ranges = _packed_ranges(counts, wanted, packed)
    packed_into = f"prefix width {wanted}, {len(groups)} prefixes packed into {len(ranges)} range" + (
        "s" if len(ranges) != 1 else ""
    )
    if len(packed) < max_shards:
        reason = f"{packed_into} of ~{target_size} images"
    else:
        reason = (
            f"{packed_into} to stay within "
            f"--max-shards {max_shards}, so shards average {counts.total // len(ranges)} images "
            f"(target {target_size}); "
            "raise --max-shards and Metaflow's `run --max-num-splits` for smaller shards"
        )
    return ShardLayout(wanted, ranges, target_size, reason, packed)
