"""The in-memory planner: ``plan_layout`` over a key list held whole, with each shard's sorted keys.

Only for tests and benches with small key lists (the flows plan with the streaming
``steps.planning.run_plan.stream_plan``); the tests check the streaming planner against it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from steps.planning.prefixes import PrefixCounts, cell_of, plan_layout


@dataclass(frozen=True)
class Shard:
    """A shard with its sorted keys; ``name`` is ``all`` for a width-0 plan."""

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
    starts: tuple[str, ...] = ()

    @property
    def images(self) -> int:
        return sum(len(s) for s in self.shards)


def plan_shards(
    keys: Iterable[str], target_size: int, max_shards: int, width: int = 0, starts: Sequence[str] = ()
) -> ShardPlan:
    """``plan_layout`` over keys held in memory, with each shard's sorted keys."""
    unique = sorted(set(keys))
    counts = PrefixCounts()
    cells = [cell_of(k) for k in unique]
    for cell in cells:
        counts.add(cell)
    layout = plan_layout(counts, target_size, max_shards, width, starts)
    firsts = [r.first for r in layout.ranges]
    grouped: list[list[str]] = [[] for _ in layout.ranges]
    for key, cell in zip(unique, cells, strict=True):
        grouped[bisect.bisect_right(firsts, cell) - 1].append(key)
    shards = tuple(
        Shard("" if r.name == "all" else r.name, tuple(g)) for r, g in zip(layout.ranges, grouped, strict=True)
    )
    return ShardPlan(layout.width, shards, target_size, layout.reason, layout.starts)
