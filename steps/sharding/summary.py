"""Per-shard statistics and the run summary.

Shard tasks return small ``ShardStats`` (never whole manifests, which can be millions of rows); the
join merges them into the run summary.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

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


@dataclass(frozen=True)
class RunSummary:
    """What a sharded run did, in one typed value: shards add up to a run, runs to a dispatch.

    Counts add; ``seconds`` (wall time) takes the longest, since added parts ran side by side —
    the join sets the run's own wall time with ``dataclasses.replace``. ``to_artifact()`` is the
    plain ``summary`` dict the Metaflow UI shows; ``from_artifact`` reads one back (DispatchFlow).
    """

    images: int = 0
    images_this_run: int = 0  # images of shards processed by this run (not skipped as complete)
    processed: int = 0
    rejected: int = 0
    shards: int = 0
    skipped_shards: int = 0
    reused_chunks: int = 0
    seconds: float = 0.0
    task_seconds: float = 0.0  # summed task time of processed shards: what instances bill
    model_seconds: float = 0.0  # inference: time the model was busy (transfer + forward + top-k)
    gpu_seconds: float = 0.0  # inference: task time of shards that ran on CUDA
    devices: tuple[str, ...] = ()
    labelled: int = 0  # inference: predicted images with a ground-truth label
    correct: int = 0
    instance_types: tuple[str, ...] = ()
    estimated_usd: float = 0.0

    @classmethod
    def of_shard(
        cls, stats: ShardStats, device: str = "", model_seconds: float = 0.0, labelled: int = 0, correct: int = 0
    ) -> RunSummary:
        worked = not stats.skipped
        return cls(
            images=stats.images,
            images_this_run=stats.images if worked else 0,
            processed=stats.processed,
            rejected=stats.rejected,
            shards=1,
            skipped_shards=0 if worked else 1,
            reused_chunks=stats.reused_chunks,
            seconds=stats.seconds if worked else 0.0,
            task_seconds=stats.seconds if worked else 0.0,
            model_seconds=model_seconds,
            gpu_seconds=stats.seconds if worked and device.startswith("cuda") else 0.0,
            devices=(device,) if device else (),
            labelled=labelled,
            correct=correct,
        )

    def __add__(self, other: RunSummary) -> RunSummary:
        merged = {}
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            if item.name == "seconds":
                merged[item.name] = max(mine, theirs)
            elif isinstance(mine, tuple):
                merged[item.name] = tuple(sorted(set(mine) | set(theirs)))
            else:
                merged[item.name] = mine + theirs
        return RunSummary(**merged)

    def __radd__(self, other: int) -> RunSummary:  # sum() starts from 0
        return self if other == 0 else NotImplemented

    def priced(self, instance_type: str, usd_per_hour: float) -> RunSummary:
        """With the estimated cost of this run's task time on ``instance_type`` at ``usd_per_hour``.

        Task seconds are what instances bill for (start-up excluded: it is amortised over a shard).
        """
        return replace(self, instance_types=(instance_type,), estimated_usd=self.task_seconds / 3600 * usd_per_hour)

    @property
    def images_per_second(self) -> float:
        return self.images_this_run / self.seconds if self.seconds > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def usd_per_million_images(self) -> float | None:
        return self.estimated_usd / self.images_this_run * 1e6 if self.images_this_run and self.estimated_usd else None

    def to_artifact(self) -> dict:
        """Plain data for the ``summary`` artifact (rounded for people), derived figures included."""
        plain = {}
        for item in fields(self):
            value = getattr(self, item.name)
            plain[item.name] = ", ".join(value) if isinstance(value, tuple) else _rounded(value)
        plain["images_per_second"] = _rounded(self.images_per_second)
        plain["accuracy"] = None if self.accuracy is None else round(self.accuracy, 4)
        plain["usd_per_million_images"] = _rounded(self.usd_per_million_images)
        return plain

    @classmethod
    def from_artifact(cls, plain: dict) -> RunSummary:
        values = {item.name: plain[item.name] for item in fields(cls)}
        for name in ("devices", "instance_types"):
            values[name] = tuple(part for part in values[name].split(", ") if part)
        return cls(**values)

    def headline(self, verb: str, output: str) -> str:
        """One human sentence for the end of a run, e.g. ``verb`` = "Preprocessed" or "Predicted"."""
        reuse = (
            f"; {self.skipped_shards} of {self.shards} shards were already complete and skipped"
            if self.skipped_shards
            else ""
        )
        busy = (
            f"; model busy {self.model_seconds:.1f} s on {', '.join(self.devices)}, {self.gpu_seconds:.1f} GPU-seconds"
            if self.devices
            else ""
        )
        accuracy = self.accuracy
        scored = f", accuracy {accuracy:.1%} on {self.labelled} labelled images" if accuracy is not None else ""
        cost = self.usd_per_million_images
        priced = f" ≈ ${cost:,.2f} per million images on {', '.join(self.instance_types)} spot" if cost else ""
        return (
            f"{verb} {self.images} images in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s this run"
            f"{busy}): {self.processed} ok, {self.rejected} rejected{scored}, {self.shards} shards{reuse}{priced}. "
            f"Output: {output}"
        )


def _rounded(value: float | int | None) -> float | int | None:
    return round(value, 4) if isinstance(value, float) else value
