"""Run a loaded InferTask over a local directory in-process, as one shard task would."""

from __future__ import annotations

from pathlib import Path

from steps.inference.shard import infer_shard
from steps.inference.tasks import InferTask
from steps.io.local_storage import LocalStorage
from steps.planning.inputs import list_inputs


def infer_directory(source_dir: Path, out: Path, task: InferTask) -> None:
    source = LocalStorage(source_dir)
    infer_shard(
        name="all",
        keys=list_inputs(source),
        source=source,
        target=LocalStorage(out),
        task=task,
        batch_size=16,
        chunk_size=64,
        threads=2,
        workers=2,
    )
