"""InferFlow: classify every image with a trained model, sharded, batched, exactly once.

    python flows/infer.py run --input DIR_OR_S3 --output DIR_OR_S3 [--model latest]
    python flows/infer.py run --with batch --input s3://b/images --output s3://b/predictions

``--model``: ``latest`` (the newest successful TrainFlow run's ``model_uri``), a TrainFlow model
URI, a TorchScript file, or ``torchvision:<arch>:<local weights file>`` (see
steps/models/loading.py). Output: ``<output>/predictions/<shard>/part-NNNNN.parquet``, read with
``spot-batch predictions OUTPUT``. A retried shard skips its committed parts; a rerun into
the same output skips finished shards.
"""

import tomllib
from dataclasses import asdict

from cards import render
from live_card import REFRESH_S, SHARD_CARD, ShardCard
from metaflow import Config, Parameter, card, config_expr, current, package_sources, resources, retry, step
from notifying import notify_on_exit
from parameter_types import POSITIVE
from sharded import ShardedFlow

from steps.config_files import config_file
from steps.errors import ConfigError
from steps.inference.pipeline import DECODE_CHOICES
from steps.inference.predictions import Scores, load_labels
from steps.inference.report import Sample, build_report, shard_scores
from steps.inference.shard import INFER_FILES, infer_shard
from steps.inference.summary import InferenceStats
from steps.io.storage import open_storage
from steps.io.validation import check_names
from steps.models.loading import MODEL_FORMS, class_names_for, load_model
from steps.output.attempts import attempt_seconds
from steps.progress import log
from steps.stats.summary import RunSummary, shard_stats

LATEST = "latest"


def latest_model_uri() -> str:
    """``model_uri`` of the newest successful TrainFlow run in the current Metaflow namespace."""
    from metaflow import Flow, get_namespace
    from metaflow.exception import MetaflowNotFound

    try:
        run = Flow("TrainFlow").latest_successful_run
    except MetaflowNotFound:
        run = None
    if run is None or "model_uri" not in run.data:
        raise ConfigError(
            "--model",
            LATEST,
            f"a successful TrainFlow run with a model_uri in namespace {get_namespace()}",
            f"train one with `python flows/train.py run --input DIR` (same working directory), or pass --model "
            f"{MODEL_FORMS}",
        )
    log(f"--model latest: TrainFlow/{run.id} → {run.data.model_uri}")
    return run.data.model_uri


# config/ travels in the code package too, so remote tasks can read it like a local run.
@package_sources("../config", suffixes=[".toml"])
@notify_on_exit
class InferFlow(ShardedFlow):
    """Batched inference on spot GPUs: one Parquet row per image, each chunk committed once."""

    _VERB = "Predicted"
    _THROUGHPUT_FLOW = "infer"
    _SHARD_FILES = INFER_FILES

    config = Config("config", default=config_file("infer.toml"), parser=tomllib.loads)

    model_spec = Parameter("model", default=config_expr("config.model"), help=f"latest, or {MODEL_FORMS}.")
    batch_size = Parameter(
        "batch-size", type=POSITIVE, default=config_expr("config.batch_size"), help="Images per forward pass."
    )
    top_k = Parameter(
        "top-k", type=POSITIVE, default=config_expr("config.top_k"), help="Labels and scores kept per image."
    )
    workers = Parameter(
        "workers",
        type=POSITIVE,
        default=config_expr("config.workers"),
        help="Decode/resize threads per shard (match the task's vCPUs).",
    )
    prefetch = Parameter(
        "prefetch",
        type=POSITIVE,
        default=config_expr("config.prefetch_batches"),
        help="Ready batches queued ahead of the model.",
    )
    decode = Parameter(
        "decode",
        default=config_expr("config.decode"),
        help="cpu: Pillow on CPU threads; gpu: batched decode_jpeg on the model's device; auto: gpu with CUDA.",
    )

    def check_settings(self) -> None:
        """Also loads the model once, so a bad ``--model`` fails here, before any fan-out."""
        super().check_settings()
        check_names("--decode", [self.decode], DECODE_CHOICES, "a decoder: cpu, gpu or auto", "--decode")
        self.model_uri = latest_model_uri() if self.model_spec == LATEST else self.model_spec
        loaded = load_model(self.model_uri)
        loaded.class_names = class_names_for(loaded)
        self.model = loaded.identity()
        log(f"model {self.model_uri}: {loaded.kind} {loaded.architecture}, {len(loaded.class_names)} classes")

    @card(type="blank", id=SHARD_CARD, refresh_interval=REFRESH_S)
    @resources(gpu=config.resources.gpu, cpu=config.resources.cpu, memory=config.resources.memory)
    @retry(times=config.retry.times, minutes_between_retries=config.retry.minutes_between_retries)
    @step
    def process_shard(self):
        source, target = open_storage(self.input_uri, self.threads), open_storage(self.output_uri, self.threads)
        attempt = self.begin_attempt(target)
        with self.writing_output(target) as stop, ShardCard(self.input, current.retry_count) as on_progress:
            result = infer_shard(
                name=self.input,
                keys=self.shard_keys(target),
                source=source,
                target=target,
                model=load_model(self.model_uri),
                batch_size=self.batch_size,
                chunk_size=self.chunk_size,
                top_k=self.top_k,
                threads=self.threads,
                workers=self.workers,
                prefetch_batches=self.prefetch,
                decode=self.decode,
                stop=stop,
                on_progress=on_progress,
            )
        stats = shard_stats(result.outcome, attempt_seconds(target, attempt))
        scores, samples = shard_scores(result.outcome.manifest, load_labels(source), stats.samples)
        # Plain data, not project classes: readable in the Metaflow UI and notebooks.
        self.shard_stats, self.scores, self.samples = asdict(stats), scores.to_dict(), [asdict(s) for s in samples]
        self.model_seconds = result.model_seconds
        self.device = result.device
        self.next(self.join)

    @card(type="blank", id="report")
    @step
    def join(self, inputs):
        stats = self.merge_shards(inputs)
        self.merge_artifacts(inputs, include=["model", "model_uri"])
        done = sorted(inputs, key=lambda i: i.shard_stats["name"])
        scores = [Scores.from_dict(i.scores) for i in done]
        summary = self.finish_summary(
            sum(
                (
                    RunSummary.of_shard(
                        s, InferenceStats.of_shard(s, i.device, i.model_seconds, score.labelled, score.correct)
                    )
                    for s, i, score in zip(stats, done, scores, strict=True)
                ),
                RunSummary(),
            )
        )
        render(
            build_report(
                stats,
                summary,
                model=self.model,
                scores=sum(scores, Scores()),
                samples=[Sample(**x) for i in done for x in i.samples],
                source=open_storage(self.input_uri),
                output=self.output_uri,
            )
        )
        self.next(self.end)


if __name__ == "__main__":
    InferFlow()
