"""TrainFlow: train an image classifier on spot GPUs, checkpointing often and resuming exactly.

    python flows/train.py run --input DIR_OR_S3 [--output DIR_OR_S3] [--epochs 8]
    python flows/train.py run --with batch --input s3://b/images --output s3://b/train
    python flows/train.py run --input DIR --processes 2      # two data-parallel ranks (gloo on CPU)
    python flows/train.py run --input DIR --nodes 2 --processes 2   # a gang of 2 nodes x 2 ranks

The input holds images plus ``labels.csv`` (``key,label``, keys relative to the input root), as
``spot-batch sample-data DIR`` writes. The model bundle lands at
``<output>/models/<run id>/model.pt`` (artifact ``model_uri``), checkpoints at
``<checkpoint root>/<run id>/``; a retried task resumes from the newest complete one.
With several GPUs (``[resources] gpu`` in config/train.toml) the train step runs one
data-parallel rank per GPU (``--processes`` overrides; see steps/training/distributed.py).
``--nodes K`` makes the train step a Metaflow ``@parallel`` gang of K such instances (an AWS Batch
multi-node parallel job, a Kubernetes JobSet); a join step follows it (steps/training/nodes.py).
"""

import os
import tomllib

from cards import render
from clean_errors import configuration_checked
from live_card import REFRESH_S
from metaflow import (
    Config,
    FlowSpec,
    Parameter,
    card,
    config_expr,
    current,
    package_sources,
    parallel,
    resources,
    retry,
    step,
)
from notifying import notify_on_exit
from parameter_types import FRACTION, NON_NEGATIVE, NON_NEGATIVE_REAL, POSITIVE, POSITIVE_REAL
from spot_guard import spot_guard
from train_card import TRAIN_CARD, TrainCard

from steps.config_files import config_file
from steps.progress import log
from steps.training.config import TRAIN_PARAMETERS, TrainConfig, settings_from
from steps.training.gang_queue import check_gang_queue
from steps.training.report import build_report, headline


# config/ travels in the code package too, so remote tasks can read it like a local run.
@package_sources("../config", suffixes=[".toml"])
@notify_on_exit
class TrainFlow(FlowSpec):
    """Train a classifier; checkpoints make a spot loss cost minutes of work, not the run."""

    config = Config("config", default=config_file("train.toml"), parser=tomllib.loads)

    # Attribute names match steps.training.TrainConfig's fields (start passes them by name).
    input_uri = Parameter("input", required=True, help="Images + labels.csv (key,label): dir or s3://.")
    output_uri = Parameter("output", default=config_expr("config.output"), help="Directory or s3:// prefix for model.")
    notify_url = Parameter(
        "notify", default=config_expr("config.notify_url"), help="POST the run's outcome here when it ends."
    )
    checkpoint_root = Parameter("checkpoint-root", default="", help="Default <output>/checkpoints.")
    resume_from = Parameter("resume-from", default="", help="ckpt-*.pt or run folder to continue.")
    architecture = Parameter("architecture", default=config_expr("config.architecture"), help="small_cnn, resnet18...")
    initial_weights = Parameter("initial-weights", default="", help="State dict or bundle (local/s3://) to start from.")
    epochs = Parameter("epochs", type=POSITIVE, default=config_expr("config.epochs"))
    batch_size = Parameter("batch-size", type=POSITIVE, default=config_expr("config.batch_size"))
    learning_rate = Parameter("learning-rate", type=POSITIVE_REAL, default=config_expr("config.learning_rate"))
    seed = Parameter("seed", type=int, default=config_expr("config.seed"), help="Fixes init/split/order/augment.")
    image_size = Parameter(
        "image-size", type=POSITIVE, default=config_expr("config.image_size"), help="Model input side."
    )
    val_fraction = Parameter(
        "val-fraction",
        type=FRACTION,
        default=config_expr("config.val_fraction"),
    )
    checkpoint_every = Parameter(
        "checkpoint-every",
        type=NON_NEGATIVE_REAL,
        default=config_expr("config.checkpoint_every"),
        help="Seconds between checkpoints (0 = every batch); also one at each epoch end.",
    )
    keep_last = Parameter("keep-last", type=POSITIVE, default=config_expr("config.keep_last"), help="Checkpoints kept.")
    threads = Parameter(
        "threads", type=POSITIVE, default=config_expr("config.threads"), help="Image read/decode threads."
    )
    processes = Parameter(
        "processes",
        type=NON_NEGATIVE,
        default=config_expr("config.processes"),
        help="Data-parallel ranks per node (0 = one per visible GPU, else 1); --batch-size is split across all.",
    )
    nodes = Parameter(
        "nodes",
        type=POSITIVE,
        default=1,
        help="Instances training together (a @parallel gang: Batch multi-node job, Kubernetes JobSet).",
    )

    @step
    def start(self):
        # torch loads in the steps that use it, not with the flow file (Metaflow imports it for every
        # task and every card refresh).
        from steps.training.data import check_dataset
        from steps.training.preflight import check_training

        with configuration_checked():
            self.settings = settings_from({name: getattr(self, name) for name in TRAIN_PARAMETERS})
            self.dataset = check_dataset(self.input_uri)
            check_training(TrainConfig(**self.settings), self.dataset)
            check_gang_queue(self.nodes, os.environ)
        log(f"{self.dataset['images']} labelled images, {self.dataset['classes']} classes: {self.dataset['per_class']}")
        self.next(self.train, num_parallel=self.nodes)

    @card(type="blank", id=TRAIN_CARD, refresh_interval=REFRESH_S)
    @resources(
        gpu=config.resources.gpu,
        cpu=config.resources.cpu,
        memory=config.resources.memory,
        shared_memory=config.resources.shared_memory,
    )
    @retry(times=config.retry.times, minutes_between_retries=config.retry.minutes_between_retries)
    @parallel
    @step
    def train(self):
        from steps.training.nodes import Gang, gang_port
        from steps.training.run import train_run

        node = current.parallel
        gang = Gang(
            node.node_index,
            node.num_nodes,
            node.main_ip,
            gang_port(current.run_id, current.retry_count, os.environ.get("MF_MASTER_PORT")),
        )
        with spot_guard() as stop, TrainCard(current.retry_count) as on_event:
            outcome = train_run(
                TrainConfig(**self.settings),
                run_id=current.run_id,
                attempt=current.retry_count,
                stop=stop,
                on_event=on_event,
                gang=gang,
            )
        self.node_index = node.node_index
        if outcome is not None:  # node 0's: the other nodes trained the same weights, saved nothing
            self.model_uri = outcome.model_uri
            self.metrics = outcome.metrics
            self.confusion = outcome.confusion
            self.rejects = outcome.rejects
            self.summary = outcome.summary
        self.next(self.join)

    @step
    def join(self, inputs):
        """After the gang: node 0's model and metrics go on."""
        self.merge_artifacts(inputs, exclude=["node_index"])
        self.next(self.end)

    @card(type="blank", id="report")
    @step
    def end(self):
        render(build_report(self.summary, self.metrics, self.confusion, self.rejects))
        self.headline = headline(self.summary)
        log(self.headline)


if __name__ == "__main__":
    TrainFlow()
