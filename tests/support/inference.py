"""InferFlow in tests: the arguments of a small real run, and a loaded InferTask run over a local
directory in-process, as one shard task would."""

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


# One shard in nine parts of 6: a kill lands while parts are still to come.
SMALL_CHUNKS = ("--shard-size", "1000", "--chunk-size", "6", "--batch-size", "6", "--top-k", "3", "--workers", "2")


def infer_args(source: object, output: object, model: str, *extra: str) -> tuple[str, ...]:
    """InferFlow's arguments for ``source`` → ``output`` with ``model``, one shard of small chunks."""
    return ("--input", str(source), "--output", str(output), "--model", model, *SMALL_CHUNKS, *extra)
