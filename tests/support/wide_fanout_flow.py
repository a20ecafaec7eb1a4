"""A foreach of ``--width`` trivial shards joined by the sharded flows' own join helpers.

``start`` stores what ShardedFlow's ``start`` stores for the join
(``sharded.RUN_ARTIFACTS``, without planning any input), so the join runs ``merge_shards`` and
``finish_summary`` exactly as PreprocessFlow and InferFlow do. Measures what a wide fan-out costs
the join: it stores ``join_seconds`` and ``join_peak_rss_mb``. Run by
tests/flows/test_wide_fanout.py (marked slow: ~0.5-1 s of local start-up per task).
"""

import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "flows"))

from metaflow import FlowSpec, Parameter, step
from sharded import RUN_ARTIFACTS, ShardedFlow

from steps.cost.billing import BillingRate
from steps.stats.summary import RunSummary, ShardStats


class WideFanoutFlow(FlowSpec):
    _VERB = "Joined"  # the headline's verb, as ShardedFlow's subclasses declare it

    width = Parameter("width", type=int, default=1000)
    output_uri = Parameter("output", default="(nothing written)")  # as the sharded flows' --output

    @step
    def start(self):
        self.started_at = time.time()
        self.shard_plan = {"shards": self.width}
        self.superseded = {"shards": [], "files": 0}
        self.lease = ""  # no output, no lease: the shard tasks write nothing
        self.instance_type = "c7i.xlarge"
        rate = BillingRate("us-east-1", self.instance_type, "no GPU, 4 vCPU", 0.1, 1, 0.01, "wide fan-out test")
        self.billing_rate = rate.to_artifact()
        self.run_region = {"sentence": "Local run: no region to judge (wide fan-out test)."}
        assert {name for name in RUN_ARTIFACTS if hasattr(self, name)} == set(RUN_ARTIFACTS)
        self.shard_names = [f"{i:04x}" for i in range(self.width)]
        self.next(self.process_shard, foreach="shard_names")

    @step
    def process_shard(self):
        rejects = (("bad.jpg", "not an image"),)
        stats = ShardStats(self.input, 10, 9, 1, False, 0.5, chunks=1, reused_chunks=0, rejects=rejects)
        self.shard_stats = asdict(stats)
        self.next(self.join)

    @step
    def join(self, inputs):
        began = time.perf_counter()
        stats = ShardedFlow.merge_shards(self, inputs)  # the join PreprocessFlow and InferFlow run
        ShardedFlow.finish_summary(self, sum((RunSummary.of_shard(s) for s in stats), RunSummary()))
        self.join_seconds = time.perf_counter() - began
        self.join_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.next(self.end)

    @step
    def end(self):
        print(
            f"joined {self.summary['shards']} shards in {self.join_seconds:.1f} s, {self.join_peak_rss_mb:.0f} MB "
            f"peak; {len(self.rejects)} rejects; {self.headline}"
        )


if __name__ == "__main__":
    WideFanoutFlow()
