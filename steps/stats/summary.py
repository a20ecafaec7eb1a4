"""Per-shard statistics and the run summary.

Shard tasks return small ``ShardStats`` (never whole manifests, which can be millions of rows); the
join merges them into the run summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from steps.cost.billing import BillingRate, Work, bill
from steps.report import usd
from steps.stats.rejects import count_reasons, first_examples

if TYPE_CHECKING:  # the module stays free of Arrow: flow files import it, and every task and card refresh imports them
    from steps.output.ledger import ShardOutcome

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
    reused_images: int = 0  # in chunks an earlier attempt or run committed
    attempt_seconds: tuple[float, ...] = ()  # every attempt of this task in this run, the final one last
    reasons: tuple[tuple[str, int], ...] = ()  # (kind of reject, count): steps.stats.rejects
    rejects: tuple[tuple[str, str], ...] = ()  # (key, reason): the first few of each kind
    samples: tuple[str, ...] = ()  # a few good keys, for before/after thumbnails
    stale_files: int = 0  # files of earlier runs removed: their keys are no longer in this shard
    chunk_size: int = 0  # images a chunk holds at most (0: not known, the shard bounds it)

    @property
    def worked_images(self) -> int:
        """Images this task processed itself (not reused, not skipped)."""
        return 0 if self.skipped else self.images - self.reused_images

    @property
    def images_per_second(self) -> float:
        return self.worked_images / self.seconds if self.seconds > 0 else 0.0

    @property
    def killed_attempts(self) -> int:
        return max(len(self.attempt_seconds) - 1, 0)

    @property
    def run_images(self) -> int:
        """Images this run's attempts committed: the final attempt's own, plus on a retried task the chunks
        its killed attempts committed (the final one reused them). Chunks of earlier runs are theirs."""
        return self.worked_images + (self.reused_images if self.killed_attempts else 0)

    @property
    def redone_images(self) -> int:
        """An upper bound of the work killed attempts lost: the chunk each had in flight. A retry that found
        the shard complete ran no chunks (``chunks`` is 0): the last kill came after the final commit."""
        killed_mid_shard = self.killed_attempts - (0 if self.chunks else 1)
        return max(killed_mid_shard, 0) * min(self.chunk_size or self.images, self.images)


def shard_stats(outcome: ShardOutcome, attempt_seconds: tuple[float, ...] = ()) -> ShardStats:
    """Stats of a finished shard from its manifest, with the seconds of this run's attempts.

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
    # A retried attempt that finds the shard complete was preceded by an attempt of this run that
    # completed it and was killed before it could report: that work is this run's, not an earlier run's.
    skipped = outcome.skipped and len(attempt_seconds) <= 1
    return ShardStats(
        name=outcome.name,
        images=manifest.num_rows,
        processed=len(ok_keys),
        rejected=len(rejects),
        skipped=skipped,
        seconds=outcome.seconds,
        chunks=outcome.chunks,
        reused_chunks=outcome.skipped_chunks,
        reused_images=outcome.reused_images,
        attempt_seconds=attempt_seconds,
        reasons=count_reasons(reason for _, reason in rejects),
        rejects=first_examples(rejects),
        samples=tuple(ok_keys[::step][:SAMPLES_PER_SHARD]),
        stale_files=outcome.stale_files,
        chunk_size=outcome.chunk_size,
    )


def _added(name: str, mine: object, theirs: object) -> object:
    """Two parts' values of one field, added: wall seconds take the longest (the parts ran side by
    side), sets of names unite, basis sentences join, counts and times add."""
    if name == "seconds":
        return max(mine, theirs)
    if isinstance(mine, tuple):
        return tuple(sorted(set(mine) | set(theirs)))
    if isinstance(mine, str):
        return "; ".join(part for part in (mine, theirs) if part)
    return mine + theirs


