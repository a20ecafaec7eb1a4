"""TrainFlow: train an image classifier on spot GPUs, checkpointing often and resuming exactly.

    python flows/train.py run --input DIR_OR_S3 [--output DIR_OR_S3] [--epochs 8]
    python flows/train.py run --with batch --input s3://b/images --output s3://b/train

The input holds images plus ``labels.csv`` (``key,label``, keys relative to the input root).
The model bundle lands at ``<output>/models/<run id>/model.pt`` (artifact ``model_uri``);
checkpoints at ``<checkpoint root>/<run id>/``. A retried task resumes from the newest one.
"""

import time
import tomllib
from pathlib import Path

from metaflow import Config, FlowSpec, Parameter, card, config_expr, current, resources, retry, step

from steps.progress import log
from steps.training import TrainConfig, build_report, check_dataset, headline, settings_from, train_run


class TrainFlow(FlowSpec):
    """Train a classifier; checkpoints make a spot loss cost minutes, not the whole run."""

    config = Config("config", default=str(Path(__file__).resolve().parent.parent / "config" / "train.toml"), parser=tomllib.loads)

    input_uri = Parameter("input", required=True, help="Directory or s3:// prefix of images with labels.csv (key,label).")
    output_uri = Parameter("output", default=config_expr("config.output"), help="Directory or s3:// prefix for the model.")
    checkpoint_root = Parameter("checkpoint-root", default="", help="Checkpoint location; default <output>/checkpoints.")
    resume_from = Parameter("resume-from", default="", help="A ckpt-*.pt (or run folder) from an earlier run to continue.")
    architecture = Parameter("architecture", default=config_expr("config.architecture"), help="small_cnn or a torchvision name.")
    initial_weights = Parameter("initial-weights", default="", help="Local state dict or model bundle to start from.")
    epochs = Parameter("epochs", type=int, default=config_expr("config.epochs"))
    batch_size = Parameter("batch-size", type=int, default=config_expr("config.batch_size"))
    learning_rate = Parameter("learning-rate", type=float, default=config_expr("config.learning_rate"))
    seed = Parameter("seed", type=int, default=config_expr("config.seed"), help="Fixes init, split, data order, augmentation.")
    image_size = Parameter("image-size", type=int, default=config_expr("config.image_size"))
    val_fraction = Parameter("val-fraction", type=float, default=config_expr("config.val_fraction"))
    checkpoint_every = Parameter("checkpoint-every", type=float, default=config_expr("config.checkpoint_every"),
                                 help="Seconds between checkpoints (0 = every batch); also at each epoch end.")
    keep_last = Parameter("keep-last", type=int, default=config_expr("config.keep_last"), help="Checkpoints kept per run.")
    threads = Parameter("threads", type=int, default=config_expr("config.threads"), help="Image read/decode threads.")

    @step
    def start(self):
        self.started_at = time.time()
        self.settings = settings_from(
            input_uri=self.input_uri, output_uri=self.output_uri, checkpoint_root=self.checkpoint_root,
            architecture=self.architecture, initial_weights=self.initial_weights, resume_from=self.resume_from,
            epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, seed=self.seed,
            image_size=self.image_size, val_fraction=self.val_fraction, checkpoint_every_s=self.checkpoint_every,
            keep_last=self.keep_last, threads=self.threads,
        )
        self.dataset = check_dataset(self.input_uri)
        log(f"{self.dataset['images']} labelled images in {self.dataset['classes']} classes: {self.dataset['per_class']}")
        self.next(self.train)

    @resources(gpu=1, cpu=config.resources.cpu, memory=config.resources.memory)
    @retry(times=config.retry.times, minutes_between_retries=config.retry.minutes_between_retries)
    @step
    def train(self):
        outcome = train_run(TrainConfig(**self.settings), run_id=current.run_id, attempt=current.retry_count)
        self.model_uri = outcome.model_uri
        self.metrics = outcome.metrics
        self.confusion = outcome.confusion
        self.rejects = outcome.rejects
        self.summary = outcome.summary
        self.next(self.end)

    @card(type="blank", id="report")
    @step
    def end(self):
        from cards import render

        render(build_report(self.summary, self.metrics, self.confusion, self.rejects))
        log(headline(self.summary))


if __name__ == "__main__":
    TrainFlow()
