"""Report sections every sharded run shows: totals, shards, rejects and throughput.
"""

from __future__ import annotations

from collections.abc import Sequence

from steps.report import Chart, Table, bar_chart_png
from steps.sharding.stragglers import ShardTiming, durations
from steps.sharding.summary import RunSummary, ShardStats

DURATION_ROWS = 20  # the slowest shards listed; the headline covers them all


def totals_table(summary: RunSummary) -> Table:
    """The summary as a field/value table: a one-row table of ~20 columns is cut off on screen."""
    return Table("Totals", ["field", "value"], [[name, value] for name, value in summary.to_artifact().items()])


def shard_table(stats: Sequence[ShardStats]) -> Table:
    return Table(
        "Shards",
        ["shard", "images", "ok", "rejected", "seconds", "images/s", "reused chunks", "state"],
        [
            [
                s.name,
                s.images,
                s.processed,
                s.rejected,
                round(s.seconds, 1),
                round(s.images_per_second, 1),
                s.reused_chunks,
                "skipped (complete earlier)" if s.skipped else "processed",
            ]
            for s in stats
        ],
    )


def rejects_table(stats: Sequence[ShardStats]) -> Table:
    rows = [[key, reason] for s in stats for key, reason in s.rejects]
    total = sum(s.rejected for s in stats)
    shown = f" (first {len(rows)} of {total})" if total > len(rows) else ""
    return Table(f"Rejected inputs{shown}", ["key", "reason"], rows)


def throughput_chart(stats: Sequence[ShardStats]) -> Chart:
    worked = [s for s in stats if not s.skipped]
    return Chart(
        "Throughput per shard",
        bar_chart_png(
            [s.name for s in worked], [s.images_per_second for s in worked], "images/s", "images/s per shard"
        ),
    )


def shard_timing(stats: ShardStats) -> ShardTiming:
    return ShardTiming(stats.name, stats.seconds, stats.images, reused_chunks=stats.reused_chunks)


def durations_table(stats: Sequence[ShardStats]) -> Table:
    """How long each processed shard took, slowest first, stragglers marked with why."""
    timings = sorted((shard_timing(s) for s in stats if not s.skipped), key=lambda t: (-t.seconds, t.name))
    found = durations(timings)
    why = {s.timing.name: s for s in found.stragglers}
    shown = f"the {DURATION_ROWS} slowest of {len(timings)}; " if len(timings) > DURATION_ROWS else ""
    return Table(
        f"Shard durations and stragglers ({shown}{found.headline})",
        ["shard", "seconds", "images", "ms/image", "attempts", "reused chunks", "straggler: why"],
        [
            [
                t.name,
                round(t.seconds, 1),
                t.images,
                round(t.ms_per_image, 1),
                t.attempts,
                t.reused_chunks,
                f"{why[t.name].times_median:.1f}x median: " + "; ".join(why[t.name].why) if t.name in why else "",
            ]
            for t in timings[:DURATION_ROWS]
        ],
    )