def _plain_fields(value: object, skip: tuple[str, ...] = ()) -> dict:
    """A dataclass's fields as plain data (6 significant digits, name tuples joined by ", ")."""
    return {
        item.name: ", ".join(v) if isinstance(v := getattr(value, item.name), tuple) else _rounded(v)
        for item in fields(value)
        if item.name not in skip
    }


@dataclass(frozen=True)
class FlowStats:
    """A flow's own figures in its run summary, beside the generic counts, time and cost: an open
    extension, as datatrove lets each step add its metrics to a stats object. A flow subclasses
    it (``steps.inference.summary.InferenceStats``: model, devices, accuracy); the base adds
    nothing. Fields add as ``RunSummary``'s do; the hooks say what the headline and the report
    show of them."""

    def __add__(self, other: FlowStats) -> FlowStats:
        if type(other) is FlowStats:
            return self
        if type(self) is FlowStats:
            return other
        values = {f.name: _added(f.name, getattr(self, f.name), getattr(other, f.name)) for f in fields(self)}
        return type(self)(**values)

    def to_artifact(self) -> dict:
        """Plain data, merged into the ``summary`` artifact; derived figures included."""
        return _plain_fields(self)

    @classmethod
    def from_artifact(cls, plain: dict) -> FlowStats:
        values = {f.name: plain[f.name] for f in fields(cls)}
        for item in fields(cls):
            if isinstance(item.default, tuple):
                values[item.name] = tuple(part for part in values[item.name].split(", ") if part)
        return cls(**values)

    def work_phrase(self) -> str:
        """Said after the run's throughput in the headline (``; model busy …``), or empty."""
        return ""

    def outcome_phrase(self) -> str:
        """Said after the ok / rejected counts in the headline (``, accuracy …``), or empty."""
        return ""

    def rows(self) -> list[list[object]]:
        """The report's totals rows for these figures, after the generic ones."""
        return []


