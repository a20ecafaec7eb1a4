"""InferFlow: run a model over every image (classify, embed, detect or your own), sharded, batched, exactly once.

    python flows/infer.py run --input DIR_OR_S3 --output DIR_OR_S3 [--model latest]
    python flows/infer.py run --with batch --input s3://b/images --output s3://b/predictions

``--model``: ``latest`` (the newest successful TrainFlow run's ``model_uri``), a TrainFlow model
URI, a TorchScript file, ``torchvision:<arch>:<local weights file>`` (see
steps/models/loading.py), ``hf:<checkpoint dir>``, ``timm:<arch>:<checkpoint>``,
``open_clip:<arch>:<checkpoint>`` or your own ``python:<file.py>:<factory>``.
``--task``: classify, embed or detect (steps/inference/tasks.py). Output:
``<output>/predictions/<shard>/part-NNNNN.parquet``, read with ``spot-batch predictions OUTPUT``.
A retried shard skips its committed parts; a rerun into the same output skips finished shards.
"""

import tomllib
from dataclasses import asdict

from cards import render
from metaflow import Config, Parameter, card, config_expr, package_sources, step
from notifying import notify_on_exit
from parameter_types import POSITIVE
from sharded import ShardedFlow, shard_step

from steps.config_files import config_file
from steps.errors import ConfigError
from steps.inference.files import INFER_FILES
from steps.io.input_format import input_format
from steps.io.storage import open_storage
from steps.io.validation import check_names
from steps.models.forms import MODEL_FORMS
from steps.progress import log
from steps.stats.summary import RunSummary

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

    model_spec = Parameter(
        "model",
        default=config_expr("config.model"),
        help=f"latest, or {MODEL_FORMS} (your own model: README, Bring your own model).",
    )
    task = Parameter(
        "task",
        default=config_expr("config.task"),
        help="classify (top-k labels), embed (pooled features) or detect (boxes); python: models return their own.",
    )
    min_score = Parameter(
        "min-score", type=float, default=config_expr("config.min_score"), help="detect: boxes scored below are dropped."
    )
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
        # torch, pandas and the model code load in the steps that use them, not with the flow file.
        from steps.inference.pipeline import DECODE_CHOICES
        from steps.inference.tasks import describe_task

        super().check_settings()
        check_names("--decode", [self.decode], DECODE_CHOICES, "a decoder: cpu, gpu or auto", "--decode")
        self.model_uri = latest_model_uri() if self.model_spec == LATEST else self.model_spec

        self.outputs = None  # the output columns start's probe found (not for classify)
        task = self.load_task()
        self.model, self.outputs = describe_task(task)
        log(f"model {self.model_uri}: {self.model['type']} {self.model['architecture']}; {self.model['outputs']}")

    def load_task(self, device=None):
        """The task this run does (``steps.inference.tasks``), loaded on the CPU or ``device``."""
        from steps.inference.tasks import load_task

        return load_task(
            self.model_uri, self.task, top_k=self.top_k, min_score=self.min_score, columns=self.outputs, device=device
        )

    @shard_step(config)
    def process_shard(self):
        from steps.inference.pipeline import first_device
        from steps.inference.predictions import Scores, load_labels
        from steps.inference.report import shard_scores
        from steps.inference.shard import infer_shard

        with self.shard_task() as shard:
            result = infer_shard(
                name=self.input,
                keys=shard.keys,
                source=shard.source,
                target=shard.target,
                task=self.load_task(first_device()),
                batch_size=self.batch_size,
                chunk_size=self.chunk_size,
                threads=self.threads,
                workers=self.workers,
                prefetch_batches=self.prefetch,
                decode=self.decode,
                stop=shard.stop,
                on_progress=shard.on_progress,
                inputs=shard.inputs,
                images=shard.planned_images,
            )
        stats = shard.stats(result.outcome)
        if self.outputs is None:  # classify
            scores, samples = shard_scores(result.outcome.manifest, load_labels(shard.source), stats.samples)
            self.digest = None
        else:
            from steps.inference.task_report import DIGEST_COLUMNS, shard_digest

            scores, samples = Scores(), []
            parts = INFER_FILES.ledger(shard.target, self.input).tables(DIGEST_COLUMNS)
            self.digest = shard_digest(self.task, (part for _, part in parts))  # small: the card's samples
        # Plain data, not project classes: readable in the Metaflow UI and notebooks.
        self.shard_stats, self.scores, self.samples = asdict(stats), scores.to_dict(), [asdict(s) for s in samples]
        self.model_seconds = result.model_seconds
        self.device = result.device
        self.next(self.join)

    def task_sections(self, digests: list[dict]) -> list:
        from steps.inference.task_report import task_sections

        return task_sections(digests, self.input_rows())

    def input_rows(self):
        """Reads one output row's input image by its key (an object, or a member of a tar)."""
        return input_format(self.shard_plan["input_format"]).row_reader(open_storage(self.input_uri))

    @card(type="blank", id="report")
    @step
    def join(self, inputs):
        from steps.inference.predictions import Scores
        from steps.inference.report import Sample, build_report
        from steps.inference.summary import InferenceStats

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
                source=self.input_rows(),
                output=self.output_uri,
                task_sections=self.task_sections([i.digest for i in done if i.digest]),
            )
        )
        self.next(self.end)


if __name__ == "__main__":
    InferFlow()
