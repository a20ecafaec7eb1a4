"""Shard progress snapshots: what a live card is given while a shard runs, is retried, or is skipped."""

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from steps.io.storage import open_storage
from steps.output.ledger import ChunkLedger, open_shard, run_chunked
from steps.progress import MAX_REASON_KINDS, OTHER_REASONS, Progress, ShardProgress, reason_kind

KEYS = [f"k{i:03d}" for i in range(23)]
BAD = {
    "k002": "empty file (0 bytes)",
    "k011": "not a recognised image format (31 bytes)",
    "k021": "empty file (0 bytes)",
}


class Boom(Exception):
    pass


def processor(fail_on_chunk: int | None = None):
    calls = []

    def process(chunk: Sequence[str], progress: Progress) -> pa.Table:
        if len(calls) == fail_on_chunk:
            raise Boom
        calls.append(chunk)
        for _ in chunk:
            progress.advance()
        return pa.table(
            {
                "key": list(chunk),
                "status": ["rejected" if k in BAD else "ok" for k in chunk],
                "reason": [BAD.get(k, "") for k in chunk],
            }
        )

    return process


def run(tmp_path: Path, snapshots: list[ShardProgress], fail_on_chunk: int | None = None) -> None:
    storage = open_storage(str(tmp_path))
    shard = open_shard(storage, ChunkLedger(storage, "_ledger/s0"), "s0", KEYS, 5)
    run_chunked(shard, processor(fail_on_chunk), on_progress=snapshots.append)


def test_a_retried_shard_reports_what_the_earlier_attempt_committed_and_final_counts(tmp_path: Path) -> None:
    first: list[ShardProgress] = []
    with pytest.raises(Boom):
        run(tmp_path, first, fail_on_chunk=3)
    assert (first[0].done, first[0].committed_chunks, first[0].chunks, first[0].finished) == (0, 0, 5, False)
    assert not first[-1].finished

    retry: list[ShardProgress] = []
    run(tmp_path, retry)
    resumed, final = retry[0], retry[-1]
    assert (resumed.reused_chunks, resumed.reused_images, resumed.committed_chunks, resumed.done) == (3, 15, 3, 15)
    assert resumed.rejects == (("empty file", 1), ("not a recognised image format", 1))
    assert final.finished and final.eta_seconds == 0.0
    assert (final.done, final.images, final.committed_chunks, final.reused_chunks) == (23, 23, 5, 3)
    assert final.rejects == (("empty file", 2), ("not a recognised image format", 1)) and final.rejected == 3

    rerun: list[ShardProgress] = []
    run(tmp_path, rerun)
    assert len(rerun) == 1 and rerun[0].complete_earlier and rerun[0].finished
    assert rerun[0].done == rerun[0].images == 23 and rerun[0].images_per_second == 0.0


def test_snapshots_come_no_more_often_than_the_update_interval() -> None:
    seen: list[ShardProgress] = []
    quiet = Progress("s", 1000, on_update=seen.append, update_interval_s=3600)
    for _ in range(1000):
        quiet.advance()
    assert seen == []
    quiet.finish()
    assert len(seen) == 1 and seen[0].finished and seen[0].done == 1000

    eager: list[ShardProgress] = []
    every = Progress("s", 10, on_update=eager.append, update_interval_s=0)
    for _ in range(10):
        every.advance()
    assert [s.done for s in eager] == list(range(1, 11))


def test_rate_and_eta_count_only_this_attempts_work() -> None:
    snapshot = ShardProgress(
        "s", images=100, done=40, seconds=10, chunks=10, committed_chunks=4, reused_chunks=2, reused_images=20
    )
    assert snapshot.images_per_second == 2.0
    assert snapshot.eta_seconds == 30.0
    assert ShardProgress("s", 100, 20, 5.0, 10, 2, 2, 20).eta_seconds is None  # nothing done yet this attempt


def test_reject_reasons_are_counted_by_kind_and_bounded() -> None:
    assert reason_kind("not a recognised image format (31 bytes)") == "not a recognised image format"
    assert reason_kind("output name resized/a.jpg is taken by a.png; rename one") == "output name is taken by"
    assert reason_kind("corrupt or truncated image data: broken PNG") == "corrupt or truncated image data"
    progress = Progress("s", 100)
    progress.committed([f"kind{i} (x)" for i in range(MAX_REASON_KINDS + 3)] + ["kind0"])
    kinds = progress.snapshot().rejects
    assert kinds[0] == ("kind0", 2)
    assert len(kinds) == MAX_REASON_KINDS + 1 and kinds[-1] == (OTHER_REASONS, 3)
