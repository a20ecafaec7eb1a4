"""TrainFlow's settings: one frozen value, validated before any training."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from steps.errors import ConfigError
from steps.io.storage import is_s3, join_uri
from steps.io.validation import check_output, check_positive
from steps.output.layout import CHECKPOINTS_DIR


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored by the flow as the ``settings`` artifact."""

    input_uri: str
    output_uri: str
    checkpoint_root: str
    architecture: str = "small_cnn"
    initial_weights: str = ""
    resume_from: str = ""
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 0.003
    seed: int = 0
    image_size: int = 64
    val_fraction: float = 0.2
    checkpoint_every: float = 600.0
    keep_last: int = 3
    threads: int = 8
    processes: int = 0  # data-parallel ranks per node; 0 = one per visible GPU, else 1
    nodes: int = 1  # instances in the train step's @parallel gang

    def check(self) -> None:
        for name, value in (
            ("--epochs", self.epochs),
            ("--batch-size", self.batch_size),
            ("--image-size", self.image_size),
            ("--keep-last", self.keep_last),
            ("--threads", self.threads),
        ):
            check_positive(name, value)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                "--val-fraction", self.val_fraction, "a fraction between 0 and 1", "pass e.g. --val-fraction 0.2"
            )
        if self.learning_rate <= 0:
            raise ConfigError(
                "--learning-rate", self.learning_rate, "a positive number", "pass e.g. --learning-rate 0.003"
            )
        if self.checkpoint_every < 0:
            raise ConfigError(
                "--checkpoint-every", self.checkpoint_every, "seconds >= 0 (0 = every batch)", "pass e.g. 600"
            )
        if self.processes < 0:
            raise ConfigError("--processes", self.processes, "0 (one per GPU) or a number of ranks", "pass e.g. 2")
        if self.nodes < 1:
            raise ConfigError("--nodes", self.nodes, "1 or more instances", "pass --nodes 1 (one instance) or more")
        check_images_per_rank(self.processes * self.nodes, self.batch_size)
        if self.initial_weights and not is_s3(self.initial_weights) and not os.path.isfile(self.initial_weights):
            raise ConfigError(
                "--initial-weights", self.initial_weights, "an existing weights file (local or s3://)", "check the path"
            )


def check_images_per_rank(world_size: int, batch_size: int) -> None:
    """Each rank trains on its share of the global batch; BatchNorm needs at least 2 images."""
    if world_size > 1 and batch_size < 2 * world_size:
        raise ConfigError(
            "--batch-size",
            batch_size,
            f"at least 2 images per rank for {world_size} ranks (the batch is split across them)",
            f"pass --batch-size {2 * world_size} or more",
        )


# The flow's parameter attributes carry these names, so the flow passes them through by name.
TRAIN_PARAMETERS = tuple(f.name for f in fields(TrainConfig))


def settings_from(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Validated settings (the flow's ``settings`` artifact) from the flow's parameter values,
    named like TrainConfig's fields; ``checkpoint_root`` defaults to ``<output>/checkpoints``."""
    values = {name: parameters[name] for name in TRAIN_PARAMETERS}
    values["checkpoint_root"] = values["checkpoint_root"] or join_uri(values["output_uri"], CHECKPOINTS_DIR)
    cfg = TrainConfig(**values)
    cfg.check()
    check_output(cfg.output_uri)
    return asdict(cfg)
