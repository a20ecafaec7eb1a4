"""A foreach of ``--width`` trivial shards joined by the sharded flows' own join helpers.

Measures what a wide fan-out costs the join: it stores ``join_seconds`` and ``join_peak_rss_mb``.
Run by tests/flows/test_wide_fanout.py (marked slow: ~0.5-1 s of local start-up per task).
"""

import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "flows"))

from metaflow import FlowSpec, Parameter, step
from sharded import ShardedFlow

from steps.stats.summary import RunSummary, ShardStats


class WideFanoutFlow(FlowSpec):
    width = Parameter("width", type=int, default=1000)

    @step
    def start(self):
        self.started_at = time.time()
        self.shard_plan = {"shards": self.width}
        self.instance_type, self.spot_price = "local", 0.0
        self.shards = [
            {"name": f"{i:04x}", "images": 10, "keys_key": f"_plan/{i:04x}.jsonl"} for i in range(self.width)
        ]
        self.next(self.process_shard, foreach="shards")

    @step
    def process_shard(self):
        rejects = (("bad.jpg", "not an image"),)
        stats = ShardStats(self.input["name"], 10, 9, 1, False, 0.5, chunks=1, reused_chunks=0, rejects=rejects)
        self.shard_stats = asdict(stats)
        self.next(self.join)

    @step
    def join(self, inputs):
        began = time.perf_counter()
        stats = ShardedFlow.merge_shards(self, inputs)  # the join PreprocessFlow and InferFlow run
        self.summary = sum((RunSummary.of_shard(s) for s in stats), RunSummary()).to_artifact()
        self.join_seconds = time.perf_counter() - began
        self.join_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.next(self.end)

    @step
    def end(self):
        print(
            f"joined {self.summary['shards']} shards in {self.join_seconds:.1f} s, {self.join_peak_rss_mb:.0f} MB peak"
        )


if __name__ == "__main__":
    WideFanoutFlow()
