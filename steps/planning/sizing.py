"""How big a shard should be: a fixed image count, or what one task does in ``--task-minutes``.

A task should run for minutes: each pays start-up (instance, container pull, scheduling) and AWS
advises jobs of at least 3-5 minutes, while hour-long tasks lose an hour of work to one spot
reclaim and leave the cluster idle at the tail. So by default a shard holds the images one task
handles in ``--task-minutes`` at the flow's calibrated per-image cost (``config/throughput.toml``).
The fan-out limit (``--max-shards``, matching Metaflow's ``run --max-num-splits``) may pack more
images into each shard; if that makes tasks run past ``MAX_TASK_FACTOR`` times the target, the
plan is refused with the exact settings that give tasks of the target length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from steps.cost.throughput import ImageCost, images_for, task_minutes
from steps.errors import ConfigError
from steps.planning.prefixes import ShardLayout

MAX_TASK_FACTOR = 3  # packed shards may run up to 3x --task-minutes (10 -> 30) before the plan is refused


@dataclass(frozen=True)
class Sizing:
    """``shard_size`` images per shard when set (> 0); else ``task_minutes`` of ``cost`` per task."""

    shard_size: int = 0
    task_minutes: float = 10.0
    cost: ImageCost | None = None

    @property
    def by_time(self) -> bool:
        return self.shard_size == 0

    def target_images(self) -> int:
        if not self.by_time:
            return self.shard_size
        if self.cost is None:
            raise ConfigError("--shard-size", 0, "an image count when no per-image cost is known", "pass --shard-size")
        if not self.task_minutes > 0:
            raise ConfigError(
                "--task-minutes", self.task_minutes, "a positive number of minutes", "pass --task-minutes 10"
            )
        return images_for(self.task_minutes, self.cost)

    def largest_minutes(self, layout: ShardLayout) -> float | None:
        largest = max((r.images for r in layout.ranges), default=0)
        return task_minutes(largest, self.cost) if self.cost else None

    def explain(self, layout: ShardLayout) -> str:
        """The layout's reason plus where the target came from and the longest task it gives."""
        minutes = self.largest_minutes(layout)
        if minutes is None:
            return layout.reason
        target = (
            f"target {self.target_images()} images a shard = {self.task_minutes:g} task minutes"
            if self.by_time
            else f"--shard-size {self.shard_size}"
        )
        largest = max(r.images for r in layout.ranges)
        estimate = f"largest shard {largest} images ≈ {minutes:.1f} task minutes at {self.cost.describe()}"
        return f"{layout.reason}; {target}; {estimate}"

    def check_fanout(self, layout: ShardLayout, images: int, max_shards: int) -> None:
        """Refuse a time-sized plan whose fan-out limit makes tasks run past ``MAX_TASK_FACTOR``
        times the target, naming the ``--max-shards`` / ``--max-num-splits`` that fix it."""
        minutes = self.largest_minutes(layout)
        if not self.by_time or minutes is None or minutes <= MAX_TASK_FACTOR * self.task_minutes:
            return
        needed = math.ceil(images / self.target_images())
        raise ConfigError(
            "--max-shards",
            max_shards,
            f"enough shards for ~{self.task_minutes:g}-minute tasks ({images} images at "
            f"{self.cost.ms_per_image:g} ms need {needed} shards; {max_shards} give {minutes:.0f}-minute tasks)",
            f"pass --max-shards {needed} and Metaflow's `run --max-num-splits {needed}` (or "
            f"METAFLOW_RUN_MAX_NUM_SPLITS={needed}; see docs/deploy.md for --max-workers), "
            f"or accept longer tasks with --task-minutes {math.ceil(minutes)}",
        )


@dataclass(frozen=True)
class PlanSettings:
    """What shapes a plan besides its keys: shard size, fan-out, prefix width, and how it is written
    (``threads`` for the key lists; ``store=False`` only counts; ``buffer_bytes`` of keys in memory)."""

    sizing: Sizing
    max_shards: int
    prefix_width: int
    threads: int
    store: bool = True
    buffer_bytes: int = 8 << 20