@dataclass(frozen=True)
class RunSummary:
    """What a sharded run did, in one typed value: shards add up to a run, runs to a dispatch.

    The generic part (counts, time, cost) is every sharded flow's; ``flow_stats`` holds the flow's
    own figures (``FlowStats``). Counts add; ``seconds`` (wall time) takes the longest, since added
    parts ran side by side — the join sets the run's own wall time with ``dataclasses.replace``.
    ``to_artifact()`` is the plain ``summary`` dict the Metaflow UI shows (the flow's figures
    alongside); ``from_artifact`` reads one back (DispatchFlow), given the flow's ``FlowStats`` type.
    """

    images: int = 0
    images_this_run: int = 0  # images of shards processed by this run (not skipped as complete)
    images_worked: int = 0  # images this run's attempts committed (chunks reused from earlier runs excluded)
    images_redone: int = 0  # at most: processed again after killed attempts (ShardStats.redone_images)
    processed: int = 0
    rejected: int = 0
    shards: int = 0
    skipped_shards: int = 0
    reused_chunks: int = 0
    stale_files: int = 0  # files of earlier runs removed (superseded shards, removed inputs)
    seconds: float = 0.0
    attempts: int = 0  # task attempts, killed and retried ones included
    retried_attempts: int = 0
    task_seconds: float = 0.0  # every attempt of every task: what instances bill
    final_task_seconds: float = 0.0  # the attempts that finished
    instance_types: tuple[str, ...] = ()
    task_hours: float = 0.0  # what the estimate is priced on (billed, or the calibrated rate locally)
    estimated_usd: float = 0.0
    cost_basis: str = ""  # one sentence: what the dollars are based on
    flow_stats: FlowStats = FlowStats()

    @classmethod
    def of_shard(cls, stats: ShardStats, flow_stats: FlowStats = FlowStats()) -> RunSummary:
        worked = not stats.skipped
        attempts = stats.attempt_seconds or (stats.seconds,)
        return cls(
            images=stats.images,
            images_this_run=stats.images if worked else 0,
            images_worked=stats.run_images,
            images_redone=stats.redone_images,
            processed=stats.processed,
            rejected=stats.rejected,
            shards=1,
            skipped_shards=0 if worked else 1,
            reused_chunks=stats.reused_chunks,
            stale_files=stats.stale_files,
            seconds=stats.seconds if worked else 0.0,
            attempts=len(attempts),
            retried_attempts=len(attempts) - 1,
            task_seconds=sum(attempts),
            final_task_seconds=attempts[-1],
            flow_stats=flow_stats,
        )

    def __add__(self, other: RunSummary) -> RunSummary:
        return RunSummary(
            **{f.name: _added(f.name, getattr(self, f.name), getattr(other, f.name)) for f in fields(self)}
        )

    def __radd__(self, other: int) -> RunSummary:  # sum() starts from 0
        return self if other == 0 else NotImplemented

    def billed(self, rate: BillingRate, *, on_cloud: bool) -> RunSummary:
        """With the cost of this run's work at ``rate`` (``steps.cost.billing.bill``) and its basis."""
        work = Work(self.images_worked, self.images_redone, self.attempts, self.retried_attempts, self.task_seconds)
        cost = bill(rate, work, on_cloud=on_cloud)
        return replace(
            self,
            instance_types=(rate.instance_type,),
            task_hours=cost.task_hours,
            estimated_usd=cost.usd,
            cost_basis=cost.basis,
        )

    @property
    def images_per_second(self) -> float:
        """Images this run processed itself per wall-clock second (reused rows do not count)."""
        return self.images_worked / self.seconds if self.seconds > 0 else 0.0

    @property
    def usd_per_million_images(self) -> float | None:
        return self.estimated_usd / self.images_worked * 1e6 if self.images_worked and self.estimated_usd else None

    def to_artifact(self) -> dict:
        """Plain data for the ``summary`` artifact (6 significant digits), derived figures included."""
        plain = _plain_fields(self, skip=("flow_stats",))
        plain["images_per_second"] = _rounded(self.images_per_second)
        plain["usd_per_million_images"] = _rounded(self.usd_per_million_images)
        return {**plain, **self.flow_stats.to_artifact()}

    @classmethod
    def from_artifact(cls, plain: dict, flow_stats: type[FlowStats] = FlowStats) -> RunSummary:
        values = {item.name: plain[item.name] for item in fields(cls) if item.name != "flow_stats"}
        values["instance_types"] = tuple(part for part in values["instance_types"].split(", ") if part)
        return cls(**values, flow_stats=flow_stats.from_artifact(plain))

    def cost_line(self) -> str:
        """The dollars in one phrase, with their basis; empty when unpriced."""
        per_million = self.usd_per_million_images
        if per_million is None:
            return ""
        return f"≈ {usd(per_million)} per million images ({usd(self.estimated_usd)} this run; {self.cost_basis})"

    def headline(self, verb: str, output: str) -> str:
        """One human sentence for the end of a run, e.g. ``verb`` = "Preprocessed" or "Predicted"."""
        reuse = (
            f"; {self.skipped_shards} of {self.shards} shards were already complete and skipped"
            if self.skipped_shards
            else ""
        )
        stale = f"; {self.stale_files} stale files of earlier runs removed" if self.stale_files else ""
        cost = self.cost_line()
        priced = f" {cost}" if cost else ""
        return (
            f"{verb} {self.images} images in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s this run"
            f"{self.flow_stats.work_phrase()}): {self.processed} ok, {self.rejected} rejected"
            f"{self.flow_stats.outcome_phrase()}, {self.shards} shards{reuse}{stale}.{priced} "
            f"Output: {output}"
        )


def _rounded(value: float | int | None) -> float | int | None:
    """Floats to 6 significant digits: a short run's dollars are fractions of a cent."""
    if not isinstance(value, float) or value == 0 or not math.isfinite(value):
        return value
    return round(value, 5 - math.floor(math.log10(abs(value))))
