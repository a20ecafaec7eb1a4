"""How long each shard took, and why the slowest ones were slow.

A run lasts as long as its slowest shard, so the report names the stragglers — shards that took
clearly longer than the median — with the reasons the numbers support: more attempts (a spot
loss or a transient failure redid work), more images than the typical shard, or more time per
image (larger or harder-to-decode files, or a slower instance). Reused chunks are shown too:
they make an attempt shorter, so a resumed shard's own time understates its real cost.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

STRAGGLER_FACTOR = 1.5  # this many times the median duration or more
MAX_STRAGGLERS = 5


@dataclass(frozen=True)
class ShardTiming:
    """One processed shard's time, as the run's report sees it."""

    name: str
    seconds: float  # every attempt of this run together
    images: int  # in the shard
    attempts: int = 1
    reused_chunks: int = 0

    @property
    def ms_per_image(self) -> float:
        return self.seconds * 1000 / self.images if self.images else 0.0


@dataclass(frozen=True)
class Straggler:
    timing: ShardTiming
    times_median: float
    why: tuple[str, ...]


@dataclass(frozen=True)
class Durations:
    median_s: float
    p90_s: float
    slowest_s: float
    stragglers: tuple[Straggler, ...]

    @property
    def headline(self) -> str:
        spread = (
            f"median {self.median_s:.1f} s, p90 {self.p90_s:.1f} s, slowest {self.slowest_s:.1f} s"
            if self.slowest_s
            else "no shard was processed by this run"
        )
        named = ", ".join(s.timing.name for s in self.stragglers)
        return f"{spread}; stragglers: {named}" if named else f"{spread}; no stragglers"


def durations(timings: Sequence[ShardTiming]) -> Durations:
    """The spread of shard durations and the stragglers, slowest first."""
    if not timings:
        return Durations(0.0, 0.0, 0.0, ())
    seconds = sorted(t.seconds for t in timings)
    median = statistics.median(seconds)
    p90 = seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))]
    typical_images = statistics.median(t.images for t in timings)
    typical_ms = statistics.median(t.ms_per_image for t in timings)
    slow = [t for t in timings if len(timings) > 1 and median > 0 and t.seconds >= STRAGGLER_FACTOR * median]
    slow.sort(key=lambda t: (-t.seconds, t.name))
    stragglers = tuple(
        Straggler(t, t.seconds / median, reasons(t, typical_images, typical_ms)) for t in slow[:MAX_STRAGGLERS]
    )
    return Durations(median, p90, seconds[-1], stragglers)


def reasons(timing: ShardTiming, typical_images: float, typical_ms: float) -> tuple[str, ...]:
    why = []
    if timing.attempts > 1:
        why.append(f"retried: {timing.attempts} attempts")
    if typical_images and timing.images >= STRAGGLER_FACTOR * typical_images:
        why.append(f"large input: {timing.images} images vs {typical_images:.0f} typical")
    if typical_ms and timing.ms_per_image >= STRAGGLER_FACTOR * typical_ms:
        why.append(
            f"slow per image: {timing.ms_per_image:.0f} ms vs {typical_ms:.0f} ms typical "
            "(larger or harder-to-decode files, or a slower instance)"
        )
    if timing.reused_chunks:
        why.append(f"resumed: {timing.reused_chunks} chunks reused from an earlier attempt")
    return tuple(why) or ("no single cause in the numbers: size and time per image are typical",)
