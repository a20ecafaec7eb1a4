"""Shard planning: split the keyspace by the hex prefix of sha256-named objects.

Images named by their sha256 digest are spread uniformly over hex prefixes, so the first ``w``
characters of the name cut the set into up to 16**w shards of near-equal size. Shard count is
the main cost lever on a batch cluster: each task pays a fixed start-up cost (container pull,
scheduling, ~50 submits/s per account on AWS Batch), so 65,536 one-image-prefix jobs spend hours
just being submitted, while 256 shards of ~1,300 images finish 250k images in minutes. The
planner therefore picks the smallest width whose shards hold no more than a target number of
images, within the foreach fan-out limit.

The plan is a pure function of the sorted key list: same input, same shards, same output names.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from steps.errors import ConfigError
from steps.layout import key_stem, object_stem

_SHA256_NAME = re.compile(r"^[0-9a-fA-F]{64}$")


MAX_WIDTH = 4  # 65,536 shards: beyond this, per-task overhead dominates any dataset.


@dataclass(frozen=True)
class Shard:
    """One unit of fan-out: the keys whose shard prefix is ``prefix``, or lies in the range
    ``prefix`` names (``"3a-41"``) when prefixes are packed.

    ``name`` is the stable identifier used in output paths; it is ``all`` for a width-0 plan.
    """

    prefix: str
    keys: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.prefix or "all"

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class ShardPlan:
    width: int
    shards: tuple[Shard, ...]
    target_size: int
    reason: str
    # First prefix of each packed range, covering the whole keyspace; empty: one prefix per shard.
    starts: tuple[str, ...] = ()

    @property
    def images(self) -> int:
        return sum(len(s) for s in self.shards)




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
    digest = stem.lower() if _SHA256_NAME.match(stem) else hashlib.sha256(key_stem(key).encode()).hexdigest()
    return digest[:width]


def group_by_prefix(keys: Iterable[str], width: int) -> tuple[Shard, ...]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        groups[shard_prefix(key, width)].append(key)
    return tuple(Shard(p, tuple(sorted(ks))) for p, ks in sorted(groups.items()))


def range_name(starts: Sequence[str], index: int, width: int) -> str:
    """``"3a-41"``: the prefixes from ``starts[index]`` up to the next start."""
    end = int(starts[index + 1], 16) - 1 if index + 1 < len(starts) else 16**width - 1
    return f"{starts[index]}-{end:0{width}x}"


def group_by_ranges(keys: Iterable[str], width: int, starts: Sequence[str]) -> tuple[Shard, ...]:
    groups: dict[int, list[str]] = defaultdict(list)
    for key in keys:
        groups[bisect.bisect_right(starts, shard_prefix(key, width)) - 1].append(key)
    return tuple(Shard(range_name(starts, i, width), tuple(sorted(ks))) for i, ks in sorted(groups.items()))


def pack_starts(groups: Sequence[Shard], max_shards: int, width: int) -> tuple[str, ...]:
    """Cut the sorted prefix groups into at most ``max_shards`` contiguous ranges of near-equal
    size: a range starts at the first group past each 1/max_shards quantile of the keys. The
    first starts at ``00…``, so the ranges cover every prefix, including ones empty today."""
    total = sum(len(g) for g in groups)
    starts = ["0" * width]
    done = 0
    quantile = 1
    for group in groups:
        if done >= quantile * total / max_shards and group.prefix > starts[-1]:
            starts.append(group.prefix)
            while done >= quantile * total / max_shards:
                quantile += 1
        done += len(group)
    return tuple(starts)


def choose_width(count: int, target_size: int) -> int:
    """Smallest width whose average shard holds at most ``target_size`` keys."""
    if count <= target_size:
        return 0
    return min(MAX_WIDTH, math.ceil(math.log(count / target_size, 16)))


def plan_shards(
    keys: Iterable[str], target_size: int, max_shards: int, width: int = 0, starts: Sequence[str] = ()
) -> ShardPlan:
    """Plan shards over ``keys``; ``width`` 0 chooses it from the key count.

    When the target needs more prefixes than ``max_shards``, contiguous prefixes are packed into
    ``max_shards`` ranges (and the reason says so): a fan-out of 100 tasks, not a fall back to
    16. ``starts`` reuses the ranges of an earlier plan, so a rerun's shards line up with it. A
    forced width that gives more than ``max_shards`` shards is an error.
    """
    if target_size < 1:
        raise ConfigError("shard size", target_size, "at least 1 image per shard", "pass --shard-size 1500")
    if not 0 <= width <= MAX_WIDTH:
        raise ConfigError(
            "prefix width", width, f"0 (auto) to {MAX_WIDTH}", "pass --prefix-width 0 to choose it from the data"
        )
    unique = sorted(set(keys))
    if starts:
        shards = group_by_ranges(unique, width, starts)
        return ShardPlan(width, shards, target_size, f"prefix ranges of the earlier run ({len(starts)})", tuple(starts))
    if width:
        shards = group_by_prefix(unique, width)
        if len(shards) > max_shards:
            raise ConfigError(
                "prefix width",
                width,
                f"at most {max_shards} shards (it gives {len(shards)})",
                f"pass --prefix-width 0, or raise both --max-shards {len(shards)} and Metaflow's "
                f"`run --max-num-splits {len(shards)}`",
            )
        return ShardPlan(width, shards, target_size, f"prefix width {width} set by the user")

    wanted = choose_width(len(unique), target_size)
    groups = group_by_prefix(unique, wanted)
    if len(groups) <= max_shards:
        return ShardPlan(
            wanted, groups, target_size, f"prefix width {wanted} keeps shards at or under ~{target_size} images"
        )
    packed = pack_starts(groups, max_shards, wanted)
    shards = group_by_ranges(unique, wanted, packed)
    reason = (
        f"prefix width {wanted}, {len(groups)} prefixes packed into {len(shards)} ranges to stay within "
        f"--max-shards {max_shards}, so shards average {len(unique) // len(shards)} images (target {target_size}); "
        "raise --max-shards and Metaflow's `run --max-num-splits` for smaller shards"
    )
    return ShardPlan(wanted, shards, target_size, reason, packed)
