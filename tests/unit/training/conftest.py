"""A small labelled set and settings that train in seconds on a CPU, shared by the training tests."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from steps.training.config import TrainConfig
from steps.training.data import Dataset, load_dataset

TINY_IMAGE = 32


@pytest.fixture(scope="session")
def tiny_data(sample_dir: Path) -> Dataset:
    return load_dataset(str(sample_dir), image_size=TINY_IMAGE, threads=2)


def tiny_config(sample_dir: Path, root: Path, **changes: object) -> TrainConfig:
    """Two epochs of batches of 8 on ``tiny_data``, outputs under ``root``; ``changes`` override."""
    config = TrainConfig(
        input_uri=str(sample_dir),
        output_uri=str(root / "out"),
        checkpoint_root=str(root / "ckpt"),
        epochs=2,
        batch_size=8,
        image_size=TINY_IMAGE,
        checkpoint_every=3600,
        threads=2,
    )
    return replace(config, **changes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
