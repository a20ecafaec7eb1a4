"""Bills over generated attempt histories: killed, skipped, retried and all-succeeded shard tasks.

Each history is simulated chunk by chunk the way ``steps.output.ledger.run_shard`` runs a shard, so the
test knows the truth: how many images this run's attempts really processed (the partial chunk a kill
lost included) and how many they committed. The bill must never be under that work, never be over it
by more than the chunks killed attempts could have had in flight, and on the cloud bill exactly the
attempts' seconds. A retry that only finds its shard complete (~0 s) must not inflate anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.cost.billing import BillingRate
from steps.output.ledger import ShardOutcome, chunk_ranges
from steps.stats.summary import RunSummary, shard_stats

RATE = BillingRate("us-east-1", "c7i.xlarge", "no GPU, 4 vCPU", 0.36, 2, 0.004, "test")
PRICE_PER_IMAGE = RATE.seconds_per_image / 3600 * RATE.usd_per_task_hour


@dataclass(frozen=True)
class Truth:
    summary: RunSummary
    processed: int  # images this run's attempts processed, lost in-flight work included
    committed: int  # images this run's attempts committed
    earlier_reused: int  # images of chunks an earlier run committed, reused by a retried task
    kills: int
    chunk_size: int
    seconds: tuple[float, ...]

    @property
    def slack(self) -> int:
        """How far over the work the bill may be: the in-flight chunk of each kill and, on a retried task,
        the chunks an earlier run committed (not told apart from the killed attempts')."""
        return self.kills * self.chunk_size + self.earlier_reused


@st.composite
def shard_history(draw: st.DrawFn, name: str) -> Truth:
    images = draw(st.integers(1, 400))
    chunk_size = draw(st.integers(1, 64))
    ranges = chunk_ranges(images, chunk_size)
    manifest = pa.table({"key": [f"k{i}" for i in range(images)], "status": ["ok"] * images, "reason": [""] * images})
    seconds = st.floats(0.001, 5000.0)
    if draw(st.booleans()) and draw(st.booleans()):  # complete in an earlier run: one attempt checks it
        attempt = (draw(seconds),)
        outcome = ShardOutcome(name, manifest, 0, 0, 0.0, skipped=True, chunk_size=chunk_size)
        return Truth(RunSummary.of_shard(shard_stats(outcome, attempt)), 0, 0, 0, 0, chunk_size, attempt)
    earlier = draw(st.integers(0, len(ranges)))  # chunks an earlier, failed run committed
    committed, processed, complete, kills = earlier, 0, False, draw(st.integers(0, 3))
    for _ in range(kills):
        if complete:  # a later attempt found the shard complete, and was killed too
            continue
        upto = draw(st.integers(committed, len(ranges)))
        processed += sum(len(r) for r in ranges[committed:upto])
        committed = upto
        if committed < len(ranges):  # killed mid-chunk: that chunk's work so far is lost
            processed += draw(st.integers(0, len(ranges[committed])))
        else:  # killed after its last commit, before or after writing the manifest
            complete = draw(st.booleans())
    final = draw(st.floats(0.001, 0.1)) if complete else draw(seconds)  # a retry that finds it complete: ~0 s
    attempts = (*(draw(seconds) for _ in range(kills)), final)
    if complete:
        outcome = ShardOutcome(name, manifest, 0, 0, 0.0, skipped=True, chunk_size=chunk_size)
    else:
        processed += sum(len(r) for r in ranges[committed:])
        reused = sum(len(r) for r in ranges[:committed])
        outcome = ShardOutcome(
            name, manifest, len(ranges), committed, attempts[-1], reused_images=reused, chunk_size=chunk_size
        )
    earlier_images = sum(len(r) for r in ranges[:earlier])
    truth_committed = images - earlier_images
    return Truth(
        RunSummary.of_shard(shard_stats(outcome, attempts)),
        processed,
        truth_committed,
        earlier_images if kills else 0,
        kills,
        chunk_size,
        attempts,
    )


@st.composite
def run_history(draw: st.DrawFn) -> list[Truth]:
    return [draw(shard_history(str(i))) for i in range(draw(st.integers(1, 4)))]


@settings(max_examples=100, deadline=None)
@given(run_history())
def test_a_local_bill_is_the_work_done_never_a_ratio_of_laptop_times(shards: list[Truth]) -> None:
    run = sum((s.summary for s in shards), RunSummary()).billed(RATE, on_cloud=False)
    processed = sum(s.processed for s in shards)
    billed_images = run.images_worked + run.images_redone
    assert billed_images >= processed, "a bill under the work done"
    assert billed_images <= processed + sum(s.slack for s in shards)
    assert run.estimated_usd == pytest.approx(billed_images * PRICE_PER_IMAGE)
    assert run.images_worked >= sum(s.committed for s in shards)
    if not any(s.kills for s in shards) and run.images_worked:  # all succeeded: exactly the calibrated price
        assert run.usd_per_million_images == pytest.approx(PRICE_PER_IMAGE * 1e6)
    if run.usd_per_million_images is not None:
        # At most every attempt going through its whole shard once: bounded by the attempts, whatever their times.
        assert run.usd_per_million_images <= PRICE_PER_IMAGE * 1e6 * (1 + max(s.kills for s in shards)) * 1.000001


@settings(max_examples=100, deadline=None)
@given(run_history())
def test_on_the_cloud_the_bill_is_every_attempts_own_seconds(shards: list[Truth]) -> None:
    run = sum((s.summary for s in shards), RunSummary()).billed(RATE, on_cloud=True)
    seconds = sum(sum(s.seconds) for s in shards)
    assert run.task_hours == pytest.approx(seconds / 3600)
    assert run.estimated_usd == pytest.approx(seconds / 3600 * RATE.usd_per_task_hour)
    assert run.attempts == sum(len(s.seconds) for s in shards)
    committed = sum(s.committed for s in shards)
    assert run.images_worked >= committed
    if run.usd_per_million_images is not None:
        assert committed == 0 or run.usd_per_million_images <= run.estimated_usd / committed * 1e6 * (1 + 1e-9)


def test_the_reported_run_killed_after_its_last_commit_costs_its_work() -> None:
    # The run the issue reported: a shard task processed all 1,206 images, was killed after writing
    # them, and its retry only found the shard complete (0.01 s). Not ≈ $121.96 per million images.
    manifest = pa.table({"key": [f"k{i}" for i in range(1206)], "status": ["ok"] * 1206, "reason": [""] * 1206})
    complete = ShardOutcome("0", manifest, 0, 0, 0.0, skipped=True)
    run = RunSummary.of_shard(shard_stats(complete, (12.75, 0.01))).billed(RATE, on_cloud=False)
    assert run.usd_per_million_images == pytest.approx(PRICE_PER_IMAGE * 1e6)
    assert math.isclose(run.task_hours, 1206 * RATE.seconds_per_image / 3600)
