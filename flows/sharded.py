"""ShardedFlow: what PreprocessFlow and InferFlow share.

    start → select_region → process_shard (one task per shard) → join → end

A subclass declares its own ``config`` (a Metaflow ``Config`` named "config", whose keys give the
shared Parameters their defaults), its ``process_shard`` and ``join`` steps, and ``VERB`` for the
headline; it may extend ``check_settings`` with its own parameters. Everything a shard task needs
beyond its name travels as artifacts or in the shard's key file under the output, so the fan-out
stays small at any scale.
"""

import time
import tomllib
from dataclasses import asdict, replace

from cards import render
from metaflow import Config, FlowSpec, Parameter, card, config_expr, step

from steps.config_files import config_file
from steps.cost.placement import choose_region
from steps.cost.prices import load_prices
from steps.io.validation import check_positive
from steps.progress import log
from steps.sharding.planning import prepare_run
from steps.sharding.summary import RunSummary, ShardStats


class ShardedFlow(FlowSpec):
    VERB = "Processed"

    regions = Config("regions", default=config_file("regions.toml"), parser=tomllib.loads)
    prices = Config("prices", default=config_file("prices.toml"), parser=tomllib.loads)

    input_uri = Parameter("input", required=True, help="Directory or s3://bucket/prefix of images.")
    output_uri = Parameter("output", required=True, help="Directory or s3://bucket/prefix for results.")
    prefix_width = Parameter("prefix-width", type=int, default=0, help="Hex prefix characters per shard; 0 = auto.")
    shard_size = Parameter(
        "shard-size", type=int, default=config_expr("config.shard_size"), help="Target images per shard (auto width)."
    )
    max_shards = Parameter(
        "max-shards",
        type=int,
        default=config_expr("config.max_shards"),
        help="At most this many shards; more prefixes are packed into ranges (match `run --max-num-splits`).",
    )
    threads = Parameter("threads", type=int, default=config_expr("config.threads"), help="I/O threads per shard.")
    chunk_size = Parameter(
        "chunk-size",
        type=int,
        default=config_expr("config.chunk_size"),
        help="Images per committed chunk (a spot loss costs at most one).",
    )
    notify_url = Parameter(
        "notify", default=config_expr("config.notify_url"), help="POST the run's outcome here when it ends."
    )

    def check_settings(self) -> None:
        """Fail in ``start``, before any fan-out, on a bad value (one line: value, expected, fix)."""
        for name in ("--threads", "--chunk-size"):
            check_positive(name, getattr(self, name[2:].replace("-", "_")))

    @step
    def start(self):
        self.started_at = time.time()
        self.check_settings()
        plan = prepare_run(
            self.input_uri,
            self.output_uri,
            shard_size=self.shard_size,
            max_shards=self.max_shards,
            prefix_width=self.prefix_width,
            threads=self.threads,
        )
        self.shard_plan = plan.describe()
        # Plain dicts, not ShardRef: the Metaflow UI and notebooks can show them without this package.
        self.shards = [asdict(ref) for ref in plan.shards]
        log(f"planned {plan.images} images into {len(plan.shards)} shards: {plan.reason}")
        self.next(self.select_region)

    @card(type="blank", id="region")
    @step
    def select_region(self):
        """Rank regions x instance types for this run's data and size; record the choice."""
        choice = choose_region(
            {self.input_uri: self.shard_plan["input_bytes"]},
            self.shard_plan["images"],
            regions_config=self.regions,
            prices=load_prices(self.prices),
        )
        self.region_table = choice.region_table
        self.region, self.instance_type, self.batch_queue = choice.region, choice.instance_type, choice.batch_queue
        self.spot_price = choice.region_table[0]["spot_price"]
        log(choice.explanation)
        render(choice.report())
        self.next(self.process_shard, foreach="shards")

    def merge_shards(self, inputs) -> list[ShardStats]:
        """In a join: carry the run's artifacts over, store ``rejects``, return the shards' stats by name."""
        self.merge_artifacts(inputs, include=["started_at", "shard_plan", "instance_type", "spot_price"])
        stats = sorted((ShardStats(**i.shard_stats) for i in inputs), key=lambda s: s.name)
        self.rejects = [{"key": k, "reason": r} for s in stats for k, r in s.rejects]
        return stats

    def finish_summary(self, shards: RunSummary) -> RunSummary:
        """The run's summary (the shards' added up, timed over the whole run, priced), stored as ``summary``."""
        run = replace(shards, seconds=time.time() - self.started_at).priced(self.instance_type, self.spot_price)
        self.summary = run.to_artifact()
        log(f"merged {run.shards} shards: {run.processed} ok, {run.rejected} rejected")
        return run

    @step
    def end(self):
        self.headline = RunSummary.from_artifact(self.summary).headline(self.VERB, self.output_uri)
        log(self.headline)
