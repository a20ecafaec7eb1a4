"""Per-shard statistics and the run summary.

Shard tasks return small ``ShardStats`` (never whole manifests, which can be millions of rows); the
join merges them into the run summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steps.sharding.ledger import ShardOutcome

MAX_REJECTS_PER_SHARD = 200


SAMPLES_PER_SHARD = 2


@dataclass(frozen=True)
class ShardStats:
    name: str
    images: int
    processed: int
    rejected: int
    skipped: bool  # complete in an earlier run
    seconds: float
    chunks: int = 0
    reused_chunks: int = 0
    rejects: tuple[tuple[str, str], ...] = ()  # (key, reason), at most MAX_REJECTS_PER_SHARD
    samples: tuple[str, ...] = ()  # a few good keys, for before/after thumbnails

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 and not self.skipped else 0.0


def shard_stats(outcome: ShardOutcome) -> ShardStats:
    """Stats of a finished shard from its manifest.

    Plain Python over the columns, not Arrow compute: Arrow's thread pool, once started in a
    task process, can abort that process at exit ("terminate called without an active
    exception"), which Metaflow counts as a failed attempt.
    """
    manifest = outcome.manifest
    rows = zip(*(manifest[c].to_pylist() for c in ("key", "status", "reason")), strict=True)
    ok_keys, rejects = [], []
    for key, status, reason in rows:
        if status == "ok":
            ok_keys.append(key)
        else:
            rejects.append((key, reason))
    step = max(1, len(ok_keys) // SAMPLES_PER_SHARD)
    return ShardStats(
        name=outcome.name,
        images=manifest.num_rows,
        processed=len(ok_keys),
        rejected=len(rejects),
        skipped=outcome.skipped,
        seconds=outcome.seconds,
        chunks=outcome.chunks,
        reused_chunks=outcome.skipped_chunks,
        rejects=tuple(rejects[:MAX_REJECTS_PER_SHARD]),
        samples=tuple(ok_keys[::step][:SAMPLES_PER_SHARD]),
    )


def summarize(stats: Sequence[ShardStats], seconds: float) -> dict:
    """The ``summary`` artifact: totals over all shards and this run's throughput."""
    worked = [s for s in stats if not s.skipped]
    images_this_run = sum(s.images for s in worked)
    return {
        "images": sum(s.images for s in stats),
        "images_this_run": images_this_run,
        "processed": sum(s.processed for s in stats),
        "rejected": sum(s.rejected for s in stats),
        "shards": len(stats),
        "skipped_shards": len(stats) - len(worked),
        "reused_chunks": sum(s.reused_chunks for s in stats),
        "seconds": round(seconds, 2),
        "task_seconds": round(sum(s.seconds for s in worked), 2),
        "images_per_second": round(images_this_run / seconds, 2) if seconds > 0 else 0.0,
    }


def merge_summaries(summaries: Sequence[dict], seconds: float) -> dict:
    """One ``summary`` over several runs' summaries (e.g. one run per region) that ran side by
    side for ``seconds`` of wall time: counts add up, throughput is over the whole wall time."""
    counts = ("images", "images_this_run", "processed", "rejected", "shards", "skipped_shards", "reused_chunks")
    merged: dict = {name: sum(s[name] for s in summaries) for name in counts}
    merged["seconds"] = round(seconds, 2)
    merged["task_seconds"] = round(sum(s["task_seconds"] for s in summaries), 2)
    merged["images_per_second"] = round(merged["images_this_run"] / seconds, 2) if seconds > 0 else 0.0
    return merged


def with_cost(summary: dict, instance_type: str, spot_price_per_hour: float) -> dict:
    """Add the estimated spot cost of this run's task time and the $ per million images it implies.

    Task seconds are what instances bill for (start-up excluded: it is amortised over a shard).
    """
    cost = summary["task_seconds"] / 3600 * spot_price_per_hour
    worked = summary["images_this_run"]
    return {
        **summary,
        "instance_type": instance_type,
        "spot_usd_per_hour": spot_price_per_hour,
        "estimated_usd": round(cost, 4),
        "usd_per_million_images": round(cost / worked * 1e6, 2) if worked else None,
    }


def headline(verb: str, summary: dict, output: str) -> str:
    """One human sentence for the end of a run."""
    skipped = summary["skipped_shards"]
    reuse = f"; {skipped} of {summary['shards']} shards were already complete and skipped" if skipped else ""
    cost = summary.get("usd_per_million_images")
    priced = f" ≈ ${cost:,.2f} per million images on {summary['instance_type']} spot" if cost else ""
    return (
        f"{verb} {summary['images']} images in {summary['seconds']:.1f} s "
        f"({summary['images_per_second']:.1f} images/s this run): {summary['processed']} ok, "
        f"{summary['rejected']} rejected, {summary['shards']} shards{reuse}{priced}. Output: {output}"
    )
