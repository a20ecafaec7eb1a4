"""Report sections every sharded run shows: totals, cost, shards, rejects by reason and throughput."""

from __future__ import annotations

from collections.abc import Sequence

from steps.report import Chart, Table, bar_chart, human, usd
from steps.stats.rejects import merge_counts, reason_kind
from steps.stats.stragglers import ShardTiming, durations
from steps.stats.summary import RunSummary, ShardStats

EXAMPLES_SHOWN = 3  # per reason, on the card
DURATION_ROWS = 20  # the slowest shards listed; the headline covers them all
# A card holds every shard's row and bar up to here; a run of thousands of shards lists the first
# ones by name (every shard's numbers are in the join's ``shard_stats`` artifacts and the manifests).
SHARD_ROWS = 100


def totals_table(summary: RunSummary) -> Table:
    """The summary for people: labels with units, rounded values, no blank cells."""
    s = summary
    rows = [
        ["images", s.images],
        ["ok / rejected", f"{s.processed} / {s.rejected}"],
        ["processed by this run (images)", s.images_worked],
        ["shards (skipped as complete)", f"{s.shards} ({s.skipped_shards})"],
        ["chunks reused", s.reused_chunks],
        ["wall time (s)", human(s.seconds)],
        ["throughput this run (images/s)", human(s.images_per_second)],
        ["task attempts (retried)", f"{s.attempts} ({s.retried_attempts})"],
        ["task time, all attempts (s)", human(s.task_seconds)],
    ]
    rows += s.flow_stats.rows()  # the flow's own figures (steps.stats.summary.FlowStats)
    rows += cost_rows(s)
    return Table("Totals", ["item", "value"], rows)


def cost_rows(summary: RunSummary) -> list[list[object]]:
    """The run's dollars, the same figures as its headline, with what they are based on."""
    per_million = summary.usd_per_million_images
    return [
        ["instance type", ", ".join(summary.instance_types) or "–"],
        ["priced task-hours (h)", human(summary.task_hours)],
        ["cost of this run ($)", usd(summary.estimated_usd)],
        ["$ per million images", usd(per_million) if per_million is not None else "–"],
        ["cost basis", summary.cost_basis or "not priced"],
    ]


def first_shards(title: str, shards: Sequence[ShardStats]) -> tuple[str, Sequence[ShardStats]]:
    """``title`` and the shards a card shows: all of them, or the first ``SHARD_ROWS`` by name, said so."""
    if len(shards) <= SHARD_ROWS:
        return title, shards
    return f"{title} (the first {SHARD_ROWS} of {len(shards)} by name)", sorted(shards, key=lambda s: s.name)[
        :SHARD_ROWS
    ]


def shard_table(stats: Sequence[ShardStats]) -> Table:
    title, stats = first_shards("Shards", stats)
    return Table(
        title,
        ["shard", "images", "ok", "rejected", "seconds", "images/s", "attempts", "reused chunks", "state"],
        [
            [
                s.name,
                s.images,
                s.processed,
                s.rejected,
                human(s.seconds),
                human(s.images_per_second),
                len(s.attempt_seconds) or 1,
                s.reused_chunks,
                "skipped (complete earlier)" if s.skipped else "processed",
            ]
            for s in stats
        ],
    )


def rejects_tables(stats: Sequence[ShardStats]) -> list[Table]:
    """Rejects by reason (reason → count), then the first few examples of each reason."""
    counts = merge_counts([s.reasons for s in stats])
    shown: dict[str, list[tuple[str, str]]] = {}
    for s in stats:
        for key, reason in s.rejects:
            examples = shown.setdefault(reason_kind(reason), [])
            if len(examples) < EXAMPLES_SHOWN:
                examples.append((key, reason))
    total = sum(count for _, count in counts)
    return [
        Table(f"Rejected inputs by reason ({total} in all)", ["reason", "count"], [[k, c] for k, c in counts]),
        Table(
            f"Rejected inputs: the first {EXAMPLES_SHOWN} of each reason (all are in the shard manifests)",
            ["key", "reason"],
            [[key, reason] for kind, _ in counts for key, reason in shown.get(kind, [])],
        ),
    ]


def throughput_chart(stats: Sequence[ShardStats]) -> Chart:
    title, worked = first_shards("Throughput per shard", [s for s in stats if not s.skipped])
    return Chart(
        title,
        bar_chart([s.name for s in worked], [s.images_per_second for s in worked], "images/s"),
    )


def shard_timing(stats: ShardStats) -> ShardTiming:
    """Every attempt of this run counts: a killed attempt is part of why a shard was slow."""
    attempts = stats.attempt_seconds or (stats.seconds,)
    return ShardTiming(stats.name, sum(attempts), stats.images, len(attempts), stats.reused_chunks)


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
