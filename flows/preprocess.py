"""PreprocessFlow: resize every image and extract its edge map, sharded by hex prefix.

python flows/preprocess.py run --input DIR_OR_S3 --output DIR_OR_S3
python flows/preprocess.py run --with batch --input s3://... --output s3://...
"""

import time
import tomllib
from dataclasses import asdict

from cards import render
from fanout import plan_fanout, record_region_choice, sharding_parameters
from metaflow import Config, FlowSpec, Parameter, card, config_expr, package_sources, resources, retry, step
from spot_guard import spot_guard

from steps.config_files import config_file
from steps.io.storage import open_storage
from steps.io.validation import check_positive
from steps.preprocess.report import build_report
from steps.preprocess.shard import preprocess_shard
from steps.progress import log
from steps.sharding.plan_store import read_shard_keys
from steps.sharding.summary import ShardStats, headline, shard_stats, summarize, with_cost


# config/ travels in the code package too, so remote tasks can read it like a local run.
@package_sources("../config", suffixes=[".toml"])
class PreprocessFlow(FlowSpec):
    """Decode each image once; write a resized JPEG and a Sobel edge map; report rejects."""

    regions = Config("regions", default=config_file("regions.toml"), parser=tomllib.loads)
    prices = Config("prices", default=config_file("prices.toml"), parser=tomllib.loads)
    config = Config(
        "config",
        default=config_file("preprocess.toml"),
        parser=tomllib.loads,
    )

    input_uri = Parameter("input", required=True, help="Directory or s3://bucket/prefix of images.")
    output_uri = Parameter("output", required=True, help="Directory or s3://bucket/prefix for results.")
    size = Parameter("size", type=int, default=config_expr("config.size"), help="Longest side of resized images.")
    prefix_width, shard_size, max_shards = sharding_parameters()
    threads = Parameter(
        "threads", type=int, default=config_expr("config.threads"), help="I/O + decode threads per shard."
    )
    chunk_size = Parameter(
        "chunk-size", type=int, default=config_expr("config.chunk_size"), help="Images per committed chunk."
    )

    @step
    def start(self):
        self.started_at = time.time()
        check_positive("--size", self.size)
        plan_fanout(self)
        self.next(self.select_region)

    @card(type="blank", id="region")
    @step
    def select_region(self):
        """Rank regions x instance types for this run's data and size; record the choice."""
        record_region_choice(self)
        self.next(self.process_shard, foreach="shards")

    @resources(cpu=config.resources.cpu, memory=config.resources.memory)
    @retry(times=config.retry.times, minutes_between_retries=config.retry.minutes_between_retries)
    @step
    def process_shard(self):
        source, target = open_storage(self.input_uri, self.threads), open_storage(self.output_uri, self.threads)
        with spot_guard() as stop:
            outcome = preprocess_shard(
                name=self.input["name"],
                keys=read_shard_keys(target, self.input["keys_key"]),
                source=source,
                target=target,
                size=self.size,
                threads=self.threads,
                chunk_size=self.chunk_size,
                stop=stop,
            )
        self.shard_stats = asdict(shard_stats(outcome))  # plain data: readable in the UI
        self.next(self.join)

    @card(type="blank", id="report")
    @step
    def join(self, inputs):
        self.merge_artifacts(inputs, include=["started_at", "shard_plan", "instance_type", "spot_price"])
        stats = sorted((ShardStats(**i.shard_stats) for i in inputs), key=lambda s: s.name)
        self.summary = with_cost(summarize(stats, time.time() - self.started_at), self.instance_type, self.spot_price)
        self.rejects = [{"key": k, "reason": r} for s in stats for k, r in s.rejects]
        log(f"merged {len(stats)} shards: {self.summary['processed']} ok, {self.summary['rejected']} rejected")
        render(build_report(stats, self.summary, open_storage(self.input_uri), open_storage(self.output_uri)))
        self.next(self.end)

    @step
    def end(self):
        log(headline("Preprocessed", self.summary, self.output_uri))


if __name__ == "__main__":
    PreprocessFlow()
