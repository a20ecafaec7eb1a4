"""What ``train`` would otherwise find out only after ``start``: checked in ``start``, before any
GPU task is queued.
"""

from __future__ import annotations

from typing import Any

from steps.errors import ConfigError
from steps.models.architectures import build_architecture
from steps.training.checkpoints import load_resume_from
from steps.training.config import TrainConfig
from steps.training.trainer import load_initial_weights


def check_training(cfg: TrainConfig, dataset: dict[str, Any]) -> None:
    """A labelled set too small to hold out validation images, an unknown --architecture, and
    --initial-weights or --resume-from files that cannot be loaded are ConfigErrors here."""
    per_class = dataset["per_class"]
    # The split train makes (steps.training.determinism.split_indices): a class keeps one training image.
    held_out = sum(min(count - 1, round(count * cfg.val_fraction)) for count in per_class.values())
    if held_out == 0:
        raise ConfigError(
            f"labelled images in {cfg.input_uri}",
            per_class,
            f"enough images per class to hold out --val-fraction {cfg.val_fraction} for validation",
            "add labelled images (two or more of a class) or raise --val-fraction",
        )
    model = build_architecture(cfg.architecture, dataset["classes"])
    if cfg.initial_weights:
        load_initial_weights(model, cfg.initial_weights)
    if cfg.resume_from:
        load_resume_from(cfg.resume_from)
