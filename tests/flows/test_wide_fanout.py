"""Fan-out at thousands: the sharded flows' join merges 10^4 shard results in one pass (fast), and
a real 1,000-way local foreach joins with the same helpers (slow: ~0.5-1 s of start-up a task)."""

import os
import subprocess
import sys
import tracemalloc
from dataclasses import asdict
from pathlib import Path

import pytest

from steps.stats.rejects import EXAMPLES_PER_REASON
from steps.stats.summary import RunSummary, ShardStats

REPO = Path(__file__).resolve().parents[2]


def shard(i: int) -> ShardStats:
    rejects = tuple((f"{i:04x}/bad-{j}.jpg", "not an image") for j in range(3))
    return ShardStats(f"{i:04x}", 100, 97, 3, i % 10 == 0, 60.0 + i % 7, chunks=4, reused_chunks=1, rejects=rejects)


def test_merging_ten_thousand_shard_results_is_one_small_pass() -> None:
    artifacts = [asdict(shard(i)) for i in range(10_000)]  # what the join reads, one small dict a shard
    tracemalloc.start()
    stats = sorted((ShardStats(**a) for a in artifacts), key=lambda s: s.name)
    summary = sum((RunSummary.of_shard(s) for s in stats), RunSummary())
    rejects = [{"key": k, "reason": r} for s in stats for k, r in s.rejects]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (summary.shards, summary.images, summary.rejected, summary.skipped_shards) == (10_000, 10**6, 30_000, 1_000)
    assert summary.images_this_run == 900_000 and summary.seconds == 66.0
    assert len(rejects) == 30_000 and EXAMPLES_PER_REASON >= 3
    assert peak < 64 << 20  # tens of MB at 10^4 shards: no task's artifacts beyond its stats are loaded


# Width 3 is the default run's representative (it keeps the flow in step with the sharded flows'
# join); the 1,000-way run is slow: ~0.5-1 s of start-up a task.
@pytest.mark.timeout(3000)
@pytest.mark.parametrize("width", [3, pytest.param(1000, marks=pytest.mark.slow)])
def test_a_wide_local_foreach_joins(width: int, tmp_path: Path) -> None:
    env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path), "USERNAME": "tester"}
    flow = str(REPO / "tests" / "support" / "wide_fanout_flow.py")
    args = ["--no-pylint", "run", "--width", str(width), "--max-num-splits", str(width), "--max-workers", "16"]
    process = subprocess.run(
        [sys.executable, flow, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2900, check=False
    )
    output = process.stdout + process.stderr
    # A failed task's traceback sits among 1,000 tasks' log lines: show the lines that say what failed.
    failures = [line for line in output.splitlines() if "rror" in line or "failed" in line or "Traceback" in line]
    assert process.returncode == 0, "\n".join(failures[-60:]) or output[-3000:]
    joined = [line for line in output.splitlines() if f"joined {width} shards" in line]
    assert joined, process.stdout[-3000:]
    assert f"; {width} rejects; Joined {10 * width} images in " in joined[0]
    assert f": {9 * width} ok, {width} rejected" in joined[0]
    print(joined[0])  # the join's own seconds and peak RSS, for docs/performance.md (`pytest -s`)
