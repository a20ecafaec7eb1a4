"""ShardedFlow: what PreprocessFlow and InferFlow share.

    start → process_shard (one task per shard) → join → end

``start`` plans the shards and asks the region selector where this work should run (its card);
a run cannot move itself, so the choice is for the next run, and ``run_region`` says how this
run's own region compares (steps/cost/run_region.py).

A subclass declares its own ``config`` (a Metaflow ``Config`` named "config", whose keys give the
shared Parameters their defaults, and whose ``[resources]`` are its shard step's and decide which
instance types are priced), its ``process_shard`` and ``join`` steps, ``_VERB`` for the headline,
``_SHARD_FILES`` and ``_THROUGHPUT_FLOW`` (its config/throughput.toml section); it may extend ``check_settings``.
Those constants start with ``_``: Metaflow stores every public class attribute as an artifact of
every task, and these are code, not results.
The foreach runs over shard names (a shard task's card is titled by its shard and its log lines
start with it; the Metaflow UI's timeline labels tasks by task id); everything else a shard task
needs travels as artifacts or in the shard's key file under the output, so the fan-out stays small
at any scale. A shard step works inside ``shard_task``: its storage, keys, spot guard, lease
heartbeat and live card.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from threading import Event
from typing import TYPE_CHECKING, Any

from cards import render
from clean_errors import configuration_checked
from live_card import REFRESH_S, SHARD_CARD, ShardCard
from metaflow import Config, FlowSpec, Parameter, card, config_expr, current, resources, retry, step
from parameter_types import NON_NEGATIVE, POSITIVE, POSITIVE_REAL, PREFIX_WIDTH
from spot_guard import spot_guard

from steps.config_files import config_file
from steps.cost.billing import BillingRate
from steps.cost.capacity import live_capacity
from steps.cost.placement import RegionChoice, choose_region
from steps.cost.prices import load_prices
from steps.cost.resources import StepResources
from steps.cost.run_region import judge_run_region, region_of_run
from steps.cost.throughput import image_cost
from steps.io.input_format import InputFormat, input_format
from steps.io.storage import Storage, open_storage
from steps.io.validation import check_output
from steps.output.attempts import AttemptClock, attempt_seconds, start_attempt
from steps.output.lease import acquire, heartbeat, release
from steps.output.supersede import ShardFiles, retire_superseded
from steps.planning.store import read_shard_keys
from steps.planning.tars import check_input_format
from steps.progress import ProgressCallback, log
from steps.spot import on_cloud
from steps.stats.summary import RunSummary, ShardStats, shard_stats

if TYPE_CHECKING:
    from steps.output.ledger import ShardOutcome

# What ``start`` stores for the join: every shard task carries them over.
RUN_ARTIFACTS = ("started_at", "shard_plan", "superseded", "lease", "instance_type", "billing_rate", "run_region")


@dataclass(frozen=True)
class ShardTask:
    """What a shard task works with (``ShardedFlow.shard_task``)."""

    source: Storage
    target: Storage
    keys: list[str]
    inputs: InputFormat  # images, or tars
    planned_images: int | None  # of tar inputs: the images the plan expects in this shard
    stop: Event  # set by a spot notice: commit the chunk in flight and exit
    on_progress: ProgressCallback  # the live card
    clock: AttemptClock

    def stats(self, outcome: ShardOutcome) -> ShardStats:
        """The finished shard's stats, timed over every attempt of this run."""
        return shard_stats(outcome, attempt_seconds(self.target, self.clock))


def shard_step(config: Config) -> Callable[[Callable], Any]:
    """A subclass's ``process_shard`` decorators: its live card, the resources and retries its
    ``config`` names (never @batch or @kubernetes: ``--with`` adds those), and @step."""

    def decorate(function: Callable) -> Any:
        function = retry(times=config.retry.times, minutes_between_retries=config.retry.minutes_between_retries)(
            step(function)
        )
        function = resources(gpu=config.resources.gpu, cpu=config.resources.cpu, memory=config.resources.memory)(
            function
        )
        return card(type="blank", id=SHARD_CARD, refresh_interval=REFRESH_S)(function)

    return decorate


class ShardedFlow(FlowSpec):
    _VERB = "Processed"
    _SHARD_FILES: ShardFiles  # where the subclass's shards commit chunks and derived files

    _THROUGHPUT_FLOW = "preprocess"  # the config/throughput.toml section of this flow

    regions = Config("regions", default=config_file("regions.toml"), parser=tomllib.loads)
    prices = Config("prices", default=config_file("prices.toml"), parser=tomllib.loads)
    # Per-image cost of each flow's shard step (per instance type): what --task-minutes turns into
    # images per shard, and what estimates and local bills use.
    throughput = Config("throughput", default=config_file("throughput.toml"), parser=tomllib.loads)

    input_uri = Parameter("input", required=True, help="Directory or s3://bucket/prefix of images.")
    output_uri = Parameter("output", required=True, help="Directory or s3://bucket/prefix for results.")
    prefix_width = Parameter(
        "prefix-width", type=PREFIX_WIDTH, default=0, help="Hex prefix characters per shard; 0 = auto."
    )
    shard_size = Parameter(
        "shard-size",
        type=NON_NEGATIVE,
        default=config_expr("config.shard_size"),
        help="Target images per shard (auto width); 0 = as many as one task does in --task-minutes.",
    )
    task_minutes = Parameter(
        "task-minutes",
        type=POSITIVE_REAL,
        default=config_expr("config.task_minutes"),
        help="Target minutes of work per shard task, at the per-image cost in config/throughput.toml.",
    )
    input_format = Parameter(
        "input-format",
        default="auto",
        help="images: every object is an image; webdataset: *.tar shards (each sample's jpg/jpeg/png/webp); "
        "auto: webdataset when --input holds .tar files and no images.",
    )
    manifest = Parameter(
        "manifest",
        default="",
        help="S3 Inventory manifest.json or key list (text/CSV/Parquet, local or s3://) naming the input keys.",
    )
    max_shards = Parameter(
        "max-shards",
        type=POSITIVE,
        default=config_expr("config.max_shards"),
        help="At most this many shards; more prefixes are packed into ranges (match `run --max-num-splits`).",
    )
    threads = Parameter("threads", type=POSITIVE, default=config_expr("config.threads"), help="I/O threads per shard.")
    chunk_size = Parameter(
        "chunk-size",
        type=POSITIVE,
        default=config_expr("config.chunk_size"),
        help="Images per committed chunk (a spot loss costs at most one).",
    )
    notify_url = Parameter(
        "notify", default=config_expr("config.notify_url"), help="POST the run's outcome here when it ends."
    )

    def check_settings(self) -> None:
        """Fail in ``start``, before any fan-out, on what the Parameter types cannot check (one
        ConfigError line: value, expected, fix); numbers are checked at parse time."""
        check_input_format(self.input_format)

    @card(type="blank", id="region")
    @step
    def start(self):
        # Imported here: planning reads inventories with Arrow, which no other task needs.
        from steps.planning.run_plan import prepare_run

        self.started_at = time.time()
        with configuration_checked():
            self.check_settings()
            output = check_output(self.output_uri)
            self.lease = acquire(output, f"{current.flow_name}/{current.run_id}").token
            try:
                plan = prepare_run(
                    self.input_uri,
                    self.output_uri,
                    shard_size=self.shard_size,
                    max_shards=self.max_shards,
                    prefix_width=self.prefix_width,
                    threads=self.threads,
                    task_minutes=self.task_minutes,
                    cost=image_cost(self.throughput, self._THROUGHPUT_FLOW, vcpus=self.config.resources.cpu),
                    manifest=self.manifest,
                    input_format=self.input_format,
                )
                choice = self.rank_regions(plan.input_bytes, plan.images, len(plan.shards))
                unit_of = input_format(plan.input_format).unit_of
                names = [shard.name for shard in plan.shards]
                retired = retire_superseded(output, names, self._SHARD_FILES, self.threads, unit_of)
            except BaseException:
                release(output, self.lease)
                raise
        self.superseded = {"shards": list(retired.shards), "files": retired.files}
        self.shard_plan = plan.describe()
        self.shard_names = names  # the foreach: each task's self.input; its keys are under the output
        # A tar shard's image count is known once its tars are read: the plan's estimate, for its progress.
        self.planned_images = {shard.name: shard.images for shard in plan.shards}
        log(f"planned {plan.images} images into {len(plan.shards)} shards: {plan.reason}")
        verdict = judge_run_region(choice, region_of_run())
        self.region_table = choice.region_table
        self.instance_type = choice.instance_type
        self.billing_rate = choice.billing_rate().to_artifact()
        self.run_region = verdict.to_artifact()
        log(choice.explanation)
        log(verdict.sentence)
        render(choice.report(verdict.sentence))
        self.next(self.process_shard, foreach="shard_names")

    def rank_regions(self, input_bytes: int, images: int, shards: int) -> RegionChoice:
        """Rank regions x instance types that fit the shard step's resources for this run's work."""
        resources = StepResources.from_config(self.config["resources"])
        prices = load_prices(self.prices, keep=lambda q: resources.tasks_per_instance(q.shape) > 0)
        return choose_region(
            {self.input_uri: input_bytes},
            images,
            resources=resources,
            tasks=shards,
            flow=self._THROUGHPUT_FLOW,
            throughput=self.throughput,
            regions_config=self.regions,
            prices=prices,
            capacity=live_capacity(prices, prices.instance_types, shards),
        )

    @contextmanager
    def shard_task(self) -> Iterator[ShardTask]:
        """In a shard task: its storage, keys and inputs, with this attempt recorded (billing counts
        killed ones), under the spot guard and the output lease's heartbeat, with its live card."""
        source, target = open_storage(self.input_uri, self.threads), open_storage(self.output_uri, self.threads)
        log(f"shard {self.input}: attempt {current.retry_count} of task {current.pathspec}")
        clock = start_attempt(target, current.run_id, self.input, current.retry_count)
        inputs = input_format(self.shard_plan["input_format"])
        planned = self.planned_images[self.input] if inputs.tars else None
        keys = read_shard_keys(target, self.input)
        with (
            spot_guard() as stop,
            heartbeat(target, self.lease, stop),
            ShardCard(self.input, current.retry_count) as on_progress,
        ):
            yield ShardTask(source, target, keys, inputs, planned, stop, on_progress, clock)

    def merge_shards(self, inputs) -> list[ShardStats]:
        """In a join: carry the run's artifacts over, store ``rejects``, return the shards' stats by name."""
        self.merge_artifacts(inputs, include=list(RUN_ARTIFACTS))
        stats = sorted((ShardStats(**i.shard_stats) for i in inputs), key=lambda s: s.name)
        # The first few examples of each reason per shard; every reject is in the shard manifests.
        self.rejects = [{"shard": s.name, "key": k, "reason": r} for s in stats for k, r in s.rejects]
        return stats

    def finish_summary(self, shards: RunSummary) -> RunSummary:
        """The run's summary (the shards' added up, timed over the whole run, billed), stored as
        ``summary``, and its ``headline``."""
        retired = self.superseded["files"]
        run = replace(shards, seconds=time.time() - self.started_at, stale_files=shards.stale_files + retired)
        run = run.billed(BillingRate(**self.billing_rate), on_cloud=on_cloud())
        self.summary = {**run.to_artifact(), "run_region": self.run_region["sentence"]}
        self.headline = run.headline(self._VERB, self.output_uri)
        log(f"merged {run.shards} shards: {run.processed} ok, {run.rejected} rejected; {run.cost_line()}")
        return run

    @step
    def end(self):
        release(open_storage(self.output_uri), self.lease)
        log(self.headline)
        log(self.summary["run_region"])
